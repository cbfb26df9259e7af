package aws

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/recycler/recycler/internal/cloud"
)

// Rollback implements cloud.Surger. It works from the records on the instances and
// the group (see records.go), so it undoes exactly what this execution did, also
// when the surge's answer was lost or the state file is gone.
func (p *Provider) Rollback(ctx context.Context, rec cloud.SurgeRecord) (cloud.RollbackResult, error) {
	var res cloud.RollbackResult
	if err := cloud.ValidateGroupName(rec.Group); err != nil {
		return res, err
	}
	if err := requireExecution("rollback", rec.ExecutionID); err != nil {
		return res, err
	}
	g, err := p.describeGroup(ctx, rec.Group)
	if cloud.ErrorName(err) == "NotFound" {
		res.Done = true // the group is gone: nothing left to undo
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("rollback: %w", err)
	}
	tags, err := p.instanceTags(ctx, rec.IDs())
	if err != nil {
		return res, fmt.Errorf("rollback: %w", err)
	}
	ours := recordedSurges(rec, tags)
	if waiting, err := p.backInService(ctx, g, rec, ours, tags, &res); err != nil || waiting != "" {
		res.Waiting = waiting
		return res, err
	}
	if rec.HoldReplacements {
		res.Done = true // the caller drains the replacements first
		return res, nil
	}

	id, err := p.identify(ctx, g, rec)
	if err != nil {
		return res, fmt.Errorf("rollback: %w", err)
	}
	if id.ambiguous != "" {
		res.Notes = append(res.Notes, id.ambiguous+"; none of them was terminated, so the group may stay one instance larger: scale it in when convenient")
	}
	if rec.KeepReplacements {
		for _, rid := range id.ids {
			if gi, ok := g.Instance(rid); ok && !strings.HasPrefix(gi.Lifecycle, cloud.LifecycleTerminating) {
				res.Kept = append(res.Kept, rid)
			}
		}
	} else if err := p.removeReplacements(ctx, g, rec, ours, tags, id, &res); err != nil {
		return res, err
	}
	note, err := p.release(ctx, g, rec, rec.KeepReplacements)
	if err != nil {
		return res, err
	}
	if note != "" {
		res.Notes = append(res.Notes, note)
	}
	if err := p.releaseReplacements(ctx, g, rec, res.Terminated...); err != nil {
		return res, err
	}
	var ids []string
	for _, in := range ours {
		ids = append(ids, in.ID)
	}
	if err := p.untagInstances(ctx, ids, cloud.TagExecution, cloud.TagStandbyAt, cloud.TagDesiredRaisedAt, cloud.TagExitStandbyAt, cloud.TagDesiredReturned); err != nil {
		return res, err
	}
	res.Done = true
	return res, nil
}

// recordedSurges are the instances of rec this execution recorded a surge on.
func recordedSurges(rec cloud.SurgeRecord, tags map[string]map[string]string) []cloud.SurgedInstance {
	var ours []cloud.SurgedInstance
	for _, in := range rec.Instances {
		t := tags[in.ID]
		if t[cloud.TagExecution] == rec.ExecutionID && (t[cloud.TagStandbyAt] != "" || t[cloud.TagDesiredRaisedAt] != "") {
			ours = append(ours, in)
		}
	}
	return ours
}

// backInService exits standby for our instances in Standby and says what it still
// waits for ("" once every one is back, or gone).
func (p *Provider) backInService(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, ours []cloud.SurgedInstance,
	tags map[string]map[string]string, res *cloud.RollbackResult) (string, error) {
	var exit, waiting []string
	for _, in := range ours {
		gi, ok := g.Instance(in.ID)
		switch {
		case !ok:
		case gi.Lifecycle == cloud.LifecycleStandby:
			exit = append(exit, in.ID)
		case gi.Lifecycle == cloud.LifecycleEnteringStandby:
			waiting = append(waiting, in.ID+" is EnteringStandby (AWS first deregisters it from the group's load balancers); it exits standby once it is in Standby")
		case pending(gi.Lifecycle):
			waiting = append(waiting, in.ID+" is "+gi.Lifecycle+" on its way back InService")
		}
	}
	if len(exit) > 0 {
		if err := p.tagInstances(ctx, exit, map[string]string{cloud.TagExitStandbyAt: p.stamp()}); err != nil {
			return "", err
		}
		for _, chunk := range chunks(exit, standbyChunk) {
			if _, err := p.asg.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: &rec.Group, InstanceIds: chunk}); err != nil &&
				!p.movedAnyway(ctx, err, rec.Group, chunk, false, cloud.LifecyclePending, cloud.LifecycleInService) {
				return "", classify(fmt.Sprintf("rollback: exit standby %s in %s", strings.Join(chunk, ","), rec.Group), err)
			}
		}
		res.ExitedStandby = exit
		return strings.Join(exit, ", ") + " left standby; waiting until InService", nil
	}
	if len(waiting) > 0 {
		return strings.Join(waiting, "; "), nil
	}
	for _, in := range ours {
		if tags[in.ID][cloud.TagExitStandbyAt] != "" {
			res.ExitedStandby = append(res.ExitedStandby, in.ID)
		}
	}
	return "", nil
}

// removeReplacements terminates, with decrement, the replacements the surge caused,
// and gives back the desired capacity of those that never launched (the +1 of an
// ExitStandby this rollback made, or of the surge's own desired+1).
func (p *Provider) removeReplacements(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, ours []cloud.SurgedInstance,
	tags map[string]map[string]string, id identified, res *cloud.RollbackResult) error {
	var term []string
	for _, rid := range id.ids {
		gi, ok := g.Instance(rid)
		switch {
		case !ok || strings.HasPrefix(gi.Lifecycle, cloud.LifecycleTerminating):
			res.Terminated = append(res.Terminated, rid) // already going (or gone)
		default:
			term = append(term, rid)
		}
	}
	if err := p.tagInstances(ctx, term, map[string]string{cloud.TagTerminatedAt: p.stamp(), cloud.TagExecution: rec.ExecutionID}); err != nil {
		return err
	}
	for _, rid := range term {
		if _, err := p.asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
			InstanceId: &rid, ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
		}); err != nil {
			return classify(fmt.Sprintf("rollback: terminate replacement %s in %s", rid, rec.Group), err)
		}
		res.Terminated = append(res.Terminated, rid)
	}
	if id.ambiguous != "" {
		return nil
	}
	// What this execution added to desired capacity and no termination gave back.
	var owed []string
	for _, in := range ours {
		t := tags[in.ID]
		if t[cloud.TagDesiredReturned] == "" && (t[cloud.TagExitStandbyAt] != "" || t[cloud.TagDesiredRaisedAt] != "") {
			owed = append(owed, in.ID)
		}
	}
	n := len(owed) - len(id.ids)
	if n <= 0 {
		return nil
	}
	target := max(g.Desired-int32(len(term))-int32(n), g.MinSize)
	if err := p.tagInstances(ctx, owed, map[string]string{cloud.TagDesiredReturned: strconv.Itoa(int(target))}); err != nil {
		return err
	}
	if _, err := p.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: &rec.Group, DesiredCapacity: &target, HonorCooldown: sdkaws.Bool(false),
	}); err != nil {
		return classify(fmt.Sprintf("rollback: give back the desired capacity of %s (%d)", rec.Group, target), err)
	}
	res.Notes = append(res.Notes, fmt.Sprintf("no replacement had launched; desired capacity of %s set back to %d", rec.Group, target))
	return nil
}

// release restores what surges of ours changed on the group itself, once no instance
// is left in standby (the last recycle to leave releases): MaxSize, only if it still
// has the value a surge set, and AZRebalance. Both follow the group's records, so a
// person's own suspension or MaxSize is never changed. keep (replacements kept)
// leaves MaxSize raised, and AZRebalance suspended while the zones are unbalanced:
// resumed, it would terminate an instance (the oldest: the one that just came back
// into service) without a drain. The returned note says what was left.
func (p *Provider) release(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, keep bool) (string, error) {
	if g.CountLifecycle(cloud.LifecycleStandby)+g.CountLifecycle(cloud.LifecycleEnteringStandby) > 0 {
		return "", nil
	}
	var done []string
	var note string
	if before, after, ok := maxRaised(g); ok {
		if !keep && g.MaxSize == after {
			if _, err := p.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
				AutoScalingGroupName: &rec.Group, MaxSize: sdkaws.Int32(before),
			}); err != nil {
				return "", classify(fmt.Sprintf("restore MaxSize of %s to %d", rec.Group, before), err)
			}
		}
		done = append(done, cloud.TagMaxRaised)
	}
	if g.Tags[cloud.TagSuspendedAZRebalance] != "" {
		switch lo, hi := zoneSpread(g); {
		case keep && hi-lo > 1:
			note = fmt.Sprintf("AZRebalance stays suspended on %s: its zones hold %d to %d instances, and a rebalance would terminate one without draining it; resume it (aws autoscaling resume-processes --auto-scaling-group-name %s --scaling-processes AZRebalance) once the group is scaled in",
				rec.Group, lo, hi, rec.Group)
		default:
			if g.Suspended(cloud.ProcessAZRebalance) {
				if _, err := p.asg.ResumeProcesses(ctx, &autoscaling.ResumeProcessesInput{
					AutoScalingGroupName: &rec.Group, ScalingProcesses: []string{cloud.ProcessAZRebalance},
				}); err != nil {
					return "", classify("resume AZRebalance on "+rec.Group, err)
				}
			}
			done = append(done, cloud.TagSuspendedAZRebalance)
		}
	}
	if len(done) == 0 {
		return note, nil
	}
	return note, p.untagGroup(ctx, rec.Group, done...)
}

// zoneSpread returns the fewest and the most counted instances (Pending*,
// InService) in one of the group's zones.
func zoneSpread(g cloud.Group) (lo, hi int) {
	per := map[string]int{}
	for _, az := range g.AZs {
		per[az] = 0
	}
	for _, in := range g.Instances {
		if in.Lifecycle == cloud.LifecycleInService || pending(in.Lifecycle) {
			per[in.AZ]++
		}
	}
	lo = -1
	for _, n := range per {
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return max(lo, 0), hi
}
