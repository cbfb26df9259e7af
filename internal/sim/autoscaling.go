package sim

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// XML shapes of Auto Scaling results (element names as in the API reference).
type xLT struct {
	LaunchTemplateID   string `xml:"LaunchTemplateId,omitempty"`
	LaunchTemplateName string `xml:"LaunchTemplateName,omitempty"`
	Version            string `xml:"Version,omitempty"`
}

type xASGInstance struct {
	InstanceID           string `xml:"InstanceId"`
	InstanceType         string `xml:"InstanceType"`
	AvailabilityZone     string `xml:"AvailabilityZone"`
	LifecycleState       string `xml:"LifecycleState"`
	HealthStatus         string `xml:"HealthStatus"`
	LaunchTemplate       *xLT   `xml:"LaunchTemplate,omitempty"`
	ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
}

type xProcess struct {
	ProcessName      string `xml:"ProcessName"`
	SuspensionReason string `xml:"SuspensionReason"`
}

type xTag struct {
	ResourceID        string `xml:"ResourceId"`
	ResourceType      string `xml:"ResourceType"`
	Key               string `xml:"Key"`
	Value             string `xml:"Value"`
	PropagateAtLaunch bool   `xml:"PropagateAtLaunch"`
}

type xOverride struct {
	InstanceType                string `xml:"InstanceType,omitempty"`
	WeightedCapacity            string `xml:"WeightedCapacity,omitempty"`
	LaunchTemplateSpecification *xLT   `xml:"LaunchTemplateSpecification,omitempty"`
}

type xMixed struct {
	LaunchTemplate struct {
		LaunchTemplateSpecification *xLT        `xml:"LaunchTemplateSpecification"`
		Overrides                   []xOverride `xml:"Overrides>member"`
	} `xml:"LaunchTemplate"`
}

type xGroup struct {
	AutoScalingGroupName             string         `xml:"AutoScalingGroupName"`
	AutoScalingGroupARN              string         `xml:"AutoScalingGroupARN"`
	LaunchTemplate                   *xLT           `xml:"LaunchTemplate,omitempty"`
	MixedInstancesPolicy             *xMixed        `xml:"MixedInstancesPolicy,omitempty"`
	MinSize                          int            `xml:"MinSize"`
	MaxSize                          int            `xml:"MaxSize"`
	DesiredCapacity                  int            `xml:"DesiredCapacity"`
	DefaultCooldown                  int            `xml:"DefaultCooldown"`
	AvailabilityZones                []string       `xml:"AvailabilityZones>member"`
	HealthCheckType                  string         `xml:"HealthCheckType"`
	HealthCheckGracePeriod           int            `xml:"HealthCheckGracePeriod"`
	Instances                        []xASGInstance `xml:"Instances>member"`
	CreatedTime                      string         `xml:"CreatedTime"`
	SuspendedProcesses               []xProcess     `xml:"SuspendedProcesses>member"`
	Status                           string         `xml:"Status,omitempty"`
	Tags                             []xTag         `xml:"Tags>member"`
	TerminationPolicies              []string       `xml:"TerminationPolicies>member"`
	NewInstancesProtectedFromScaleIn bool           `xml:"NewInstancesProtectedFromScaleIn"`
}

type xASGInstanceDetails struct {
	InstanceID           string `xml:"InstanceId"`
	InstanceType         string `xml:"InstanceType"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	AvailabilityZone     string `xml:"AvailabilityZone"`
	LifecycleState       string `xml:"LifecycleState"`
	HealthStatus         string `xml:"HealthStatus"`
	LaunchTemplate       *xLT   `xml:"LaunchTemplate,omitempty"`
	ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
}

type xActivity struct {
	ActivityID           string `xml:"ActivityId"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	Description          string `xml:"Description"`
	Cause                string `xml:"Cause"`
	StartTime            string `xml:"StartTime"`
	EndTime              string `xml:"EndTime,omitempty"`
	StatusCode           string `xml:"StatusCode"`
	StatusMessage        string `xml:"StatusMessage,omitempty"`
	Progress             int    `xml:"Progress"`
	Details              string `xml:"Details"`
}

type xHook struct {
	LifecycleHookName     string `xml:"LifecycleHookName"`
	AutoScalingGroupName  string `xml:"AutoScalingGroupName"`
	LifecycleTransition   string `xml:"LifecycleTransition"`
	NotificationTargetARN string `xml:"NotificationTargetARN,omitempty"`
	RoleARN               string `xml:"RoleARN,omitempty"`
	NotificationMetadata  string `xml:"NotificationMetadata,omitempty"`
	HeartbeatTimeout      int    `xml:"HeartbeatTimeout"`
	GlobalTimeout         int    `xml:"GlobalTimeout"`
	DefaultResult         string `xml:"DefaultResult"`
}

type activitiesResult struct {
	Activities []xActivity `xml:"Activities>member"`
	NextToken  string      `xml:"NextToken,omitempty"`
}

// emptyResult is an empty <OpResult/>: operations whose output shape has no members
// (the SDK expects the element), unlike those with no output at all.
type emptyResult struct{}

func (s *Server) autoscalingOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"CreateAutoScalingGroup":              s.createAutoScalingGroup,
		"UpdateAutoScalingGroup":              s.updateAutoScalingGroup,
		"DeleteAutoScalingGroup":              s.deleteAutoScalingGroup,
		"DescribeAutoScalingGroups":           s.describeAutoScalingGroups,
		"DescribeAutoScalingInstances":        s.describeAutoScalingInstances,
		"SetDesiredCapacity":                  s.setDesiredCapacity,
		"EnterStandby":                        s.enterStandby,
		"ExitStandby":                         s.exitStandby,
		"DetachInstances":                     s.detachInstances,
		"TerminateInstanceInAutoScalingGroup": s.terminateInstanceInAutoScalingGroup,
		"SuspendProcesses":                    s.suspendProcesses,
		"ResumeProcesses":                     s.resumeProcesses,
		"DescribeScalingActivities":           s.describeScalingActivities,
		"PutLifecycleHook":                    s.putLifecycleHook,
		"DescribeLifecycleHooks":              s.describeLifecycleHooks,
		"DeleteLifecycleHook":                 s.deleteLifecycleHook,
		"RecordLifecycleActionHeartbeat":      s.recordLifecycleActionHeartbeat,
		"CompleteLifecycleAction":             s.completeLifecycleAction,
		"SetInstanceProtection":               s.setInstanceProtection,
		"CreateOrUpdateTags":                  s.createOrUpdateTags,
		"DeleteTags":                          s.deleteGroupTags,
	}
}

func (s *Server) groupLocked(name string) (*group, *apiError) {
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	g := s.groups[name]
	if g == nil {
		return nil, validation("AutoScalingGroup name not found - AutoScalingGroup %s not found", name)
	}
	return g, nil
}

func intParam(f form, name string) (int, bool, *apiError) {
	n, ok, err := f.intOpt(name)
	if err != nil {
		return 0, false, validation("Value '%s' at '%s' failed to satisfy constraint: must be an integer", f.str(name), lowerFirst(name))
	}
	return n, ok, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func parseLTRef(f form) *ltRef {
	if !f.any() {
		return nil
	}
	return &ltRef{ID: f.str("LaunchTemplateId"), Name: f.str("LaunchTemplateName"), Version: f.str("Version")}
}

// applyGroupSpec validates and applies Create/UpdateAutoScalingGroup parameters.
func (s *Server) applyGroupSpec(g *group, f form, create bool) *apiError {
	minSize, maxSize, desired, err := groupSizes(g, f, create)
	if err != nil {
		return err
	}
	lt, mixed, mixedLT, err := s.groupTemplates(f, create)
	if err != nil {
		return err
	}
	azs, err := s.groupZones(f, create)
	if err != nil {
		return err
	}
	if create {
		s.desiredChangedLocked(g, desired, fmt.Sprintf("At %s a user request created an AutoScalingGroup changing the desired capacity from 0 to %d.", s.clock.Now().UTC().Format(causeTime), desired))
	} else {
		s.desiredChangedLocked(g, desired, fmt.Sprintf("At %s a user request update of AutoScalingGroup constraints to min: %d, max: %d, desired: %d changing the desired capacity from %d to %d.", s.clock.Now().UTC().Format(causeTime), minSize, maxSize, desired, g.Desired, desired))
	}
	g.Min, g.Max, g.Desired = minSize, maxSize, desired
	if lt != nil {
		g.LT, g.MixedLT, g.Overrides = lt, nil, nil
	}
	if mixedLT != nil {
		g.LT, g.MixedLT, g.Overrides = nil, mixedLT, nil
		for _, o := range mixed.sub("LaunchTemplate").memberStructs("Overrides") {
			ov := override{InstanceType: o.str("InstanceType"), WeightedCapacity: o.str("WeightedCapacity"), LT: parseLTRef(o.sub("LaunchTemplateSpecification"))}
			if ov.LT != nil && s.findTemplateLocked(ov.LT.ID, ov.LT.Name) == nil {
				return validation("You must use a valid fully-formed launch template. The launch template of override %s does not exist.", ov.InstanceType)
			}
			g.Overrides = append(g.Overrides, ov)
		}
	}
	if len(azs) > 0 {
		g.AZs = azs
	}
	applyGroupOptions(g, f)
	return nil
}

// groupSizes reads MinSize, MaxSize and DesiredCapacity (an update keeps what it does
// not name) and checks min <= desired <= max.
func groupSizes(g *group, f form, create bool) (minSize, maxSize, desired int, _ *apiError) {
	minSize, hasMin, err := intParam(f, "MinSize")
	if err != nil {
		return 0, 0, 0, err
	}
	maxSize, hasMax, err := intParam(f, "MaxSize")
	if err != nil {
		return 0, 0, 0, err
	}
	desired, hasDesired, err := intParam(f, "DesiredCapacity")
	if err != nil {
		return 0, 0, 0, err
	}
	if create && (!hasMin || !hasMax) {
		return 0, 0, 0, validation("1 validation error detected: MinSize and MaxSize are required")
	}
	if !hasMin {
		minSize = g.Min
	}
	if !hasMax {
		maxSize = g.Max
	}
	if minSize < 0 || maxSize < 0 {
		return 0, 0, 0, validation("MinSize and MaxSize must not be negative")
	}
	if minSize > maxSize {
		return 0, 0, 0, validation("Max bound, %d, must be greater than or equal to min bound, %d", maxSize, minSize)
	}
	switch {
	case hasDesired:
	case create:
		desired = minSize
	default:
		// Changing only min/max moves desired capacity into the new bounds.
		desired = min(max(g.Desired, minSize), maxSize)
	}
	if desired < minSize || desired > maxSize {
		return 0, 0, 0, validation("Desired capacity:%d must be between the specified min size:%d and max size:%d", desired, minSize, maxSize)
	}
	return minSize, maxSize, desired, nil
}

// groupTemplates reads LaunchTemplate or MixedInstancesPolicy and checks that the
// template (and version) it names exists; a create needs one of them.
func (s *Server) groupTemplates(f form, create bool) (lt *ltRef, mixed form, mixedLT *ltRef, _ *apiError) {
	lt = parseLTRef(f.sub("LaunchTemplate"))
	mixed = f.sub("MixedInstancesPolicy")
	mixedLT = parseLTRef(mixed.sub("LaunchTemplate").sub("LaunchTemplateSpecification"))
	ref := lt
	if ref == nil {
		ref = mixedLT
	}
	if ref == nil {
		if create {
			return nil, mixed, nil, validation("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, InstanceId or MixedInstancesPolicy parameter.")
		}
		return nil, mixed, nil, nil
	}
	if (ref.ID == "") == (ref.Name == "") {
		return nil, mixed, nil, validation("Valid requests must contain either LaunchTemplateId or LaunchTemplateName")
	}
	t := s.findTemplateLocked(ref.ID, ref.Name)
	if t == nil {
		if ref.ID != "" {
			return nil, mixed, nil, validation("You must use a valid fully-formed launch template. The specified launch template, with template ID %s, does not exist.", ref.ID)
		}
		return nil, mixed, nil, validation("You must use a valid fully-formed launch template. The specified launch template, with template name %s, does not exist.", ref.Name)
	}
	if _, verr := t.resolve(ref.Version); verr != nil {
		return nil, mixed, nil, validation("You must use a valid fully-formed launch template. The specified launch template version %s of template %s does not exist.", ref.Version, t.ID)
	}
	return lt, mixed, mixedLT, nil
}

// groupZones reads AvailabilityZones (each must be one of the region's); a create
// without zones needs VPCZoneIdentifier and then spans every zone.
func (s *Server) groupZones(f form, create bool) ([]string, *apiError) {
	azs := f.members("AvailabilityZones")
	for _, az := range azs {
		if !contains(s.opts.Zones, az) {
			return nil, validation("The availability zone %s is not legally formatted or does not exist in region %s", az, s.opts.Region)
		}
	}
	if create && len(azs) == 0 {
		if f.str("VPCZoneIdentifier") == "" {
			return nil, validation("At least one Availability Zone or VPC Subnet is required.")
		}
		azs = append([]string(nil), s.opts.Zones...) // subnets are not modelled: one per zone
	}
	return azs, nil
}

// applyGroupOptions sets the optional settings a request names; the others stay.
func applyGroupOptions(g *group, f form) {
	if v := f.str("HealthCheckType"); v != "" {
		g.HealthCheckType = v
	}
	if n, ok, _ := f.intOpt("HealthCheckGracePeriod"); ok {
		g.GracePeriod = n
	}
	if n, ok, _ := f.intOpt("DefaultCooldown"); ok {
		g.DefaultCooldown = n
	}
	if tp := f.members("TerminationPolicies"); len(tp) > 0 {
		g.TerminationPolicies = tp
	}
	if b, ok := f.boolOpt("NewInstancesProtectedFromScaleIn"); ok {
		g.NewProtected = b
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) createAutoScalingGroup(f form) (any, *apiError) {
	name := f.str("AutoScalingGroupName")
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	if _, exists := s.groups[name]; exists {
		return nil, &apiError{Status: 400, Code: "AlreadyExists", Message: fmt.Sprintf("AutoScalingGroup by this name already exists - A group with the name %s already exists", name)}
	}
	now := s.clock.Now()
	g := &group{
		Name:                name,
		ARN:                 fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:%s:autoScalingGroupName/%s", s.opts.Region, s.opts.AccountID, s.uuidLocked(), name),
		Suspended:           map[string]string{},
		Hooks:               map[string]*lifecycleHook{},
		Created:             now,
		HealthCheckType:     "EC2",
		DefaultCooldown:     300,
		TerminationPolicies: []string{"Default"},
	}
	if err := s.applyGroupSpec(g, f, true); err != nil {
		return nil, err
	}
	for _, t := range f.memberStructs("Tags") {
		p, _ := t.boolOpt("PropagateAtLaunch")
		g.Tags = append(g.Tags, asgTag{Key: t.str("Key"), Value: t.str("Value"), PropagateAtLaunch: p})
	}
	for _, h := range f.memberStructs("LifecycleHookSpecificationList") {
		hook, err := parseHook(h)
		if err != nil {
			return nil, err
		}
		g.Hooks[hook.Name] = hook
	}
	s.groups[name] = g
	return nil, nil
}

func (s *Server) updateAutoScalingGroup(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	if g.Deleting {
		return nil, &apiError{Status: 400, Code: "ScalingActivityInProgress", Message: "The operation cannot be performed while the AutoScalingGroup is being deleted."}
	}
	return nil, s.applyGroupSpec(g, f, false)
}

func (s *Server) deleteAutoScalingGroup(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	force, _ := f.boolOpt("ForceDelete")
	if !force && len(g.Instances) > 0 {
		return nil, &apiError{Status: 400, Code: "ResourceInUse", Message: "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group."}
	}
	g.Deleting = true
	g.Desired, g.Min = 0, 0
	return nil, nil
}

func (s *Server) xGroupLocked(g *group) xGroup {
	x := xGroup{
		AutoScalingGroupName:             g.Name,
		AutoScalingGroupARN:              g.ARN,
		MinSize:                          g.Min,
		MaxSize:                          g.Max,
		DesiredCapacity:                  g.Desired,
		DefaultCooldown:                  g.DefaultCooldown,
		AvailabilityZones:                g.AZs,
		HealthCheckType:                  g.HealthCheckType,
		HealthCheckGracePeriod:           g.GracePeriod,
		CreatedTime:                      ts(g.Created),
		TerminationPolicies:              g.TerminationPolicies,
		NewInstancesProtectedFromScaleIn: g.NewProtected,
	}
	if g.Deleting {
		x.Status = "Delete in progress"
	}
	if g.LT != nil {
		x.LaunchTemplate = s.xLTRefLocked(*g.LT)
	}
	if g.MixedLT != nil {
		x.MixedInstancesPolicy = &xMixed{}
		x.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification = s.xLTRefLocked(*g.MixedLT)
		for _, o := range g.Overrides {
			xo := xOverride{InstanceType: o.InstanceType, WeightedCapacity: o.WeightedCapacity}
			if o.LT != nil {
				xo.LaunchTemplateSpecification = s.xLTRefLocked(*o.LT)
			}
			x.MixedInstancesPolicy.LaunchTemplate.Overrides = append(x.MixedInstancesPolicy.LaunchTemplate.Overrides, xo)
		}
	}
	for _, id := range g.Instances {
		if inst := s.instances[id]; inst != nil {
			x.Instances = append(x.Instances, xASGInstance{
				InstanceID: inst.ID, InstanceType: inst.InstanceType, AvailabilityZone: inst.AZ,
				LifecycleState: inst.Lifecycle, HealthStatus: inst.Health, LaunchTemplate: xInstLT(inst),
				ProtectedFromScaleIn: inst.Protected,
			})
		}
	}
	procs := make([]string, 0, len(g.Suspended))
	for p := range g.Suspended {
		procs = append(procs, p)
	}
	sort.Strings(procs)
	for _, p := range procs {
		x.SuspendedProcesses = append(x.SuspendedProcesses, xProcess{ProcessName: p, SuspensionReason: g.Suspended[p]})
	}
	for _, t := range g.Tags {
		x.Tags = append(x.Tags, xTag{ResourceID: g.Name, ResourceType: "auto-scaling-group", Key: t.Key, Value: t.Value, PropagateAtLaunch: t.PropagateAtLaunch})
	}
	return x
}

// xLTRefLocked shows the group's launch template as AWS does: id and name, version as given.
func (s *Server) xLTRefLocked(r ltRef) *xLT {
	x := &xLT{LaunchTemplateID: r.ID, LaunchTemplateName: r.Name, Version: r.Version}
	if lt := s.findTemplateLocked(r.ID, r.Name); lt != nil {
		x.LaunchTemplateID, x.LaunchTemplateName = lt.ID, lt.Name
	}
	if x.Version == "" {
		x.Version = "$Default"
	}
	return x
}

func xInstLT(inst *instance) *xLT {
	if inst.LT.ID == "" {
		return nil
	}
	return &xLT{LaunchTemplateID: inst.LT.ID, LaunchTemplateName: inst.LT.Name, Version: inst.LT.Version}
}

// page applies NextToken/MaxRecords (tokens are offsets, opaque to callers).
func page(f form, maxName string, n, defMax, limit int) (from, to int, next string, err *apiError) {
	size := defMax
	if v, ok, perr := f.intOpt(maxName); perr != nil || (ok && (v < 1 || v > limit)) {
		return 0, 0, "", validation("Value '%s' at '%s' failed to satisfy constraint: Member must have value between 1 and %d", f.str(maxName), lowerFirst(maxName), limit)
	} else if ok {
		size = v
	}
	if tok := f.str("NextToken"); tok != "" {
		off, perr := strconv.Atoi(strings.TrimPrefix(tok, "sim-"))
		if perr != nil || off < 0 || off > n {
			return 0, 0, "", validation("The token '%s' is invalid.", tok)
		}
		from = off
	}
	to = min(from+size, n)
	if to < n {
		next = "sim-" + strconv.Itoa(to)
	}
	return from, to, next, nil
}

func (s *Server) describeAutoScalingGroups(f form) (any, *apiError) {
	names := f.members("AutoScalingGroupNames")
	var groups []*group
	if len(names) > 0 {
		for _, n := range names {
			if g := s.groups[n]; g != nil {
				groups = append(groups, g)
			}
		}
	} else {
		groups = s.sortedGroupsLocked()
	}
	filters := f.memberStructs("Filters")
	var kept []*group
	for _, g := range groups {
		if s.groupMatches(g, filters) {
			kept = append(kept, g)
		}
	}
	from, to, next, err := page(f, "MaxRecords", len(kept), 50, 100)
	if err != nil {
		return nil, err
	}
	out := struct {
		AutoScalingGroups []xGroup `xml:"AutoScalingGroups>member"`
		NextToken         string   `xml:"NextToken,omitempty"`
	}{NextToken: next}
	for _, g := range kept[from:to] {
		out.AutoScalingGroups = append(out.AutoScalingGroups, s.xGroupLocked(g))
	}
	return out, nil
}

func (s *Server) groupMatches(g *group, filters []form) bool {
	for _, fl := range filters {
		name, values := fl.str("Name"), fl.members("Values")
		ok := false
		for _, t := range g.Tags {
			switch {
			case name == "tag-key":
				ok = ok || contains(values, t.Key)
			case name == "tag-value":
				ok = ok || contains(values, t.Value)
			case strings.HasPrefix(name, "tag:"):
				ok = ok || (t.Key == name[4:] && contains(values, t.Value))
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s *Server) describeAutoScalingInstances(f form) (any, *apiError) {
	ids := f.members("InstanceIds")
	if len(ids) > 50 {
		return nil, validation("The number of instance ids that may be passed in is limited to 50")
	}
	var insts []*instance
	if len(ids) > 0 {
		for _, id := range ids {
			if inst := s.instances[id]; inst != nil && inst.Group != "" {
				insts = append(insts, inst)
			}
		}
	} else {
		for _, inst := range s.sortedInstancesLocked() {
			if inst.Group != "" {
				insts = append(insts, inst)
			}
		}
	}
	from, to, next, err := page(f, "MaxRecords", len(insts), 50, 50)
	if err != nil {
		return nil, err
	}
	out := struct {
		AutoScalingInstances []xASGInstanceDetails `xml:"AutoScalingInstances>member"`
		NextToken            string                `xml:"NextToken,omitempty"`
	}{NextToken: next}
	for _, inst := range insts[from:to] {
		out.AutoScalingInstances = append(out.AutoScalingInstances, xASGInstanceDetails{
			InstanceID: inst.ID, InstanceType: inst.InstanceType, AutoScalingGroupName: inst.Group,
			AvailabilityZone: inst.AZ, LifecycleState: inst.Lifecycle, HealthStatus: strings.ToUpper(inst.Health),
			LaunchTemplate: xInstLT(inst), ProtectedFromScaleIn: inst.Protected,
		})
	}
	return out, nil
}

func (s *Server) setDesiredCapacity(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	n, ok, err := intParam(f, "DesiredCapacity")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, validation("1 validation error detected: Value null at 'desiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	if n > g.Max {
		return nil, validation("New SetDesiredCapacity value %d is above max value %d for the AutoScalingGroup.", n, g.Max)
	}
	if n < g.Min {
		return nil, validation("New SetDesiredCapacity value %d is below min value %d for the AutoScalingGroup.", n, g.Min)
	}
	s.desiredChangedLocked(g, n, fmt.Sprintf("At %s a user request explicitly set group desired capacity changing the desired capacity from %d to %d.", s.clock.Now().UTC().Format(causeTime), g.Desired, n))
	g.Desired = n
	return nil, nil
}

// memberInstances validates ≤ 20 ids that belong to the group.
func (s *Server) memberInstancesLocked(g *group, ids []string) ([]*instance, *apiError) {
	if len(ids) > 20 {
		return nil, validation("The number of instance ids that may be passed in is limited to 20")
	}
	if len(ids) == 0 {
		return nil, validation("The instance ids must be specified.")
	}
	var out []*instance
	for _, id := range ids {
		inst := s.instances[id]
		if inst == nil || inst.Group != g.Name {
			return nil, validation("The instance %s is not part of Auto Scaling group %s.", id, g.Name)
		}
		out = append(out, inst)
	}
	return out, nil
}

func (s *Server) enterStandby(f form) (any, *apiError) {
	return s.moveInstances(f, move{
		verb: "place into standby", from: []string{lcInService}, fromText: "InService",
		needDecrement: true, describe: "Moving EC2 instance to Standby: ", happened: "was moved to standby",
		answer: "InProgress", progress: 50, through: lcEnteringStandby,
	})
}

func (s *Server) exitStandby(f form) (any, *apiError) {
	return s.moveInstances(f, move{
		verb: "exit standby", from: []string{lcStandby}, fromText: "Standby", grow: true,
		describe: "Moving EC2 instance out of Standby: ", happened: "was moved out of standby",
		answer: "PreInService", progress: 30, through: lcPending,
	})
}

func (s *Server) detachInstances(f form) (any, *apiError) {
	// AWS decrements for Standby instances too, although they were already outside
	// desired capacity: the group then terminates an InService instance (the user
	// guide warns about exactly this).
	return s.moveInstances(f, move{
		verb: "detach", from: []string{lcInService, lcStandby}, fromText: "InService or Standby",
		needDecrement: true, describe: "Detaching EC2 instance: ", happened: "was detached",
		answer: "InProgress", progress: 50, through: lcDetaching,
	})
}

// move describes one of the user-requested instance moves that share AWS's rules:
// every instance must be in an allowed state, desired capacity moves by the number
// of instances within [MinSize, MaxSize], and one activity is recorded per instance.
// The instance passes through a transient state (through) for the transition delay;
// its activity stays InProgress until then (see finishTransitionLocked).
type move struct {
	verb          string   // in the size refusal: "To <verb> N instances, …"
	from          []string // allowed lifecycle states
	fromText      string   // "The instance … is not in <fromText>."
	needDecrement bool     // the call takes ShouldDecrementDesiredCapacity (required)
	grow          bool     // desired grows by the number of instances (ExitStandby)
	describe      string   // activity description prefix
	happened      string   // activity cause: "instance i-… <happened> in response to a user request"
	answer        string   // the activity's StatusCode in the call's answer
	progress      int
	through       string // the transient lifecycle state
}

func (s *Server) moveInstances(f form, m move) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	var decrement bool
	if m.needDecrement {
		var ok bool
		if decrement, ok = f.boolOpt("ShouldDecrementDesiredCapacity"); !ok {
			return nil, validation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
		}
	}
	insts, err := s.memberInstancesLocked(g, f.members("InstanceIds"))
	if err != nil {
		return nil, err
	}
	for _, inst := range insts {
		if !slices.Contains(m.from, inst.Lifecycle) {
			return nil, validation("The instance %s is not in %s.", inst.ID, m.fromText)
		}
	}
	delta := 0
	switch {
	case m.grow:
		delta = len(insts)
	case decrement:
		delta = -len(insts)
	}
	if d := g.Desired + delta; d < g.Min || d > g.Max {
		return nil, validation("AutoScalingGroup %s has min-size=%d, max-size=%d, and desired-size=%d. To %s %d instances, please update the AutoScalingGroup sizes appropriately.", g.Name, g.Min, g.Max, g.Desired, m.verb, len(insts))
	}
	before := g.Desired
	g.Desired += delta
	now := s.clock.Now()
	var res activitiesResult
	for _, inst := range insts {
		cause := fmt.Sprintf("At %s instance %s %s in response to a user request", now.UTC().Format(causeTime), inst.ID, m.happened)
		switch {
		case g.Desired < before:
			cause += fmt.Sprintf(", shrinking the capacity from %d to %d", before, g.Desired)
		case g.Desired > before:
			cause += fmt.Sprintf(", increasing the capacity from %d to %d", before, g.Desired)
		}
		a := s.newActivityLocked(g, now, m.describe+inst.ID, cause+".", inst.AZ)
		// The returned activity shows the call as it was accepted.
		x := xAct(a)
		x.StatusCode, x.Progress = m.answer, m.progress
		res.Activities = append(res.Activities, x)
		if countsTowardCapacity(inst.Lifecycle) && !m.grow && !decrement {
			// The instance leaves the counted capacity: the group launches its
			// replacement, and that launch's cause names this request.
			g.triggers = append(g.triggers, cause+".")
		}
		inst.activity = a
		inst.Lifecycle = m.through
		inst.lifecycleAt = now.Add(s.transitionDelayLocked(m.through))
	}
	return res, nil
}

func (s *Server) terminateInstanceInAutoScalingGroup(f form) (any, *apiError) {
	id := f.str("InstanceId")
	if id == "" {
		return nil, validation("1 validation error detected: Value null at 'instanceId' failed to satisfy constraint: Member must not be null")
	}
	decrement, ok := f.boolOpt("ShouldDecrementDesiredCapacity")
	if !ok {
		return nil, validation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	inst := s.instances[id]
	if inst == nil || inst.Group == "" {
		return nil, validation("Instance Id not found - No managed instance found for instance ID: %s", id)
	}
	g := s.groups[inst.Group]
	now := s.clock.Now()
	if strings.HasPrefix(inst.Lifecycle, lcTerminating) {
		return struct {
			Activity xActivity `xml:"Activity"`
		}{xAct(s.newActivityLocked(g, now, "Terminating EC2 instance: "+id, "The instance is already terminating.", inst.AZ))}, nil
	}
	before := g.Desired
	counted := countsTowardCapacity(inst.Lifecycle)
	if decrement && counted {
		if g.Desired-1 < g.Min {
			return nil, validation("Currently, desiredSize equals minSize (%d). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.", g.Min)
		}
		g.Desired--
	}
	cause := fmt.Sprintf("At %s instance %s was taken out of service in response to a user request", now.UTC().Format(causeTime), id)
	if decrement && counted {
		cause += fmt.Sprintf(", shrinking the capacity from %d to %d", before, g.Desired)
	}
	a := s.startTerminateLocked(g, inst, now, cause+".")
	if !decrement && counted {
		g.triggers = append(g.triggers, a.Cause) // the group replaces it
	}
	return struct {
		Activity xActivity `xml:"Activity"`
	}{xAct(a)}, nil
}

// setInstanceProtection sets ProtectedFromScaleIn: scale-in (and AZRebalance) skip
// protected instances; an explicit TerminateInstanceInAutoScalingGroup does not.
func (s *Server) setInstanceProtection(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	protect, ok := f.boolOpt("ProtectedFromScaleIn")
	if !ok {
		return nil, validation("1 validation error detected: Value null at 'protectedFromScaleIn' failed to satisfy constraint: Member must not be null")
	}
	ids := f.members("InstanceIds")
	if len(ids) > 50 {
		return nil, validation("The number of instance ids that may be passed in is limited to 50")
	}
	insts, err := s.memberInstancesLocked(g, ids)
	if err != nil {
		return nil, err
	}
	for _, inst := range insts {
		if strings.HasPrefix(inst.Lifecycle, lcTerminating) || inst.Lifecycle == lcDetaching {
			return nil, validation("The instance %s is not in a valid state for this operation: %s.", inst.ID, inst.Lifecycle)
		}
	}
	for _, inst := range insts {
		inst.Protected = protect
	}
	return emptyResult{}, nil
}

// groupTagsLocked validates the Tags.member.N of CreateOrUpdateTags/DeleteTags:
// every one names an existing group (ResourceType auto-scaling-group) and a key.
func (s *Server) groupTagsLocked(f form) ([]*group, []asgTag, *apiError) {
	var groups []*group
	var tags []asgTag
	for _, t := range f.memberStructs("Tags") {
		if rt := t.str("ResourceType"); rt != "" && rt != "auto-scaling-group" {
			return nil, nil, validation("Invalid resource type: %s", rt)
		}
		g, err := s.groupLocked(t.str("ResourceId"))
		if err != nil {
			return nil, nil, err
		}
		key := t.str("Key")
		if key == "" || len(key) > 128 {
			return nil, nil, validation("1 validation error detected: Value at 'tags.member.key' failed to satisfy constraint: Member must have length between 1 and 128")
		}
		if strings.HasPrefix(key, "aws:") {
			return nil, nil, validation("Tag keys starting with 'aws:' are reserved for internal use")
		}
		p, _ := t.boolOpt("PropagateAtLaunch")
		groups = append(groups, g)
		tags = append(tags, asgTag{Key: key, Value: t.str("Value"), PropagateAtLaunch: p})
	}
	if len(tags) == 0 {
		return nil, nil, validation("1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	return groups, tags, nil
}

func (s *Server) createOrUpdateTags(f form) (any, *apiError) {
	groups, tags, err := s.groupTagsLocked(f)
	if err != nil {
		return nil, err
	}
	for i, g := range groups { // a refused call changes nothing: check first
		if len(g.Tags) >= 50 && !slices.ContainsFunc(g.Tags, func(t asgTag) bool { return t.Key == tags[i].Key }) {
			return nil, &apiError{Status: 400, Code: "LimitExceeded", Message: "The quota of 50 tags per Auto Scaling group has been reached."}
		}
	}
	for i, g := range groups {
		g.Tags = append(slices.DeleteFunc(g.Tags, func(t asgTag) bool { return t.Key == tags[i].Key }), tags[i])
	}
	return nil, nil
}

func (s *Server) deleteGroupTags(f form) (any, *apiError) {
	groups, tags, err := s.groupTagsLocked(f)
	if err != nil {
		return nil, err
	}
	for i, g := range groups {
		g.Tags = slices.DeleteFunc(g.Tags, func(t asgTag) bool {
			return t.Key == tags[i].Key && (tags[i].Value == "" || t.Value == tags[i].Value)
		})
	}
	return nil, nil
}

func (s *Server) suspendProcesses(f form) (any, *apiError) {
	return s.setProcesses(f, true)
}

func (s *Server) resumeProcesses(f form) (any, *apiError) {
	return s.setProcesses(f, false)
}

func (s *Server) setProcesses(f form, suspend bool) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	procs := f.members("ScalingProcesses")
	for _, p := range procs {
		if !contains(scalingProcesses, p) {
			return nil, validation("Invalid processes: [%s]", p)
		}
	}
	if len(procs) == 0 {
		procs = scalingProcesses
	}
	for _, p := range procs {
		if suspend {
			g.Suspended[p] = fmt.Sprintf("User suspended at %s", s.clock.Now().UTC().Format(causeTime))
		} else {
			delete(g.Suspended, p)
		}
	}
	return nil, nil
}

func xAct(a *activity) xActivity {
	x := xActivity{
		ActivityID: a.ID, AutoScalingGroupName: a.Group, Description: a.Description, Cause: a.Cause,
		StartTime: ts(a.Start), StatusCode: a.Status, StatusMessage: a.StatusMessage, Progress: a.Progress, Details: a.Details,
	}
	if !a.End.IsZero() {
		x.EndTime = ts(a.End)
	}
	return x
}

func (s *Server) describeScalingActivities(f form) (any, *apiError) {
	var acts []*activity
	ids := f.members("ActivityIds")
	name := f.str("AutoScalingGroupName")
	for _, g := range s.sortedGroupsLocked() {
		if name != "" && g.Name != name {
			continue
		}
		for _, a := range g.Activities {
			if len(ids) == 0 || contains(ids, a.ID) {
				acts = append(acts, a)
			}
		}
	}
	sort.SliceStable(acts, func(i, j int) bool { return acts[i].Start.After(acts[j].Start) })
	from, to, next, err := page(f, "MaxRecords", len(acts), 100, 100)
	if err != nil {
		return nil, err
	}
	out := activitiesResult{NextToken: next}
	for _, a := range acts[from:to] {
		out.Activities = append(out.Activities, xAct(a))
	}
	return out, nil
}

func parseHook(f form) (*lifecycleHook, *apiError) {
	h := &lifecycleHook{
		Name:          f.str("LifecycleHookName"),
		Transition:    f.str("LifecycleTransition"),
		DefaultResult: f.str("DefaultResult"),
		Metadata:      f.str("NotificationMetadata"),
		TargetARN:     f.str("NotificationTargetARN"),
		RoleARN:       f.str("RoleARN"),
		Timeout:       3600,
	}
	if h.Name == "" {
		return nil, validation("1 validation error detected: Value null at 'lifecycleHookName' failed to satisfy constraint: Member must not be null")
	}
	if n, ok, err := f.intOpt("HeartbeatTimeout"); err != nil || (ok && (n < 30 || n > 7200)) {
		return nil, validation("Heartbeat timeout must be between 30 and 7200 seconds.")
	} else if ok {
		h.Timeout = n
	}
	if h.DefaultResult == "" {
		h.DefaultResult = "ABANDON"
	}
	if h.DefaultResult != "CONTINUE" && h.DefaultResult != "ABANDON" {
		return nil, validation("Valid values for DefaultResult are CONTINUE and ABANDON.")
	}
	return h, nil
}

func (s *Server) putLifecycleHook(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	h, err := parseHook(f)
	if err != nil {
		return nil, err
	}
	old := g.Hooks[h.Name]
	if h.Transition == "" {
		if old == nil {
			return nil, validation("Lifecycle transition must be specified when creating a new lifecycle hook.")
		}
		h.Transition = old.Transition
	}
	if h.Transition != transitionLaunching && h.Transition != transitionTerminating {
		return nil, validation("Invalid Lifecycle Transition: %s", h.Transition)
	}
	if old == nil && len(g.Hooks) >= 50 {
		return nil, &apiError{Status: 400, Code: "LimitExceeded", Message: "Exceeded the maximum of 50 lifecycle hooks per Auto Scaling group."}
	}
	g.Hooks[h.Name] = h
	if h.TargetARN != "" && (old == nil || old.TargetARN != h.TargetARN) {
		s.emitTestNotificationLocked(g, h)
	}
	return emptyResult{}, nil
}

func (s *Server) describeLifecycleHooks(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	names := f.members("LifecycleHookNames")
	out := struct {
		LifecycleHooks []xHook `xml:"LifecycleHooks>member"`
	}{}
	keys := make([]string, 0, len(g.Hooks))
	for k := range g.Hooks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h := g.Hooks[k]
		if len(names) > 0 && !contains(names, k) {
			continue
		}
		global := min(maxHookGlobal, 100*time.Duration(h.Timeout)*time.Second)
		out.LifecycleHooks = append(out.LifecycleHooks, xHook{
			LifecycleHookName: h.Name, AutoScalingGroupName: g.Name, LifecycleTransition: h.Transition,
			NotificationTargetARN: h.TargetARN, RoleARN: h.RoleARN, NotificationMetadata: h.Metadata,
			HeartbeatTimeout: h.Timeout, GlobalTimeout: int(global / time.Second), DefaultResult: h.DefaultResult,
		})
	}
	return out, nil
}

func (s *Server) deleteLifecycleHook(f form) (any, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	name := f.str("LifecycleHookName")
	if g.Hooks[name] == nil {
		return nil, validation("No Lifecycle Hook found for name %s and AutoScalingGroup %s", name, g.Name)
	}
	delete(g.Hooks, name)
	return emptyResult{}, nil
}

// findActionLocked finds the lifecycle action by token or instance id.
func (s *Server) findActionLocked(f form) (*instance, *hookAction, *apiError) {
	g, err := s.groupLocked(f.str("AutoScalingGroupName"))
	if err != nil {
		return nil, nil, err
	}
	hook := f.str("LifecycleHookName")
	if g.Hooks[hook] == nil {
		return nil, nil, validation("No Lifecycle Hook found for name %s and AutoScalingGroup %s", hook, g.Name)
	}
	token, id := f.str("LifecycleActionToken"), f.str("InstanceId")
	if token == "" && id == "" {
		return nil, nil, validation("Either LifecycleActionToken or InstanceId must be specified.")
	}
	for _, iid := range g.Instances {
		inst := s.instances[iid]
		if inst == nil || (id != "" && inst.ID != id) {
			continue
		}
		for _, a := range inst.Actions {
			if a.Hook == hook && !a.Done && (token == "" || a.Token == token) {
				return inst, a, nil
			}
		}
	}
	if token != "" {
		return nil, nil, validation("No active Lifecycle Action found with token %s", token)
	}
	return nil, nil, validation("No active Lifecycle Action found with instance ID %s", id)
}

func (s *Server) recordLifecycleActionHeartbeat(f form) (any, *apiError) {
	inst, a, err := s.findActionLocked(f)
	if err != nil {
		return nil, err
	}
	h := s.groups[inst.Group].Hooks[a.Hook]
	a.Deadline = minTime(s.clock.Now().Add(time.Duration(h.Timeout)*time.Second), a.GlobalDeadline)
	return emptyResult{}, nil
}

func (s *Server) completeLifecycleAction(f form) (any, *apiError) {
	result := f.str("LifecycleActionResult")
	if result != "CONTINUE" && result != "ABANDON" {
		return nil, validation("Valid values for LifecycleActionResult are CONTINUE and ABANDON.")
	}
	inst, a, err := s.findActionLocked(f)
	if err != nil {
		return nil, err
	}
	a.Done, a.Result = true, result
	if s.answers == nil {
		s.answers = map[string][]string{}
	}
	s.answers[inst.ID] = append(s.answers[inst.ID], a.Hook+"="+result)
	s.evaluateHooksLocked(inst, s.clock.Now())
	return emptyResult{}, nil
}
