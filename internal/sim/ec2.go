package sim

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/recycler/recycler/internal/cloud"
)

type xEC2Tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xInstance struct {
	InstanceID     string    `xml:"instanceId"`
	ImageID        string    `xml:"imageId"`
	InstanceState  xState    `xml:"instanceState"`
	PrivateDNSName string    `xml:"privateDnsName"`
	DNSName        string    `xml:"dnsName"`
	InstanceType   string    `xml:"instanceType"`
	LaunchTime     string    `xml:"launchTime"`
	Placement      xPlace    `xml:"placement"`
	PrivateIP      string    `xml:"privateIpAddress"`
	SubnetID       string    `xml:"subnetId"`
	VpcID          string    `xml:"vpcId"`
	Architecture   string    `xml:"architecture"`
	TagSet         []xEC2Tag `xml:"tagSet>item"`
}

type xPlace struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type xReservation struct {
	ReservationID string      `xml:"reservationId"`
	OwnerID       string      `xml:"ownerId"`
	InstancesSet  []xInstance `xml:"instancesSet>item"`
}

type xStateChange struct {
	InstanceID    string `xml:"instanceId"`
	CurrentState  xState `xml:"currentState"`
	PreviousState xState `xml:"previousState"`
}

type xStateChanges struct {
	ec2Meta
	InstancesSet []xStateChange `xml:"instancesSet>item"`
}

type xLaunchTemplate struct {
	LaunchTemplateID     string    `xml:"launchTemplateId"`
	LaunchTemplateName   string    `xml:"launchTemplateName"`
	CreateTime           string    `xml:"createTime"`
	CreatedBy            string    `xml:"createdBy"`
	DefaultVersionNumber int       `xml:"defaultVersionNumber"`
	LatestVersionNumber  int       `xml:"latestVersionNumber"`
	TagSet               []xEC2Tag `xml:"tagSet>item"`
}

type xTagSpec struct {
	ResourceType string    `xml:"resourceType"`
	TagSet       []xEC2Tag `xml:"tagSet>item"`
}

type xLTData struct {
	ImageID             string     `xml:"imageId,omitempty"`
	InstanceType        string     `xml:"instanceType,omitempty"`
	TagSpecificationSet []xTagSpec `xml:"tagSpecificationSet>item"`
}

type xLTVersion struct {
	LaunchTemplateID   string  `xml:"launchTemplateId"`
	LaunchTemplateName string  `xml:"launchTemplateName"`
	VersionNumber      int     `xml:"versionNumber"`
	VersionDescription string  `xml:"versionDescription,omitempty"`
	CreateTime         string  `xml:"createTime"`
	CreatedBy          string  `xml:"createdBy"`
	DefaultVersion     bool    `xml:"defaultVersion"`
	LaunchTemplateData xLTData `xml:"launchTemplateData"`
}

func (s *Server) ec2Ops() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"DescribeInstances":              s.describeInstances,
		"TerminateInstances":             s.terminateInstances,
		"StopInstances":                  s.stopInstances,
		"StartInstances":                 s.startInstances,
		"CreateTags":                     s.createTags,
		"DeleteTags":                     s.deleteTags,
		"DescribeTags":                   s.describeTags,
		"CreateLaunchTemplate":           s.createLaunchTemplate,
		"CreateLaunchTemplateVersion":    s.createLaunchTemplateVersion,
		"DescribeLaunchTemplates":        s.describeLaunchTemplates,
		"DescribeLaunchTemplateVersions": s.describeLaunchTemplateVersions,
		"ModifyLaunchTemplate":           s.modifyLaunchTemplate,
		"DescribeAvailabilityZones":      s.describeAvailabilityZones,
	}
}

// instancesByIDLocked resolves ids the way EC2 does: malformed first, then all unknown ids in one error.
func (s *Server) instancesByIDLocked(ids []string) ([]*instance, *apiError) {
	for _, id := range ids {
		if !cloud.IsInstanceID(id) {
			return nil, ec2Error("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
	}
	var missing []string
	var out []*instance
	for _, id := range ids {
		inst := s.instances[id]
		if inst == nil {
			missing = append(missing, id)
			continue
		}
		out = append(out, inst)
	}
	switch len(missing) {
	case 0:
		return out, nil
	case 1:
		return nil, ec2Error("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
	default:
		return nil, ec2Error("InvalidInstanceID.NotFound", "The instance IDs '%s' do not exist", strings.Join(missing, ", "))
	}
}

func (s *Server) xInstanceLocked(inst *instance) xInstance {
	x := xInstance{
		InstanceID: inst.ID, ImageID: inst.ImageID, InstanceState: xState{ec2StateCode[inst.State], inst.State},
		InstanceType: inst.InstanceType, LaunchTime: ts(inst.LaunchTime),
		Placement: xPlace{AvailabilityZone: inst.AZ, Tenancy: "default"}, Architecture: "x86_64",
	}
	if inst.State != ec2Terminated {
		x.PrivateDNSName, x.PrivateIP = inst.PrivateDNS, inst.PrivateIP
		x.SubnetID, x.VpcID = "subnet-000000000"+inst.AZ[len(inst.AZ)-1:], "vpc-0000000000000000a"
	}
	for _, t := range inst.sortedTags() {
		x.TagSet = append(x.TagSet, xEC2Tag(t))
	}
	return x
}

// instanceMatches applies DescribeInstances filters (values may use * and ? wildcards).
func instanceMatches(inst *instance, filters []form) (bool, *apiError) {
	for _, fl := range filters {
		name, values := fl.str("Name"), fl.list("Value")
		var field []string
		switch {
		case name == "instance-state-name":
			field = []string{inst.State}
		case name == "instance-state-code":
			field = []string{strconv.Itoa(ec2StateCode[inst.State])}
		case name == "instance-id":
			field = []string{inst.ID}
		case name == "availability-zone":
			field = []string{inst.AZ}
		case name == "instance-type":
			field = []string{inst.InstanceType}
		case name == "image-id":
			field = []string{inst.ImageID}
		case name == "private-dns-name":
			field = []string{inst.PrivateDNS}
		case name == "private-ip-address":
			field = []string{inst.PrivateIP}
		case name == "tag-key":
			for k := range inst.Tags {
				field = append(field, k)
			}
		case strings.HasPrefix(name, "tag:"):
			if v, ok := inst.Tags[name[4:]]; ok {
				field = []string{v}
			}
		default:
			return false, ec2Error("InvalidParameterValue", "The filter '%s' is invalid", name)
		}
		if !anyMatch(field, values) {
			return false, nil
		}
	}
	return true, nil
}

func anyMatch(field, patterns []string) bool {
	for _, f := range field {
		for _, p := range patterns {
			if ok, _ := path.Match(p, f); ok || p == f {
				return true
			}
		}
	}
	return false
}

func ec2Page(f form, n int) (from, to int, next string, err *apiError) {
	size := n
	if v, ok, perr := f.intOpt("MaxResults"); perr != nil || (ok && (v < 5 || v > 1000)) {
		return 0, 0, "", ec2Error("InvalidParameterValue", "Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", f.str("MaxResults"))
	} else if ok {
		size = v
	}
	if tok := f.str("NextToken"); tok != "" {
		off, perr := strconv.Atoi(strings.TrimPrefix(tok, "sim-"))
		if perr != nil || off < 0 || off > n {
			return 0, 0, "", ec2Error("InvalidParameterValue", "Invalid value '%s' for nextToken", tok)
		}
		from = off
	}
	to = min(from+size, n)
	if to < n {
		next = "sim-" + strconv.Itoa(to)
	}
	return from, to, next, nil
}

func (s *Server) describeInstances(f form) (any, *apiError) {
	ids := f.list("InstanceId")
	if len(ids) > 0 && f.has("MaxResults") {
		return nil, ec2Error("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	var insts []*instance
	if len(ids) > 0 {
		var err *apiError
		if insts, err = s.instancesByIDLocked(ids); err != nil {
			return nil, err
		}
	} else {
		insts = s.sortedInstancesLocked()
	}
	var kept []*instance
	for _, inst := range insts {
		ok, err := instanceMatches(inst, f.structs("Filter"))
		if err != nil {
			return nil, err
		}
		if ok {
			kept = append(kept, inst)
		}
	}
	from, to, next, err := ec2Page(f, len(kept))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		ReservationSet []xReservation `xml:"reservationSet>item"`
		NextToken      string         `xml:"nextToken,omitempty"`
	}{NextToken: next}
	// One reservation per instance: Auto Scaling launches them one by one.
	for _, inst := range kept[from:to] {
		out.ReservationSet = append(out.ReservationSet, xReservation{
			ReservationID: "r-" + inst.ID[2:], OwnerID: s.opts.AccountID, InstancesSet: []xInstance{s.xInstanceLocked(inst)},
		})
	}
	return out, nil
}

func (s *Server) changeStates(f form, change func(*instance) *apiError) (any, *apiError) {
	ids := f.list("InstanceId")
	if len(ids) == 0 {
		return nil, ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
	}
	insts, err := s.instancesByIDLocked(ids)
	if err != nil {
		return nil, err
	}
	out := &xStateChanges{}
	for _, inst := range insts {
		prev := inst.State
		if err := change(inst); err != nil {
			return nil, err
		}
		out.InstancesSet = append(out.InstancesSet, xStateChange{
			InstanceID: inst.ID, CurrentState: xState{ec2StateCode[inst.State], inst.State}, PreviousState: xState{ec2StateCode[prev], prev},
		})
	}
	return out, nil
}

func (s *Server) terminateInstances(f form) (any, *apiError) {
	now := s.clock.Now()
	return s.changeStates(f, func(inst *instance) *apiError {
		s.beginShutdownLocked(inst, now)
		return nil
	})
}

func (s *Server) stopInstances(f form) (any, *apiError) {
	now := s.clock.Now()
	return s.changeStates(f, func(inst *instance) *apiError {
		switch inst.State {
		case ec2Running:
			inst.State, inst.StateAt = ec2Stopping, now.Add(s.opts.StateDelay)
			s.deregisterLocked(inst)
		case ec2Stopping, ec2Stopped:
		default:
			return ec2Error("IncorrectInstanceState", "This instance '%s' is not in a state from which it can be stopped.", inst.ID)
		}
		return nil
	})
}

func (s *Server) startInstances(f form) (any, *apiError) {
	now := s.clock.Now()
	return s.changeStates(f, func(inst *instance) *apiError {
		switch inst.State {
		case ec2Stopped:
			inst.State, inst.StateAt = ec2Pending, now.Add(s.opts.StateDelay)
		case ec2Pending, ec2Running:
		default:
			return ec2Error("IncorrectInstanceState", "The instance '%s' is not in a state from which it can be started.", inst.ID)
		}
		return nil
	})
}

// parseEC2Tags reads f's Tag.N.Key/Value list.
func parseEC2Tags(f form) []tag {
	var out []tag
	for _, t := range f.structs("Tag") {
		out = append(out, tag{Key: t.str("Key"), Value: t.str("Value")})
	}
	return out
}

func (s *Server) createTags(f form) (any, *apiError) {
	ids, tags := f.list("ResourceId"), parseEC2Tags(f)
	if len(ids) == 0 {
		return nil, ec2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	for _, t := range tags {
		if strings.HasPrefix(t.Key, "aws:") {
			return nil, ec2Error("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	return s.eachTaggable(ids, func(m map[string]string) {
		for _, t := range tags {
			m[t.Key] = t.Value
		}
	})
}

func (s *Server) deleteTags(f form) (any, *apiError) {
	ids, tags := f.list("ResourceId"), parseEC2Tags(f)
	return s.eachTaggable(ids, func(m map[string]string) {
		for _, t := range tags {
			if v, ok := m[t.Key]; ok && (t.Value == "" || t.Value == v) {
				delete(m, t.Key)
			}
		}
	})
}

// eachTaggable applies fn to the tags of instances (and launch templates, by id).
func (s *Server) eachTaggable(ids []string, fn func(map[string]string)) (any, *apiError) {
	var targets []map[string]string
	for _, id := range ids {
		switch {
		case strings.HasPrefix(id, "i-"):
			insts, err := s.instancesByIDLocked([]string{id})
			if err != nil {
				return nil, err
			}
			targets = append(targets, insts[0].Tags)
		case strings.HasPrefix(id, "lt-") && s.templates[id] != nil:
			lt := s.templates[id]
			m := map[string]string{}
			for _, t := range lt.Tags {
				m[t.Key] = t.Value
			}
			fn(m)
			lt.Tags = sortedTagList(m)
		default:
			return nil, ec2Error("InvalidID", "The ID '%s' is not valid", id)
		}
	}
	for _, m := range targets {
		fn(m)
	}
	return &struct {
		ec2Meta
		Return bool `xml:"return"`
	}{Return: true}, nil
}

func sortedTagList(m map[string]string) []tag {
	out := make([]tag, 0, len(m))
	for k, v := range m {
		out = append(out, tag{k, v})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out
}

func (s *Server) describeTags(f form) (any, *apiError) {
	type xTagDesc struct {
		ResourceID   string `xml:"resourceId"`
		ResourceType string `xml:"resourceType"`
		Key          string `xml:"key"`
		Value        string `xml:"value"`
	}
	var all []xTagDesc
	for _, inst := range s.sortedInstancesLocked() {
		for _, t := range inst.sortedTags() {
			all = append(all, xTagDesc{inst.ID, "instance", t.Key, t.Value})
		}
	}
	for _, lt := range s.sortedTemplatesLocked() {
		for _, t := range lt.Tags {
			all = append(all, xTagDesc{lt.ID, "launch-template", t.Key, t.Value})
		}
	}
	var kept []xTagDesc
	for _, d := range all {
		ok := true
		for _, fl := range f.structs("Filter") {
			var field string
			switch fl.str("Name") {
			case "resource-id":
				field = d.ResourceID
			case "resource-type":
				field = d.ResourceType
			case "key":
				field = d.Key
			case "value":
				field = d.Value
			default:
				if strings.HasPrefix(fl.str("Name"), "tag:") {
					if d.Key != fl.str("Name")[4:] {
						ok = false
						continue
					}
					field = d.Value
				} else {
					return nil, ec2Error("InvalidParameterValue", "The filter '%s' is invalid", fl.str("Name"))
				}
			}
			ok = ok && anyMatch([]string{field}, fl.list("Value"))
		}
		if ok {
			kept = append(kept, d)
		}
	}
	from, to, next, err := ec2Page(f, len(kept))
	if err != nil {
		return nil, err
	}
	return &struct {
		ec2Meta
		TagSet    []xTagDesc `xml:"tagSet>item"`
		NextToken string     `xml:"nextToken,omitempty"`
	}{TagSet: kept[from:to], NextToken: next}, nil
}

func (s *Server) sortedTemplatesLocked() []*launchTemplate {
	out := make([]*launchTemplate, 0, len(s.templates))
	for _, lt := range s.templates {
		out = append(out, lt)
	}
	sort.Slice(out, func(a, b int) bool {
		return out[a].Created.Before(out[b].Created) || (out[a].Created.Equal(out[b].Created) && out[a].ID < out[b].ID)
	})
	return out
}

func (s *Server) xLaunchTemplate(lt *launchTemplate) xLaunchTemplate {
	x := xLaunchTemplate{
		LaunchTemplateID: lt.ID, LaunchTemplateName: lt.Name, CreateTime: ts(lt.Created),
		CreatedBy: "arn:aws:iam::" + s.opts.AccountID + ":user/sim", DefaultVersionNumber: lt.Default, LatestVersionNumber: lt.latest(),
	}
	for _, t := range lt.Tags {
		x.TagSet = append(x.TagSet, xEC2Tag(t))
	}
	return x
}

func (s *Server) xLTVersion(lt *launchTemplate, v *ltVersion) xLTVersion {
	x := xLTVersion{
		LaunchTemplateID: lt.ID, LaunchTemplateName: lt.Name, VersionNumber: v.Number, VersionDescription: v.Description,
		CreateTime: ts(v.Created), CreatedBy: "arn:aws:iam::" + s.opts.AccountID + ":user/sim", DefaultVersion: v.Number == lt.Default,
		LaunchTemplateData: xLTData{ImageID: v.ImageID, InstanceType: v.InstanceType},
	}
	if len(v.InstanceTags) > 0 {
		spec := xTagSpec{ResourceType: "instance"}
		for _, t := range v.InstanceTags {
			spec.TagSet = append(spec.TagSet, xEC2Tag(t))
		}
		x.LaunchTemplateData.TagSpecificationSet = []xTagSpec{spec}
	}
	return x
}

// applyLTData overlays LaunchTemplateData.* onto v.
func applyLTData(v *ltVersion, f form) {
	d := f.sub("LaunchTemplateData")
	if s := d.str("ImageId"); s != "" {
		v.ImageID = s
	}
	if s := d.str("InstanceType"); s != "" {
		v.InstanceType = s
	}
	for _, spec := range d.structs("TagSpecification") {
		if spec.str("ResourceType") == "instance" {
			v.InstanceTags = parseEC2Tags(spec)
		}
	}
}

// validLTName: 3–128 characters of letters, digits and ( ) . / _ -
func validLTName(n string) bool {
	if len(n) < 3 || len(n) > 128 {
		return false
	}
	for _, r := range n {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && !strings.ContainsRune("()./_-", r) {
			return false
		}
	}
	return true
}

func (s *Server) createLaunchTemplate(f form) (any, *apiError) {
	name := f.str("LaunchTemplateName")
	if !validLTName(name) {
		return nil, ec2Error("InvalidLaunchTemplateName.MalformedException", "A launch template name must be between 3 and 128 characters, and may contain letters, numbers, and the following characters: - ( ) . / _.'")
	}
	if s.findTemplateLocked("", name) != nil {
		return nil, ec2Error("InvalidLaunchTemplateName.AlreadyExistsException", "Launch template name already in use.")
	}
	if !f.sub("LaunchTemplateData").any() {
		return nil, ec2Error("MissingParameter", "The request must contain the parameter launchTemplateData")
	}
	now := s.clock.Now()
	lt := &launchTemplate{ID: "lt-" + s.hex(17), Name: name, Created: now, Default: 1}
	v := &ltVersion{Number: 1, Description: f.str("VersionDescription"), Created: now}
	applyLTData(v, f)
	lt.Versions = []*ltVersion{v}
	for _, spec := range f.structs("TagSpecification") {
		if spec.str("ResourceType") == "launch-template" {
			lt.Tags = parseEC2Tags(spec)
		}
	}
	s.templates[lt.ID] = lt
	return &struct {
		ec2Meta
		LaunchTemplate xLaunchTemplate `xml:"launchTemplate"`
	}{LaunchTemplate: s.xLaunchTemplate(lt)}, nil
}

func (s *Server) templateFromFormLocked(f form) (*launchTemplate, *apiError) {
	id, name := f.str("LaunchTemplateId"), f.str("LaunchTemplateName")
	if (id == "") == (name == "") {
		return nil, ec2Error("InvalidParameterCombination", "Either a launch template ID or a launch template name must be specified in the request, but not both.")
	}
	lt := s.findTemplateLocked(id, name)
	switch {
	case lt == nil && id != "":
		if !strings.HasPrefix(id, "lt-") {
			return nil, ec2Error("InvalidLaunchTemplateId.Malformed", "The specified ID for the launch template (%s) is not valid. Launch template IDs are lt- followed by 17 hexadecimal characters.", id)
		}
		return nil, ec2Error("InvalidLaunchTemplateId.NotFound", "The specified launch template, with template ID %s, does not exist.", id)
	case lt == nil:
		return nil, ec2Error("InvalidLaunchTemplateName.NotFoundException", "The specified launch template, with template name %s, does not exist.", name)
	}
	return lt, nil
}

func (s *Server) createLaunchTemplateVersion(f form) (any, *apiError) {
	lt, err := s.templateFromFormLocked(f)
	if err != nil {
		return nil, err
	}
	v := &ltVersion{Number: lt.latest() + 1, Description: f.str("VersionDescription"), Created: s.clock.Now()}
	if src := f.str("SourceVersion"); src != "" {
		base, rerr := lt.resolve(src)
		if rerr != nil {
			return nil, ec2Error("InvalidLaunchTemplateId.VersionNotFound", "Could not find launch template version %s for launch template %s.", src, lt.ID)
		}
		v.ImageID, v.InstanceType = base.ImageID, base.InstanceType
		v.InstanceTags = append([]tag(nil), base.InstanceTags...)
	}
	applyLTData(v, f)
	lt.Versions = append(lt.Versions, v)
	return &struct {
		ec2Meta
		LaunchTemplateVersion xLTVersion `xml:"launchTemplateVersion"`
	}{LaunchTemplateVersion: s.xLTVersion(lt, v)}, nil
}

func (s *Server) describeLaunchTemplates(f form) (any, *apiError) {
	ids, names := f.list("LaunchTemplateId"), f.list("LaunchTemplateName")
	var lts []*launchTemplate
	switch {
	case len(ids) > 0:
		for _, id := range ids {
			lt := s.templates[id]
			if lt == nil {
				return nil, ec2Error("InvalidLaunchTemplateId.NotFound", "The specified launch template, with template ID %s, does not exist.", id)
			}
			lts = append(lts, lt)
		}
	case len(names) > 0:
		for _, n := range names {
			lt := s.findTemplateLocked("", n)
			if lt == nil {
				return nil, ec2Error("InvalidLaunchTemplateName.NotFoundException", "At least one of the launch templates specified in the request does not exist.")
			}
			lts = append(lts, lt)
		}
	default:
		lts = s.sortedTemplatesLocked()
	}
	from, to, next, err := ec2Page(f, len(lts))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		LaunchTemplates []xLaunchTemplate `xml:"launchTemplates>item"`
		NextToken       string            `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, lt := range lts[from:to] {
		out.LaunchTemplates = append(out.LaunchTemplates, s.xLaunchTemplate(lt))
	}
	return out, nil
}

func (s *Server) describeLaunchTemplateVersions(f form) (any, *apiError) {
	lt, err := s.templateFromFormLocked(f)
	if err != nil {
		return nil, err
	}
	var versions []*ltVersion
	if want := f.list("LaunchTemplateVersion"); len(want) > 0 {
		for _, w := range want {
			v, rerr := lt.resolve(w)
			if rerr != nil {
				return nil, ec2Error("InvalidLaunchTemplateId.VersionNotFound", "Could not find launch template version %s for launch template %s.", w, lt.ID)
			}
			versions = append(versions, v)
		}
	} else {
		versions = lt.Versions
	}
	from, to, next, perr := ec2Page(f, len(versions))
	if perr != nil {
		return nil, perr
	}
	out := &struct {
		ec2Meta
		LaunchTemplateVersionSet []xLTVersion `xml:"launchTemplateVersionSet>item"`
		NextToken                string       `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, v := range versions[from:to] {
		out.LaunchTemplateVersionSet = append(out.LaunchTemplateVersionSet, s.xLTVersion(lt, v))
	}
	return out, nil
}

func (s *Server) modifyLaunchTemplate(f form) (any, *apiError) {
	lt, err := s.templateFromFormLocked(f)
	if err != nil {
		return nil, err
	}
	if d := f.str("SetDefaultVersion"); d != "" {
		v, rerr := lt.resolve(d)
		if rerr != nil || d == "$Default" {
			return nil, ec2Error("InvalidLaunchTemplateId.VersionNotFound", "Could not find launch template version %s for launch template %s.", d, lt.ID)
		}
		lt.Default = v.Number
	}
	return &struct {
		ec2Meta
		LaunchTemplate xLaunchTemplate `xml:"launchTemplate"`
	}{LaunchTemplate: s.xLaunchTemplate(lt)}, nil
}

func (s *Server) describeAvailabilityZones(f form) (any, *apiError) {
	type xAZ struct {
		ZoneName    string `xml:"zoneName"`
		ZoneID      string `xml:"zoneId"`
		ZoneState   string `xml:"zoneState"`
		RegionName  string `xml:"regionName"`
		ZoneType    string `xml:"zoneType"`
		OptInStatus string `xml:"optInStatus"`
	}
	out := &struct {
		ec2Meta
		AvailabilityZoneInfo []xAZ `xml:"availabilityZoneInfo>item"`
	}{}
	names := f.list("ZoneName")
	for k, z := range s.opts.Zones {
		if len(names) > 0 && !contains(names, z) {
			continue
		}
		out.AvailabilityZoneInfo = append(out.AvailabilityZoneInfo, xAZ{
			ZoneName: z, ZoneID: fmt.Sprintf("%s-az%d", regionShort(s.opts.Region), k+1), ZoneState: "available",
			RegionName: s.opts.Region, ZoneType: "availability-zone", OptInStatus: "opt-in-not-required",
		})
	}
	return out, nil
}

// regionShort turns us-east-1 into use1 (the zone-id prefix).
func regionShort(region string) string {
	parts := strings.Split(region, "-")
	if len(parts) != 3 {
		return region
	}
	return parts[0] + parts[1][:1] + parts[2]
}
