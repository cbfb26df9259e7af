package aws

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/recycler/recycler/internal/cloud"
)

// live reports whether an instance in this lifecycle state occupies room under MaxSize.
func live(lifecycle string) bool {
	switch lifecycle {
	case cloud.LifecycleTerminating, cloud.LifecycleTerminatingProc, cloud.LifecycleTerminated,
		cloud.LifecycleDetaching, cloud.LifecycleDetached:
		return false
	}
	return true
}

func pending(lifecycle string) bool { return strings.HasPrefix(lifecycle, cloud.LifecyclePending) }

// Surge implements cloud.Surger.
func (p *Provider) Surge(ctx context.Context, group string, ids []string, opts cloud.SurgeOptions) (cloud.SurgeRecord, error) {
	if err := cloud.ValidateGroupName(group); err != nil {
		return cloud.SurgeRecord{}, err
	}
	if err := cloud.ValidateInstanceIDs(ids); err != nil {
		return cloud.SurgeRecord{}, err
	}
	g, err := p.describeGroup(ctx, group)
	if err != nil {
		return cloud.SurgeRecord{}, fmt.Errorf("surge: %w", err)
	}
	rec := cloud.SurgeRecord{Group: group, DesiredBefore: g.Desired, MaxBefore: g.MaxSize, MaxAfter: g.MaxSize, StartedAt: p.clock.Now()}
	var toStandby, toDesired, missing []string
	retried := false
	for _, id := range ids {
		gi, ok := g.Instance(id)
		if !ok {
			missing = append(missing, id)
			continue
		}
		switch gi.Lifecycle {
		case cloud.LifecycleInService:
			toStandby = append(toStandby, id)
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeStandby})
		case cloud.LifecycleStandby, cloud.LifecycleEnteringStandby:
			// A repeated call (the first one's answer was lost) or an instance a person
			// put in standby: either way the group is already replacing it.
			retried = true
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeStandby})
		case cloud.LifecycleTerminatingWait:
			toDesired = append(toDesired, id)
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeDesired})
		default:
			return cloud.SurgeRecord{}, fmt.Errorf("surge %s in group %s: instance is %s; only InService (standby) or Terminating:Wait (desired+1) instances can be surged: %w",
				id, group, gi.Lifecycle, cloud.ErrValidation)
		}
	}
	if len(missing) > 0 {
		return cloud.SurgeRecord{}, p.notInGroup(ctx, "surge", group, missing)
	}
	for _, in := range g.Instances {
		// On a repeated call, an instance still launching is most likely the
		// replacement the first call asked for: keep it out of the snapshot.
		if retried && pending(in.Lifecycle) {
			continue
		}
		rec.Snapshot = append(rec.Snapshot, in.ID)
	}
	sort.Strings(rec.Snapshot)

	// Headroom: every live instance plus one launch per surged instance must fit.
	need := int32(len(toStandby) + len(toDesired))
	for _, in := range g.Instances {
		if live(in.Lifecycle) {
			need++
		}
	}
	raise := need > g.MaxSize && len(toStandby)+len(toDesired) > 0
	if raise && !opts.AllowRaiseMax {
		return cloud.SurgeRecord{}, fmt.Errorf("surge %s: group %s has %d live instances and MaxSize %d, %d more do not fit; raise MaxSize or allow Recycler to raise it temporarily: %w",
			strings.Join(ids, ","), group, need-int32(len(toStandby)+len(toDesired)), g.MaxSize, len(toStandby)+len(toDesired), cloud.ErrNoHeadroom)
	}

	acts, err := p.asg.DescribeScalingActivities(ctx, &autoscaling.DescribeScalingActivitiesInput{
		AutoScalingGroupName: &group, MaxRecords: sdkaws.Int32(1),
	})
	if err != nil {
		return cloud.SurgeRecord{}, classify("describe scaling activities of "+group, err)
	}
	if len(acts.Activities) > 0 {
		rec.ActivitiesBefore = sdkaws.ToString(acts.Activities[0].ActivityId)
	}

	suspendedNow, surged := false, false
	err = func() error {
		if raise {
			if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
				AutoScalingGroupName: &group, MaxSize: sdkaws.Int32(need),
			}); err != nil {
				return classify(fmt.Sprintf("raise MaxSize of %s from %d to %d", group, g.MaxSize, need), err)
			}
			rec.MaxRaised, rec.MaxAfter = true, need
		}
		if len(toStandby) > 0 || retried {
			switch {
			case !g.Suspended(cloud.ProcessAZRebalance):
				if _, err := p.asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{
					AutoScalingGroupName: &group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
				}); err != nil {
					return classify("suspend AZRebalance on "+group, err)
				}
				rec.SuspendedAZRebalance, suspendedNow = true, true
			default:
				// Already suspended: ours if some instance is in standby (a concurrent
				// surge of ours, or this one repeated); someone else's otherwise.
				rec.SuspendedAZRebalance = g.CountLifecycle(cloud.LifecycleStandby) > 0
			}
		}
		for _, chunk := range chunks(toStandby, standbyChunk) {
			if _, err := p.asg.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
				AutoScalingGroupName: &group, InstanceIds: chunk, ShouldDecrementDesiredCapacity: sdkaws.Bool(false),
			}); err != nil {
				return classify(fmt.Sprintf("enter standby %s in %s", strings.Join(chunk, ","), group), err)
			}
			surged = true
		}
		if len(toDesired) > 0 {
			desired := g.Desired + int32(len(toDesired))
			if _, err := p.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
				AutoScalingGroupName: &group, DesiredCapacity: &desired, HonorCooldown: sdkaws.Bool(false),
			}); err != nil {
				return classify(fmt.Sprintf("set desired capacity of %s to %d", group, desired), err)
			}
		}
		return nil
	}()
	if err != nil && !surged {
		// Nothing entered standby: undo this call's own changes to the group, or a
		// repeated Surge would take a raised MaxSize or our suspension for someone
		// else's and never restore them.
		err = errors.Join(err, p.undoSetup(ctx, rec, suspendedNow))
	}
	return rec, err
}

// undoSetup restores MaxSize and AZRebalance after a Surge that failed before any
// instance entered standby (best effort, also when ctx is already cancelled).
func (p *Provider) undoSetup(ctx context.Context, rec cloud.SurgeRecord, resume bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	if rec.MaxRaised {
		if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
			AutoScalingGroupName: &rec.Group, MaxSize: sdkaws.Int32(rec.MaxBefore),
		}); err != nil {
			errs = append(errs, classify(fmt.Sprintf("undo: restore MaxSize of %s to %d", rec.Group, rec.MaxBefore), err))
		}
	}
	if resume {
		if _, err := p.asg.ResumeProcesses(ctx, &autoscaling.ResumeProcessesInput{
			AutoScalingGroupName: &rec.Group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
		}); err != nil {
			errs = append(errs, classify("undo: resume AZRebalance on "+rec.Group, err))
		}
	}
	return errors.Join(errs...)
}

// notInGroup explains why ids are not members of group: gone (ErrNotFound), in no
// group or in another group (ErrNotInGroup). Only called on the error path.
func (p *Provider) notInGroup(ctx context.Context, what, group string, ids []string) error {
	found, err := p.Instances(ctx, ids...)
	if err != nil {
		return fmt.Errorf("%s: instances %s are not in group %s: %w", what, strings.Join(ids, ","), group, cloud.ErrNotInGroup)
	}
	byID := map[string]cloud.Instance{}
	for _, in := range found {
		byID[in.ID] = in
	}
	for _, id := range ids {
		in, ok := byID[id]
		switch {
		case !ok || in.State == cloud.StateTerminated:
			return fmt.Errorf("%s: instance %s does not exist (check the id and the region): %w", what, id, cloud.ErrNotFound)
		case in.Group == "":
			return fmt.Errorf("%s: instance %s is in no Auto Scaling group (only group members can be recycled): %w", what, id, cloud.ErrNotInGroup)
		default:
			return fmt.Errorf("%s: instance %s is in group %s, not %s: %w", what, id, in.Group, group, cloud.ErrNotInGroup)
		}
	}
	return nil
}

// FindReplacement implements cloud.Surger.
func (p *Provider) FindReplacement(ctx context.Context, rec cloud.SurgeRecord) (cloud.Replacement, error) {
	g, err := p.describeGroup(ctx, rec.Group)
	if err != nil {
		return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
	}
	var r cloud.Replacement
	for _, in := range newInstances(g, rec) {
		switch {
		case in.Lifecycle == cloud.LifecycleInService:
			r.InService = append(r.InService, in.ID)
		case pending(in.Lifecycle):
			r.Pending = append(r.Pending, in.ID)
		}
	}
	r.Ready = len(r.InService) >= len(rec.Instances)
	if r.Ready || len(r.InService)+len(r.Pending) >= len(rec.Instances) {
		return r, nil
	}
	failed, err := p.failedLaunchSince(ctx, rec)
	if err != nil {
		return r, err
	}
	if failed != nil {
		return r, &cloud.LaunchFailedError{Group: rec.Group, Activity: *failed}
	}
	return r, nil
}

func newInstances(g cloud.Group, rec cloud.SurgeRecord) []cloud.GroupInstance {
	old := make(map[string]bool, len(rec.Snapshot))
	for _, id := range rec.Snapshot {
		old[id] = true
	}
	var out []cloud.GroupInstance
	for _, in := range g.Instances {
		if !old[in.ID] {
			out = append(out, in)
		}
	}
	return out
}

// failedLaunchSince returns the newest failed launch activity started after the
// surge (activities are listed newest first; the walk stops at rec.ActivitiesBefore).
func (p *Provider) failedLaunchSince(ctx context.Context, rec cloud.SurgeRecord) (*cloud.ScalingActivity, error) {
	in := &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: &rec.Group, MaxRecords: sdkaws.Int32(20)}
	for page := 0; page < 5; page++ {
		res, err := p.asg.DescribeScalingActivities(ctx, in)
		if err != nil {
			return nil, classify("describe scaling activities of "+rec.Group, err)
		}
		for _, a := range res.Activities {
			if rec.ActivitiesBefore != "" && sdkaws.ToString(a.ActivityId) == rec.ActivitiesBefore {
				return nil, nil
			}
			if rec.ActivitiesBefore == "" && sdkaws.ToTime(a.StartTime).Before(rec.StartedAt) {
				return nil, nil
			}
			if isFailedLaunch(a) {
				act := toActivity(a)
				return &act, nil
			}
		}
		if sdkaws.ToString(res.NextToken) == "" {
			return nil, nil
		}
		in.NextToken = res.NextToken
	}
	return nil, nil
}

func isFailedLaunch(a asgtypes.Activity) bool {
	if a.StatusCode != asgtypes.ScalingActivityStatusCodeFailed && a.StatusCode != asgtypes.ScalingActivityStatusCodeCancelled {
		return false
	}
	return strings.Contains(strings.ToLower(sdkaws.ToString(a.Description)), "launch")
}

func toActivity(a asgtypes.Activity) cloud.ScalingActivity {
	return cloud.ScalingActivity{
		ID:            sdkaws.ToString(a.ActivityId),
		Description:   sdkaws.ToString(a.Description),
		Cause:         sdkaws.ToString(a.Cause),
		Status:        string(a.StatusCode),
		StatusMessage: sdkaws.ToString(a.StatusMessage),
		Start:         sdkaws.ToTime(a.StartTime),
		End:           sdkaws.ToTime(a.EndTime),
	}
}

// Rollback implements cloud.Surger.
func (p *Provider) Rollback(ctx context.Context, rec cloud.SurgeRecord) error {
	if err := cloud.ValidateGroupName(rec.Group); err != nil {
		return err
	}
	g, err := p.describeGroup(ctx, rec.Group)
	if cloud.ErrorName(err) == "NotFound" {
		return nil // the group is gone: nothing left to undo
	}
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	ours := map[string]bool{}
	var inStandby []string
	for _, in := range rec.Instances {
		ours[in.ID] = true
		if gi, ok := g.Instance(in.ID); ok && gi.Lifecycle == cloud.LifecycleStandby {
			inStandby = append(inStandby, in.ID)
		}
	}
	desired := g.Desired
	for _, chunk := range chunks(inStandby, standbyChunk) {
		if _, err := p.asg.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: &rec.Group, InstanceIds: chunk}); err != nil {
			return classify(fmt.Sprintf("rollback: exit standby %s in %s", strings.Join(chunk, ","), rec.Group), err)
		}
		desired += int32(len(chunk)) // ExitStandby increments desired capacity
	}
	// Surplus: what the surge (and the ExitStandby above) added to desired capacity.
	surplus := min(max(desired-rec.DesiredBefore, 0), int32(len(rec.Instances)))
	if rec.KeepReplacements {
		// Pods may run on the replacements: keep them, and the MaxSize that fits them.
		surplus, rec.MaxRaised = 0, false
	}
	if surplus > 0 {
		// Remove replacements, those still launching first, youngest last-listed first.
		cands := newInstances(g, rec)
		sort.SliceStable(cands, func(i, j int) bool { return pending(cands[i].Lifecycle) && !pending(cands[j].Lifecycle) })
		for _, c := range cands {
			if surplus == 0 {
				break
			}
			if !live(c.Lifecycle) || c.Lifecycle == cloud.LifecycleStandby || c.Lifecycle == cloud.LifecycleTerminatingWait {
				continue
			}
			if _, err := p.asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
				InstanceId: &c.ID, ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
			}); err != nil {
				return classify(fmt.Sprintf("rollback: terminate surplus replacement %s in %s", c.ID, rec.Group), err)
			}
			surplus--
			desired--
		}
		if surplus > 0 {
			target := max(desired-surplus, g.MinSize)
			if _, err := p.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
				AutoScalingGroupName: &rec.Group, DesiredCapacity: &target, HonorCooldown: sdkaws.Bool(false),
			}); err != nil {
				return classify(fmt.Sprintf("rollback: set desired capacity of %s back to %d", rec.Group, target), err)
			}
		}
	}
	standbyLeft := 0
	for _, in := range g.Instances {
		if in.Lifecycle == cloud.LifecycleStandby && !ours[in.ID] {
			standbyLeft++
		}
	}
	return p.release(ctx, g, rec, standbyLeft)
}

// release restores what a surge changed on the group itself: MaxSize (only if it
// still has the value the surge set) and AZRebalance (only if the surge suspended it
// and no instance is left in standby).
func (p *Provider) release(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, standbyLeft int) error {
	if rec.MaxRaised && g.MaxSize == rec.MaxAfter {
		if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
			AutoScalingGroupName: &rec.Group, MaxSize: sdkaws.Int32(rec.MaxBefore),
		}); err != nil {
			return classify(fmt.Sprintf("restore MaxSize of %s to %d", rec.Group, rec.MaxBefore), err)
		}
	}
	if rec.SuspendedAZRebalance && standbyLeft == 0 && g.Suspended(cloud.ProcessAZRebalance) {
		if _, err := p.asg.ResumeProcesses(ctx, &autoscaling.ResumeProcessesInput{
			AutoScalingGroupName: &rec.Group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
		}); err != nil {
			return classify("resume AZRebalance on "+rec.Group, err)
		}
	}
	return nil
}
