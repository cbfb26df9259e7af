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
	plan, err := p.planSurge(ctx, g, ids, opts, &rec)
	if err != nil {
		return cloud.SurgeRecord{}, err
	}
	// The launches a standby causes come after its own activity, which EnterStandby
	// answers with; only a repeated call or the desired+1 path looks activities up.
	if err := p.markStart(ctx, &rec, plan.retried, plan.retried || len(plan.toDesired) > 0); err != nil {
		return cloud.SurgeRecord{}, err
	}
	plan.now = p.stamp()
	var did surgeDone
	err = p.surgeSetup(ctx, g, plan, opts, &rec, &did)
	if err == nil {
		err = p.surgeMove(ctx, g, plan, opts, &rec, &did)
	}
	if err != nil && !did.surged {
		// Nothing entered standby: undo this call's own changes to the group, or a
		// repeated Surge would take a raised MaxSize or our suspension for someone
		// else's and never restore them.
		err = errors.Join(err, p.undoSetup(ctx, rec, did.raised, did.suspended, did.wrote))
	}
	return rec, err
}

// surgePlan is what a Surge call does, decided from one read of the group.
type surgePlan struct {
	group     string
	now       string   // when, as this call's records say it
	toStandby []string // InService: enter standby
	toDesired []string // Terminating:Wait: desired capacity +1 each
	// retried: some instances already are in standby (a repeated call, or a person's).
	retried bool
	need    int32 // the MaxSize every live instance plus one launch per surged instance needs
	raise   bool  // need is above MaxSize: raise it (allowed)
	suspend bool  // suspend AZRebalance (it is not yet)
}

// surgeDone is what a Surge call changed, so a call that fails before any instance
// entered standby can undo exactly that.
type surgeDone struct {
	wrote     []string // group records written
	raised    bool     // MaxSize raised
	suspended bool     // AZRebalance suspended
	surged    bool     // an instance entered standby
}

// planSurge sorts the instances by how they are surged (recording them and the
// group's snapshot in rec) and checks the headroom.
func (p *Provider) planSurge(ctx context.Context, g cloud.Group, ids []string, opts cloud.SurgeOptions, rec *cloud.SurgeRecord) (surgePlan, error) {
	plan := surgePlan{group: g.Name}
	var missing []string
	for _, id := range ids {
		gi, ok := g.Instance(id)
		if !ok {
			missing = append(missing, id)
			continue
		}
		switch gi.Lifecycle {
		case cloud.LifecycleInService:
			plan.toStandby = append(plan.toStandby, id)
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeStandby})
		case cloud.LifecycleStandby, cloud.LifecycleEnteringStandby:
			// A repeated call (the first one's answer was lost) or an instance a person
			// put in standby: either way the group is already replacing it.
			plan.retried = true
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeStandby})
		case cloud.LifecycleTerminatingWait:
			plan.toDesired = append(plan.toDesired, id)
			rec.Instances = append(rec.Instances, cloud.SurgedInstance{ID: id, Method: cloud.SurgeDesired})
		default:
			return surgePlan{}, fmt.Errorf("surge %s in group %s: instance is %s; only InService (standby) or Terminating:Wait (desired+1) instances can be surged: %w",
				id, plan.group, gi.Lifecycle, cloud.ErrValidation)
		}
	}
	if len(missing) > 0 {
		return surgePlan{}, p.notInGroup(ctx, "surge", plan.group, missing)
	}
	for _, in := range g.Instances {
		// On a repeated call, an instance still launching is most likely the
		// replacement the first call asked for: keep it out of the snapshot.
		if plan.retried && pending(in.Lifecycle) {
			continue
		}
		rec.Snapshot = append(rec.Snapshot, in.ID)
	}
	sort.Strings(rec.Snapshot)

	// Headroom: every live instance plus one launch per surged instance must fit.
	surging := int32(len(plan.toStandby) + len(plan.toDesired))
	plan.need = surging
	for _, in := range g.Instances {
		if live(in.Lifecycle) {
			plan.need++
		}
	}
	plan.raise = plan.need > g.MaxSize && surging > 0
	if plan.raise && !opts.AllowRaiseMax {
		return surgePlan{}, fmt.Errorf("surge %s: group %s has %d live instances and MaxSize %d, %d more do not fit; raise MaxSize or allow Recycler to raise it temporarily: %w",
			strings.Join(ids, ","), plan.group, plan.need-surging, g.MaxSize, surging, cloud.ErrNoHeadroom)
	}
	// A MaxSize raised by an earlier attempt (or a concurrent recycle) is on record.
	if before, after, ok := maxRaised(g); ok && g.MaxSize == after {
		rec.MaxRaised, rec.MaxBefore, rec.MaxAfter = true, before, after
	}
	plan.suspend = (len(plan.toStandby) > 0 || plan.retried) && !g.Suspended(cloud.ProcessAZRebalance)
	return plan, nil
}

// surgeSetup prepares the group: its records of this step (one call, before either
// change), then MaxSize raised and AZRebalance suspended as the plan says.
func (p *Provider) surgeSetup(ctx context.Context, g cloud.Group, plan surgePlan, opts cloud.SurgeOptions, rec *cloud.SurgeRecord, did *surgeDone) error {
	maxBefore := g.MaxSize
	if rec.MaxRaised {
		maxBefore = rec.MaxBefore
	}
	records := map[string]string{}
	if plan.raise {
		records[cloud.TagMaxRaised] = fmt.Sprintf("%d:%d", maxBefore, plan.need)
	}
	if plan.suspend {
		records[cloud.TagSuspendedAZRebalance] = opts.ExecutionID + "@" + plan.now
	}
	if len(records) > 0 {
		if err := p.tagGroup(ctx, plan.group, records); err != nil {
			return err
		}
		did.wrote = slices.Sorted(maps.Keys(records))
	}
	if plan.raise {
		if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
			AutoScalingGroupName: &plan.group, MaxSize: sdkaws.Int32(plan.need),
		}); err != nil {
			return classify(fmt.Sprintf("raise MaxSize of %s from %d to %d", plan.group, g.MaxSize, plan.need), err)
		}
		rec.MaxRaised, rec.MaxBefore, rec.MaxAfter, did.raised = true, maxBefore, plan.need, true
	}
	if len(plan.toStandby) == 0 && !plan.retried {
		return nil // no standby: AZRebalance does not matter
	}
	if !plan.suspend {
		// Already suspended: ours (a concurrent recycle, or this one repeated)
		// when our record is on the group; someone else's otherwise.
		rec.SuspendedAZRebalance = g.Tags[cloud.TagSuspendedAZRebalance] != ""
		return nil
	}
	if _, err := p.asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{
		AutoScalingGroupName: &plan.group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
	}); err != nil {
		return classify("suspend AZRebalance on "+plan.group, err)
	}
	rec.SuspendedAZRebalance, did.suspended = true, true
	return nil
}

// surgeMove starts the launches: InService instances enter standby, Terminating:Wait
// ones raise desired capacity; each is tagged with the execution first.
func (p *Provider) surgeMove(ctx context.Context, g cloud.Group, plan surgePlan, opts cloud.SurgeOptions, rec *cloud.SurgeRecord, did *surgeDone) error {
	if err := p.tagInstances(ctx, plan.toStandby, map[string]string{cloud.TagExecution: opts.ExecutionID, cloud.TagStandbyAt: plan.now}); err != nil {
		return err
	}
	for _, chunk := range chunks(plan.toStandby, standbyChunk) {
		out, err := p.asg.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
			AutoScalingGroupName: &plan.group, InstanceIds: chunk, ShouldDecrementDesiredCapacity: sdkaws.Bool(false),
		})
		if err != nil && !p.movedAnyway(ctx, err, plan.group, chunk, false, cloud.LifecycleEnteringStandby, cloud.LifecycleStandby) {
			return classify(fmt.Sprintf("enter standby %s in %s", strings.Join(chunk, ","), plan.group), err)
		}
		// The first chunk's activity is the oldest of this surge. Without one (a
		// lost answer, a cloud that answers none) FindReplacement goes by StartedAt.
		if out != nil && len(out.Activities) > 0 && !did.surged && rec.ActivitiesBefore == "" {
			rec.StandbyActivity = sdkaws.ToString(out.Activities[0].ActivityId)
		}
		did.surged = true
	}
	if len(plan.toDesired) == 0 {
		return nil
	}
	if err := p.tagInstances(ctx, plan.toDesired, map[string]string{cloud.TagExecution: opts.ExecutionID, cloud.TagDesiredRaisedAt: plan.now}); err != nil {
		return err
	}
	desired := g.Desired + int32(len(plan.toDesired))
	if _, err := p.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: &plan.group, DesiredCapacity: &desired, HonorCooldown: sdkaws.Bool(false),
	}); err != nil {
		return classify(fmt.Sprintf("set desired capacity of %s to %d", plan.group, desired), err)
	}
	return nil
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
