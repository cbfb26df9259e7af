package aws

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

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
	if err := requireExecution("surge", opts.ExecutionID); err != nil {
		return cloud.SurgeRecord{}, err
	}
	g, err := p.describeGroup(ctx, group)
	if err != nil {
		return cloud.SurgeRecord{}, fmt.Errorf("surge: %w", err)
	}
	rec := cloud.SurgeRecord{Group: group, ExecutionID: opts.ExecutionID, DesiredBefore: g.Desired, MaxBefore: g.MaxSize, MaxAfter: g.MaxSize, StartedAt: p.clock.Now()}
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
	// A MaxSize raised by an earlier attempt (or a concurrent recycle) is on record.
	if before, after, ok := maxRaised(g); ok && g.MaxSize == after {
		rec.MaxRaised, rec.MaxBefore, rec.MaxAfter = true, before, after
	}

	// The launches a standby causes come after its own activity, which EnterStandby
	// answers with; only a repeated call or the desired+1 path looks activities up.
	if err := p.markStart(ctx, &rec, retried, retried || len(toDesired) > 0); err != nil {
		return cloud.SurgeRecord{}, err
	}

	now := p.stamp()
	suspend := (len(toStandby) > 0 || retried) && !g.Suspended(cloud.ProcessAZRebalance)
	maxBefore := g.MaxSize
	if rec.MaxRaised {
		maxBefore = rec.MaxBefore
	}
	// The group's records of this step, written in one call before either change.
	records := map[string]string{}
	if raise {
		records[cloud.TagMaxRaised] = fmt.Sprintf("%d:%d", maxBefore, need)
	}
	if suspend {
		records[cloud.TagSuspendedAZRebalance] = opts.ExecutionID + "@" + now
	}
	var wrote []string // group records this call wrote (undone if nothing entered standby)
	raisedNow, suspendedNow, surged := false, false, false
	err = func() error {
		if len(records) > 0 {
			if err := p.tagGroup(ctx, group, records); err != nil {
				return err
			}
			wrote = slices.Sorted(maps.Keys(records))
		}
		if raise {
			if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
				AutoScalingGroupName: &group, MaxSize: sdkaws.Int32(need),
			}); err != nil {
				return classify(fmt.Sprintf("raise MaxSize of %s from %d to %d", group, g.MaxSize, need), err)
			}
			rec.MaxRaised, rec.MaxBefore, rec.MaxAfter, raisedNow = true, maxBefore, need, true
		}
		if len(toStandby) > 0 || retried {
			switch {
			case suspend:
				if _, err := p.asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{
					AutoScalingGroupName: &group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
				}); err != nil {
					return classify("suspend AZRebalance on "+group, err)
				}
				rec.SuspendedAZRebalance, suspendedNow = true, true
			default:
				// Already suspended: ours (a concurrent recycle, or this one repeated)
				// when our record is on the group; someone else's otherwise.
				rec.SuspendedAZRebalance = g.Tags[cloud.TagSuspendedAZRebalance] != ""
			}
		}
		if err := p.tagInstances(ctx, toStandby, map[string]string{cloud.TagExecution: opts.ExecutionID, cloud.TagStandbyAt: now}); err != nil {
			return err
		}
		for _, chunk := range chunks(toStandby, standbyChunk) {
			out, err := p.asg.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
				AutoScalingGroupName: &group, InstanceIds: chunk, ShouldDecrementDesiredCapacity: sdkaws.Bool(false),
			})
			if err != nil && !p.movedAnyway(ctx, err, group, chunk, false, cloud.LifecycleEnteringStandby, cloud.LifecycleStandby) {
				return classify(fmt.Sprintf("enter standby %s in %s", strings.Join(chunk, ","), group), err)
			}
			// The first chunk's activity is the oldest of this surge. Without one (a
			// lost answer, a cloud that answers none) FindReplacement goes by StartedAt.
			if out != nil && len(out.Activities) > 0 && !surged && rec.ActivitiesBefore == "" {
				rec.StandbyActivity = sdkaws.ToString(out.Activities[0].ActivityId)
			}
			surged = true
		}
		if len(toDesired) > 0 {
			if err := p.tagInstances(ctx, toDesired, map[string]string{cloud.TagExecution: opts.ExecutionID, cloud.TagDesiredRaisedAt: now}); err != nil {
				return err
			}
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
		err = errors.Join(err, p.undoSetup(ctx, rec, raisedNow, suspendedNow, wrote))
	}
	return rec, err
}

// markStart records where the surge's activities begin, so FindReplacement reads
// only the launches after it: the group's newest activity now, or — for a repeated
// call, whose standby already happened — the time the first call recorded on the
// instances (its launch is older than any activity now).
func (p *Provider) markStart(ctx context.Context, rec *cloud.SurgeRecord, retried, lookup bool) error {
	if !lookup {
		return nil
	}
	if retried {
		tags, err := p.instanceTags(ctx, rec.IDs())
		if err != nil {
			return fmt.Errorf("surge: %w", err)
		}
		var first time.Time
		for _, in := range rec.Instances {
			t := tags[in.ID]
			at, err := time.Parse(time.RFC3339, t[cloud.TagStandbyAt])
			if err == nil && t[cloud.TagExecution] == rec.ExecutionID && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		if !first.IsZero() {
			rec.StartedAt = first
			return nil
		}
	}
	acts, err := p.asg.DescribeScalingActivities(ctx, &autoscaling.DescribeScalingActivitiesInput{
		AutoScalingGroupName: &rec.Group, MaxRecords: sdkaws.Int32(1),
	})
	if err != nil {
		return classify("describe scaling activities of "+rec.Group, err)
	}
	if len(acts.Activities) > 0 {
		rec.ActivitiesBefore = sdkaws.ToString(acts.Activities[0].ActivityId)
	}
	return nil
}

// undoSetup restores MaxSize and AZRebalance after a Surge that failed before any
// instance entered standby, and removes the records it wrote (best effort, also
// when ctx is already cancelled).
func (p *Provider) undoSetup(ctx context.Context, rec cloud.SurgeRecord, raised, resume bool, wrote []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	if raised {
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
	if len(wrote) > 0 && len(errs) == 0 {
		errs = append(errs, p.untagGroup(ctx, rec.Group, wrote...))
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
