package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"time"
)

// GroupSpec seeds an Auto Scaling group with its own launch template.
type GroupSpec struct {
	Name         string   `json:"name"`
	Min          int      `json:"min"`
	Max          int      `json:"max"`
	Desired      int      `json:"desired"`
	InstanceType string   `json:"instanceType,omitempty"` // default m5.large
	ImageID      string   `json:"imageId,omitempty"`      // default ami-0123456789abcdef0
	Zones        []string `json:"zones,omitempty"`        // default: all zones of the region
	// Overrides, when set, make it a mixed-instances group with these instance types.
	Overrides []string `json:"overrides,omitempty"`
	// Tags of the group (not propagated to instances).
	Tags map[string]string `json:"tags,omitempty"`
}

// CreateGroup creates a launch template "<name>-lt" and the group, as a user would
// with CreateLaunchTemplate and CreateAutoScalingGroup.
func (s *Server) CreateGroup(spec GroupSpec) error {
	if spec.InstanceType == "" {
		spec.InstanceType = "m5.large"
	}
	if spec.ImageID == "" {
		spec.ImageID = "ami-0123456789abcdef0"
	}
	if len(spec.Zones) == 0 {
		spec.Zones = s.opts.Zones
	}
	s.mu.Lock()
	defer func() {
		_ = s.unlockAndApply(context.Background())
		s.poke()
	}()
	lt := url.Values{"LaunchTemplateName": {spec.Name + "-lt"}, "LaunchTemplateData.ImageId": {spec.ImageID}, "LaunchTemplateData.InstanceType": {spec.InstanceType}}
	if _, err := s.createLaunchTemplate(newForm(lt)); err != nil {
		return fmt.Errorf("create launch template for group %s: %w", spec.Name, err)
	}
	g := url.Values{
		"AutoScalingGroupName": {spec.Name},
		"MinSize":              {strconv.Itoa(spec.Min)},
		"MaxSize":              {strconv.Itoa(spec.Max)},
		"DesiredCapacity":      {strconv.Itoa(spec.Desired)},
	}
	if len(spec.Overrides) > 0 {
		g.Set("MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateName", spec.Name+"-lt")
		g.Set("MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.Version", "$Latest")
		for k, t := range spec.Overrides {
			g.Set(fmt.Sprintf("MixedInstancesPolicy.LaunchTemplate.Overrides.member.%d.InstanceType", k+1), t)
		}
	} else {
		g.Set("LaunchTemplate.LaunchTemplateName", spec.Name+"-lt")
		g.Set("LaunchTemplate.Version", "$Latest")
	}
	for k, z := range spec.Zones {
		g.Set(fmt.Sprintf("AvailabilityZones.member.%d", k+1), z)
	}
	keys := make([]string, 0, len(spec.Tags))
	for k := range spec.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		g.Set(fmt.Sprintf("Tags.member.%d.Key", i+1), k)
		g.Set(fmt.Sprintf("Tags.member.%d.Value", i+1), spec.Tags[k])
	}
	if _, err := s.createAutoScalingGroup(newForm(g)); err != nil {
		return fmt.Errorf("create group %s: %w", spec.Name, err)
	}
	s.advanceLocked()
	return nil
}

// InstanceStatus is the AWS view of one instance.
type InstanceStatus struct {
	ID           string    `json:"id"`
	Group        string    `json:"group,omitempty"`
	AZ           string    `json:"az"`
	InstanceType string    `json:"instanceType"`
	State        string    `json:"state"`               // EC2 state
	Lifecycle    string    `json:"lifecycle,omitempty"` // Auto Scaling lifecycle state
	Health       string    `json:"health,omitempty"`
	NodeName     string    `json:"nodeName"`
	ProviderID   string    `json:"providerID"`
	LTVersion    string    `json:"launchTemplateVersion,omitempty"`
	LaunchTime   time.Time `json:"launchTime"`
	NeverReady   bool      `json:"neverReady,omitempty"`
}

// GroupStatus is the AWS view of one group.
type GroupStatus struct {
	Name       string           `json:"name"`
	Min        int              `json:"min"`
	Max        int              `json:"max"`
	Desired    int              `json:"desired"`
	InService  int              `json:"inService"`
	Suspended  []string         `json:"suspended,omitempty"`
	Instances  []InstanceStatus `json:"instances"`
	Activities int              `json:"activities"`
}

// Status is the whole simulated account.
type Status struct {
	Region     string           `json:"region"`
	Endpoint   string           `json:"endpoint"`
	Groups     []GroupStatus    `json:"groups"`
	Standalone []InstanceStatus `json:"standalone"` // not in a group (detached, or left)
	Faults     Faults           `json:"faults"`
	Calls      map[string]int   `json:"calls"`
}

// Status returns the current AWS view.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer func() { _ = s.unlockAndApply(context.Background()) }()
	s.advanceLocked()
	st := Status{Region: s.opts.Region, Faults: s.faults, Calls: map[string]int{}}
	if s.listener != nil {
		st.Endpoint = s.URL()
	}
	for k, v := range s.calls {
		st.Calls[k] = v
	}
	for _, g := range s.sortedGroupsLocked() {
		gs := GroupStatus{Name: g.Name, Min: g.Min, Max: g.Max, Desired: g.Desired, Activities: len(g.Activities)}
		for p := range g.Suspended {
			gs.Suspended = append(gs.Suspended, p)
		}
		sort.Strings(gs.Suspended)
		for _, id := range g.Instances {
			if inst := s.instances[id]; inst != nil {
				gs.Instances = append(gs.Instances, s.instanceStatus(inst))
				if inst.Lifecycle == lcInService {
					gs.InService++
				}
			}
		}
		st.Groups = append(st.Groups, gs)
	}
	for _, inst := range s.sortedInstancesLocked() {
		if inst.Group == "" {
			st.Standalone = append(st.Standalone, s.instanceStatus(inst))
		}
	}
	return st
}

func (s *Server) instanceStatus(inst *instance) InstanceStatus {
	n := s.nodeInstance(inst)
	return InstanceStatus{
		ID: inst.ID, Group: inst.Group, AZ: inst.AZ, InstanceType: inst.InstanceType, State: inst.State,
		Lifecycle: inst.Lifecycle, Health: inst.Health, NodeName: n.Name, ProviderID: n.ProviderID,
		LTVersion: inst.LT.Version, LaunchTime: inst.LaunchTime, NeverReady: inst.NeverReady,
	}
}

// OnShutdown registers what POST /_sim/shutdown does (sim.Up uses it for `recycler sim down`).
func (s *Server) OnShutdown(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = fn
}

// serveAdmin is the admin API:
//
//	GET  /_sim/status            Status (JSON)
//	GET  /_sim/calls             API call counts; DELETE resets them
//	GET  /_sim/faults            current Faults; PUT/POST replaces them (JSON body)
//	POST /_sim/groups            seed a group (GroupSpec JSON)
//	POST /_sim/eventrules        route emitted events to a queue (EventRule JSON)
//	POST /_sim/shutdown          stop the environment (when started by sim.Up)
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	writeJSON := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	fail := func(status int, err error) { writeJSON(status, map[string]string{"error": err.Error()}) }
	r.URL.Path = path.Clean(r.URL.Path) // RECYCLER_SIM_ADMIN ends in "/"; tolerate "//"
	switch {
	case r.URL.Path == "/_sim/status" && r.Method == http.MethodGet:
		writeJSON(http.StatusOK, s.Status())
	case r.URL.Path == "/_sim/calls" && r.Method == http.MethodGet:
		writeJSON(http.StatusOK, s.Calls())
	case r.URL.Path == "/_sim/calls" && r.Method == http.MethodDelete:
		s.ResetCalls()
		writeJSON(http.StatusOK, map[string]int{})
	case r.URL.Path == "/_sim/faults" && r.Method == http.MethodGet:
		writeJSON(http.StatusOK, s.Faults())
	case r.URL.Path == "/_sim/faults" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var f Faults
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("faults body: %w (fields: throttleRate, serverErrorRate, failLaunches, launchFailureRate, bootDelay, neverReadyNext, contentionRate, rateLimits)", err))
			return
		}
		if err := s.SetFaults(f); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(http.StatusOK, s.Faults())
	case r.URL.Path == "/_sim/groups" && r.Method == http.MethodPost:
		var g GroupSpec
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&g); err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("group body: %w", err))
			return
		}
		if err := s.CreateGroup(g); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(http.StatusCreated, s.Status())
	case r.URL.Path == "/_sim/eventrules" && r.Method == http.MethodPost:
		var rule EventRule
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rule); err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("event rule body: %w (fields: name, detailTypes, queue)", err))
			return
		}
		if err := s.PutEventRule(rule); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(http.StatusCreated, rule)
	case r.URL.Path == "/_sim/shutdown" && r.Method == http.MethodPost:
		s.mu.Lock()
		fn := s.shutdown
		s.mu.Unlock()
		if fn == nil {
			fail(http.StatusConflict, fmt.Errorf("this simulator was not started by 'recycler sim up'; stop it where it was started"))
			return
		}
		writeJSON(http.StatusAccepted, map[string]string{"status": "shutting down"})
		go fn()
	default:
		fail(http.StatusNotFound, fmt.Errorf("unknown admin endpoint %s %s (see docs/aws-semantics.md)", r.Method, r.URL.Path))
	}
}
