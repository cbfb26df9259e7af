package aws

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/recycler/recycler/internal/cloud"
)

// API limits on ids per call.
const (
	describeInstancesChunk = 500 // DescribeInstances: no hard limit documented; keep requests small
	asgInstancesChunk      = 50  // DescribeAutoScalingInstances: at most 50 ids
	standbyChunk           = 20  // EnterStandby / ExitStandby / DetachInstances: at most 20 ids
)

// EC2 tags that record which launch template an instance came from.
const (
	tagLaunchTemplateID      = "aws:ec2launchtemplate:id"
	tagLaunchTemplateVersion = "aws:ec2launchtemplate:version"
	tagASGName               = "aws:autoscaling:groupName"
)

var instanceIDInMessage = regexp.MustCompile(cloud.InstanceIDPattern)

func chunks(ids []string, n int) [][]string {
	var out [][]string
	for len(ids) > n {
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	if len(ids) > 0 {
		out = append(out, ids)
	}
	return out
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// Instances implements cloud.Describer.
func (p *Provider) Instances(ctx context.Context, ids ...string) ([]cloud.Instance, error) {
	ids = dedupe(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	if err := cloud.ValidateInstanceIDs(ids); err != nil {
		return nil, err
	}
	ec2s, err := p.describeEC2(ctx, ids)
	if err != nil {
		return nil, err
	}
	// Instances gone from EC2 cannot be in a group; ask Auto Scaling only about the rest.
	var existing []string
	for _, id := range ids {
		if _, ok := ec2s[id]; ok {
			existing = append(existing, id)
		}
	}
	asgs, err := p.describeASGInstances(ctx, existing)
	if err != nil {
		return nil, err
	}
	out := make([]cloud.Instance, 0, len(existing))
	for _, id := range existing {
		out = append(out, toInstance(ec2s[id], asgs[id]))
	}
	return out, nil
}

// Membership describes an instance's place in its group with one
// DescribeAutoScalingInstances call (group, lifecycle, zone, health, protection,
// launch template); no EC2 fields. An instance in no group is described as
// Instance does, so the answer tells "in no group" from ErrNotFound.
func (p *Provider) Membership(ctx context.Context, id string) (cloud.Instance, error) {
	if err := cloud.ValidateInstanceID(id); err != nil {
		return cloud.Instance{}, err
	}
	details, err := p.describeASGInstances(ctx, []string{id})
	if err != nil {
		return cloud.Instance{}, err
	}
	d, ok := details[id]
	if !ok {
		return p.Instance(ctx, id)
	}
	in := toInstance(ec2types.Instance{InstanceId: d.InstanceId}, d)
	in.AZ = sdkaws.ToString(d.AvailabilityZone)
	return in, nil
}

// Instance implements cloud.Describer.
func (p *Provider) Instance(ctx context.Context, id string) (cloud.Instance, error) {
	got, err := p.Instances(ctx, id)
	if err != nil {
		return cloud.Instance{}, err
	}
	if len(got) == 0 {
		return cloud.Instance{}, fmt.Errorf("instance %s does not exist (check the id and the region): %w", id, cloud.ErrNotFound)
	}
	return got[0], nil
}

// describeEC2 describes ids with DescribeInstances. AWS fails the whole call with
// InvalidInstanceID.NotFound when one id is unknown and names the unknown ids in the
// message; those are dropped and the call repeated once for the rest.
func (p *Provider) describeEC2(ctx context.Context, ids []string) (map[string]ec2types.Instance, error) {
	out := make(map[string]ec2types.Instance, len(ids))
	for _, chunk := range chunks(ids, describeInstancesChunk) {
		for attempt := 0; len(chunk) > 0; attempt++ {
			err := p.describeEC2Chunk(ctx, chunk, out)
			if err == nil {
				break
			}
			code, msg := apiCode(err)
			missing := instanceIDInMessage.FindAllString(msg, -1)
			if code != codeInstanceNotFound || len(missing) == 0 || attempt > 0 {
				return nil, classify("describe instances", err)
			}
			chunk = without(chunk, missing)
		}
	}
	return out, nil
}

func (p *Provider) describeEC2Chunk(ctx context.Context, ids []string, into map[string]ec2types.Instance) error {
	in := &ec2.DescribeInstancesInput{InstanceIds: ids}
	for {
		res, err := p.ec2.DescribeInstances(ctx, in)
		if err != nil {
			return err
		}
		for _, r := range res.Reservations {
			for _, inst := range r.Instances {
				into[sdkaws.ToString(inst.InstanceId)] = inst
			}
		}
		if sdkaws.ToString(res.NextToken) == "" {
			return nil
		}
		in.NextToken = res.NextToken
	}
}

func without(ids, drop []string) []string {
	d := make(map[string]bool, len(drop))
	for _, id := range drop {
		d[id] = true
	}
	var out []string
	for _, id := range ids {
		if !d[id] {
			out = append(out, id)
		}
	}
	return out
}

func (p *Provider) describeASGInstances(ctx context.Context, ids []string) (map[string]asgtypes.AutoScalingInstanceDetails, error) {
	out := make(map[string]asgtypes.AutoScalingInstanceDetails, len(ids))
	for _, chunk := range chunks(ids, asgInstancesChunk) {
		in := &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: chunk}
		for {
			res, err := p.asg.DescribeAutoScalingInstances(ctx, in)
			if err != nil {
				return nil, classify("describe auto scaling instances", err)
			}
			for _, d := range res.AutoScalingInstances {
				out[sdkaws.ToString(d.InstanceId)] = d
			}
			if sdkaws.ToString(res.NextToken) == "" {
				break
			}
			in.NextToken = res.NextToken
		}
	}
	return out, nil
}

func toInstance(e ec2types.Instance, a asgtypes.AutoScalingInstanceDetails) cloud.Instance {
	in := cloud.Instance{
		ID:             sdkaws.ToString(e.InstanceId),
		ImageID:        sdkaws.ToString(e.ImageId),
		InstanceType:   string(e.InstanceType),
		PrivateDNSName: sdkaws.ToString(e.PrivateDnsName),
		LaunchTime:     sdkaws.ToTime(e.LaunchTime),
		Tags:           map[string]string{},
	}
	if e.State != nil {
		in.State = string(e.State.Name)
	}
	if e.Placement != nil {
		in.AZ = sdkaws.ToString(e.Placement.AvailabilityZone)
	}
	for _, t := range e.Tags {
		in.Tags[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
	}
	if a.InstanceId != nil {
		in.Group = sdkaws.ToString(a.AutoScalingGroupName)
		in.Lifecycle = sdkaws.ToString(a.LifecycleState)
		in.Health = sdkaws.ToString(a.HealthStatus)
		in.ProtectedFromScaleIn = sdkaws.ToBool(a.ProtectedFromScaleIn)
		in.LaunchConfiguration = sdkaws.ToString(a.LaunchConfigurationName)
		in.LaunchTemplate = toLaunchTemplate(a.LaunchTemplate)
	}
	// The EC2 tag always holds the number the instance was launched with, also when
	// the group's spec said $Latest/$Default.
	if lt := in.LaunchTemplate; lt != nil && lt.ResolvedVersion == 0 && (lt.ID == "" || lt.ID == in.Tags[tagLaunchTemplateID]) {
		lt.ResolvedVersion = versionNumber(in.Tags[tagLaunchTemplateVersion])
	}
	if in.LaunchTemplate == nil && in.Tags[tagLaunchTemplateID] != "" {
		v := in.Tags[tagLaunchTemplateVersion]
		in.LaunchTemplate = &cloud.LaunchTemplate{ID: in.Tags[tagLaunchTemplateID], Version: v, ResolvedVersion: versionNumber(v)}
	}
	return in
}

// toLaunchTemplate converts a spec; a numeric version is resolved on the spot (an
// instance's spec always carries the number it was launched with).
func toLaunchTemplate(s *asgtypes.LaunchTemplateSpecification) *cloud.LaunchTemplate {
	if s == nil || (s.LaunchTemplateId == nil && s.LaunchTemplateName == nil) {
		return nil
	}
	v := sdkaws.ToString(s.Version)
	return &cloud.LaunchTemplate{
		ID:              sdkaws.ToString(s.LaunchTemplateId),
		Name:            sdkaws.ToString(s.LaunchTemplateName),
		Version:         v,
		ResolvedVersion: versionNumber(v),
	}
}

func versionNumber(v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Group implements cloud.Describer.
func (p *Provider) Group(ctx context.Context, name string) (cloud.Group, error) {
	g, err := p.describeGroup(ctx, name)
	if err != nil {
		return cloud.Group{}, err
	}
	if err := p.resolveTemplates(ctx, &g); err != nil {
		return cloud.Group{}, err
	}
	res, err := p.asg.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: &name})
	if err != nil {
		return cloud.Group{}, classify("describe lifecycle hooks of "+name, err)
	}
	for _, h := range res.LifecycleHooks {
		g.LifecycleHooks = append(g.LifecycleHooks, cloud.LifecycleHook{
			Name:             sdkaws.ToString(h.LifecycleHookName),
			Transition:       sdkaws.ToString(h.LifecycleTransition),
			HeartbeatTimeout: seconds(h.HeartbeatTimeout),
			GlobalTimeout:    seconds(h.GlobalTimeout),
			DefaultResult:    sdkaws.ToString(h.DefaultResult),
		})
	}
	return g, nil
}

// describeGroup is one DescribeAutoScalingGroups call; launch template versions stay
// as configured.
func (p *Provider) describeGroup(ctx context.Context, name string) (cloud.Group, error) {
	if err := cloud.ValidateGroupName(name); err != nil {
		return cloud.Group{}, err
	}
	res, err := p.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{name},
	})
	if err != nil {
		return cloud.Group{}, classify("describe group "+name, err)
	}
	for _, g := range res.AutoScalingGroups {
		if sdkaws.ToString(g.AutoScalingGroupName) == name {
			return toGroup(g), nil
		}
	}
	return cloud.Group{}, fmt.Errorf("auto scaling group %q does not exist in this region: %w", name, cloud.ErrNotFound)
}

func toGroup(g asgtypes.AutoScalingGroup) cloud.Group {
	out := cloud.Group{
		Name:                sdkaws.ToString(g.AutoScalingGroupName),
		MinSize:             sdkaws.ToInt32(g.MinSize),
		MaxSize:             sdkaws.ToInt32(g.MaxSize),
		Desired:             sdkaws.ToInt32(g.DesiredCapacity),
		LaunchTemplate:      toLaunchTemplate(g.LaunchTemplate),
		LaunchConfiguration: sdkaws.ToString(g.LaunchConfigurationName),
		AZs:                 g.AvailabilityZones,
	}
	if mip := g.MixedInstancesPolicy; mip != nil && mip.LaunchTemplate != nil {
		mi := &cloud.MixedInstances{}
		if lt := toLaunchTemplate(mip.LaunchTemplate.LaunchTemplateSpecification); lt != nil {
			mi.LaunchTemplate = *lt
		}
		for _, o := range mip.LaunchTemplate.Overrides {
			mi.Overrides = append(mi.Overrides, cloud.Override{
				InstanceType:     sdkaws.ToString(o.InstanceType),
				WeightedCapacity: sdkaws.ToString(o.WeightedCapacity),
				LaunchTemplate:   toLaunchTemplate(o.LaunchTemplateSpecification),
			})
		}
		out.MixedInstances = mi
	}
	for _, sp := range g.SuspendedProcesses {
		out.SuspendedProcesses = append(out.SuspendedProcesses, sdkaws.ToString(sp.ProcessName))
	}
	for _, t := range g.Tags {
		if out.Tags == nil {
			out.Tags = map[string]string{}
		}
		out.Tags[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
	}
	for _, in := range g.Instances {
		out.Instances = append(out.Instances, cloud.GroupInstance{
			ID:                   sdkaws.ToString(in.InstanceId),
			AZ:                   sdkaws.ToString(in.AvailabilityZone),
			Lifecycle:            string(in.LifecycleState),
			Health:               sdkaws.ToString(in.HealthStatus),
			InstanceType:         sdkaws.ToString(in.InstanceType),
			LaunchTemplate:       toLaunchTemplate(in.LaunchTemplate),
			LaunchConfiguration:  sdkaws.ToString(in.LaunchConfigurationName),
			ProtectedFromScaleIn: sdkaws.ToBool(in.ProtectedFromScaleIn),
		})
	}
	return out
}

// resolveTemplates replaces $Latest/$Default (and an empty version, which AWS reads
// as $Default) by numbers in the group's launch templates, with one
// DescribeLaunchTemplates call for all of them.
func (p *Provider) resolveTemplates(ctx context.Context, g *cloud.Group) error {
	var refs []*cloud.LaunchTemplate
	if g.LaunchTemplate != nil {
		refs = append(refs, g.LaunchTemplate)
	}
	if g.MixedInstances != nil {
		refs = append(refs, &g.MixedInstances.LaunchTemplate)
		for i := range g.MixedInstances.Overrides {
			if lt := g.MixedInstances.Overrides[i].LaunchTemplate; lt != nil {
				refs = append(refs, lt)
			}
		}
	}
	var byID, byName []string
	for _, r := range refs {
		if r.ResolvedVersion != 0 {
			continue
		}
		if r.ID != "" {
			byID = append(byID, r.ID)
		} else if r.Name != "" {
			byName = append(byName, r.Name)
		}
	}
	if len(byID) == 0 && len(byName) == 0 {
		return nil
	}
	type versions struct{ latest, def int64 }
	known := map[string]versions{}
	lookup := func(in *ec2.DescribeLaunchTemplatesInput) error {
		res, err := p.ec2.DescribeLaunchTemplates(ctx, in)
		if err != nil {
			return classify("describe launch templates of group "+g.Name, err)
		}
		for _, lt := range res.LaunchTemplates {
			v := versions{sdkaws.ToInt64(lt.LatestVersionNumber), sdkaws.ToInt64(lt.DefaultVersionNumber)}
			known[sdkaws.ToString(lt.LaunchTemplateId)] = v
			known["name:"+sdkaws.ToString(lt.LaunchTemplateName)] = v
		}
		return nil
	}
	if len(byID) > 0 {
		if err := lookup(&ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: dedupe(byID)}); err != nil {
			return err
		}
	}
	if len(byName) > 0 {
		if err := lookup(&ec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: dedupe(byName)}); err != nil {
			return err
		}
	}
	for _, r := range refs {
		if r.ResolvedVersion != 0 {
			continue
		}
		v, ok := known[r.ID]
		if !ok {
			v, ok = known["name:"+r.Name]
		}
		if !ok {
			return fmt.Errorf("group %s: launch template %s%s not found: %w", g.Name, r.ID, r.Name, cloud.ErrNotFound)
		}
		switch r.Version {
		case "$Latest":
			r.ResolvedVersion = v.latest
		case "$Default", "":
			r.ResolvedVersion = v.def
		default:
			return fmt.Errorf("group %s: launch template %s%s has version %q, want a number, $Latest or $Default: %w", g.Name, r.ID, r.Name, r.Version, cloud.ErrValidation)
		}
	}
	return nil
}

func seconds(n *int32) time.Duration { return time.Duration(sdkaws.ToInt32(n)) * time.Second }
