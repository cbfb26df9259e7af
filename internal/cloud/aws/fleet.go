package aws

import (
	"context"
	"fmt"
	"sort"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/recycler/recycler/internal/cloud"
)

// What a fleet rollout needs beyond one recycle: groups found by tag, a group's
// members in one call (checked before every recycle of a rollout), its recent
// scaling activities (to measure boot times), and drift decided without a call per
// instance.

// GroupNamesByTags returns the names of the groups carrying every tag key=value
// (DescribeAutoScalingGroups with tag:<key> filters, all pages), sorted.
func (p *Provider) GroupNamesByTags(ctx context.Context, tags map[string]string) ([]string, error) {
	if len(tags) == 0 {
		return nil, fmt.Errorf("groups by tag: no tag given: %w", cloud.ErrValidation)
	}
	in := &autoscaling.DescribeAutoScalingGroupsInput{MaxRecords: sdkaws.Int32(100)}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		in.Filters = append(in.Filters, asgtypes.Filter{Name: sdkaws.String("tag:" + k), Values: []string{tags[k]}})
	}
	var names []string
	for {
		res, err := p.asg.DescribeAutoScalingGroups(ctx, in)
		if err != nil {
			return nil, classify("describe groups by tag", err)
		}
		for _, g := range res.AutoScalingGroups {
			names = append(names, sdkaws.ToString(g.AutoScalingGroupName))
		}
		if sdkaws.ToString(res.NextToken) == "" {
			break
		}
		in.NextToken = res.NextToken
	}
	sort.Strings(names)
	return names, nil
}

// GroupMembers describes a group with one DescribeAutoScalingGroups call: sizes,
// members and their lifecycle states, with launch template versions as configured
// (not resolved) and no lifecycle hooks. ErrNotFound if there is no such group.
func (p *Provider) GroupMembers(ctx context.Context, name string) (cloud.Group, error) {
	return p.describeGroup(ctx, name)
}

// ScalingActivities returns up to limit of the group's scaling activities, newest
// first (DescribeScalingActivities, 100 per page).
func (p *Provider) ScalingActivities(ctx context.Context, group string, limit int) ([]cloud.ScalingActivity, error) {
	if err := cloud.ValidateGroupName(group); err != nil {
		return nil, err
	}
	in := &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: &group, MaxRecords: sdkaws.Int32(int32(min(limit, 100)))}
	var out []cloud.ScalingActivity
	for len(out) < limit {
		res, err := p.asg.DescribeScalingActivities(ctx, in)
		if err != nil {
			return nil, classify("describe scaling activities of "+group, err)
		}
		for _, a := range res.Activities {
			out = append(out, toActivity(a))
		}
		if sdkaws.ToString(res.NextToken) == "" {
			break
		}
		in.NextToken = res.NextToken
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// DriftOf is Drift without a call: inst compared with g as Group returns it
// (launch template versions resolved). Use it to check every member of a group
// against one description of the group.
func (p *Provider) DriftOf(inst cloud.Instance, g cloud.Group) cloud.Drift {
	return compareLaunch(inst, g)
}
