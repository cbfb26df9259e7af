package aws

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/recycler/recycler/internal/cloud"
)

// Records: every change the provider makes is first written as a tag on the object it
// changes (cloud.Tag*), so a retry, a resume or a rollback from the cloud alone can
// tell what this execution did. These helpers write, read and remove them.

func requireExecution(what, id string) error {
	if strings.TrimSpace(id) == "" {
		return fmt.Errorf("%s: no execution id: every change is recorded with the execution that makes it: %w", what, cloud.ErrValidation)
	}
	return nil
}

func (p *Provider) stamp() string { return p.clock.Now().UTC().Format(time.RFC3339) }

// tagInstances writes tags on instances (EC2 CreateTags: one call, ≤ 1000 ids).
func (p *Provider) tagInstances(ctx context.Context, ids []string, tags map[string]string) error {
	if len(ids) == 0 {
		return nil
	}
	var list []ec2types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		list = append(list, ec2types.Tag{Key: sdkaws.String(k), Value: sdkaws.String(tags[k])})
	}
	if _, err := p.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: list}); err != nil {
		return classify(fmt.Sprintf("record %v on %s", slices.Sorted(maps.Keys(tags)), strings.Join(ids, ",")), err)
	}
	return nil
}

// untagInstances removes tag keys from instances.
func (p *Provider) untagInstances(ctx context.Context, ids []string, keys ...string) error {
	if len(ids) == 0 {
		return nil
	}
	var list []ec2types.Tag
	for _, k := range keys {
		list = append(list, ec2types.Tag{Key: sdkaws.String(k)})
	}
	if _, err := p.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids, Tags: list}); err != nil {
		return classify(fmt.Sprintf("remove records %v from %s", keys, strings.Join(ids, ",")), err)
	}
	return nil
}

// instanceTags returns the tags of the instances that exist (EC2 DescribeInstances).
func (p *Provider) instanceTags(ctx context.Context, ids []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	found, err := p.describeEC2(ctx, ids)
	if err != nil {
		return nil, err
	}
	for id, in := range found {
		out[id] = tagMap(in.Tags)
	}
	return out, nil
}

// taggedInstances finds the instances whose tag key has one of values (any value
// when values is nil), with their tags (one DescribeInstances with a tag filter,
// paged). Terminated instances are left out.
func (p *Provider) taggedInstances(ctx context.Context, key string, values []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	filter := ec2types.Filter{Name: sdkaws.String("tag:" + key), Values: values}
	switch {
	case values == nil:
		filter = ec2types.Filter{Name: sdkaws.String("tag-key"), Values: []string{key}}
	case len(values) == 0:
		return out, nil
	}
	in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{filter}}
	for {
		res, err := p.ec2.DescribeInstances(ctx, in)
		if err != nil {
			return nil, classify("find instances tagged "+key, err)
		}
		for _, r := range res.Reservations {
			for _, inst := range r.Instances {
				if inst.State != nil && inst.State.Name == ec2types.InstanceStateNameTerminated {
					continue
				}
				out[sdkaws.ToString(inst.InstanceId)] = tagMap(inst.Tags)
			}
		}
		if sdkaws.ToString(res.NextToken) == "" {
			return out, nil
		}
		in.NextToken = res.NextToken
	}
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
	}
	return m
}

// tagGroup writes tags on the group itself (not propagated to new instances).
func (p *Provider) tagGroup(ctx context.Context, group string, tags map[string]string) error {
	var list []asgtypes.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		list = append(list, asgtypes.Tag{ResourceId: sdkaws.String(group), ResourceType: sdkaws.String("auto-scaling-group"),
			Key: sdkaws.String(k), Value: sdkaws.String(tags[k]), PropagateAtLaunch: sdkaws.Bool(false)})
	}
	if _, err := p.asg.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: list}); err != nil {
		return classify(fmt.Sprintf("record %v on group %s", slices.Sorted(maps.Keys(tags)), group), err)
	}
	return nil
}

func (p *Provider) untagGroup(ctx context.Context, group string, keys ...string) error {
	var list []asgtypes.Tag
	for _, k := range keys {
		list = append(list, asgtypes.Tag{ResourceId: sdkaws.String(group), ResourceType: sdkaws.String("auto-scaling-group"), Key: sdkaws.String(k)})
	}
	if _, err := p.asg.DeleteTags(ctx, &autoscaling.DeleteTagsInput{Tags: list}); err != nil {
		return classify(fmt.Sprintf("remove records %v from group %s", keys, group), err)
	}
	return nil
}

// maxRaised reads the group's TagMaxRaised ("before:after").
func maxRaised(g cloud.Group) (before, after int32, ok bool) {
	b, a, found := strings.Cut(g.Tags[cloud.TagMaxRaised], ":")
	if !found {
		return 0, 0, false
	}
	bn, err1 := strconv.ParseInt(b, 10, 32)
	an, err2 := strconv.ParseInt(a, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return int32(bn), int32(an), true
}

// protectInstances sets ProtectedFromScaleIn on group members (≤ 50 ids per call).
func (p *Provider) protectInstances(ctx context.Context, group string, ids []string, protect bool) error {
	for _, chunk := range chunks(ids, asgInstancesChunk) {
		if _, err := p.asg.SetInstanceProtection(ctx, &autoscaling.SetInstanceProtectionInput{
			AutoScalingGroupName: &group, InstanceIds: chunk, ProtectedFromScaleIn: sdkaws.Bool(protect),
		}); err != nil {
			return classify(fmt.Sprintf("set scale-in protection of %s to %v", strings.Join(chunk, ","), protect), err)
		}
	}
	return nil
}

// movedAnyway tells whether a move call that failed had in fact happened: the SDK
// retries a call whose answer was lost (a 5xx after the change took effect), and the
// retry is refused because the instances are no longer where the call moves them
// from. It re-reads the group: true when every id is in one of states (or, with
// gone, no longer in the group at all).
func (p *Provider) movedAnyway(ctx context.Context, callErr error, group string, ids []string, gone bool, states ...string) bool {
	if code, _ := apiCode(callErr); code != codeValidation {
		return false
	}
	g, err := p.describeGroup(ctx, group)
	if err != nil {
		return false
	}
	for _, id := range ids {
		gi, ok := g.Instance(id)
		if !ok && gone {
			continue
		}
		arrived := ok && (slices.Contains(states, gi.Lifecycle) || slices.Contains(states, cloud.LifecyclePending) && pending(gi.Lifecycle))
		if !arrived {
			return false
		}
	}
	return true
}

// Recorded implements cloud.Describer.
func (p *Provider) Recorded(ctx context.Context) ([]cloud.Instance, error) {
	tagged, err := p.taggedInstances(ctx, cloud.TagExecution, nil)
	if err != nil {
		return nil, err
	}
	return p.Instances(ctx, slices.Sorted(maps.Keys(tagged))...)
}
