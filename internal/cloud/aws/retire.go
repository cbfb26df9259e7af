package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/recycler/recycler/internal/cloud"
)

// Retire implements cloud.Retirer.
func (p *Provider) Retire(ctx context.Context, id string, opts cloud.RetireOptions) (cloud.RetireResult, error) {
	if err := cloud.ValidateInstanceID(id); err != nil {
		return cloud.RetireResult{}, err
	}
	switch opts.Mode {
	case "":
		opts.Mode = cloud.RetireTerminate
	case cloud.RetireTerminate, cloud.RetireStop:
	default:
		return cloud.RetireResult{}, fmt.Errorf("retire %s: mode %q: want %q or %q: %w", id, opts.Mode, cloud.RetireTerminate, cloud.RetireStop, cloud.ErrValidation)
	}
	if err := requireExecution("retire "+id, opts.ExecutionID); err != nil {
		return cloud.RetireResult{}, err
	}
	at, err := p.locateForRetire(ctx, id, opts)
	if err != nil {
		return cloud.RetireResult{}, err
	}
	if at.inGroup {
		return p.retireFromGroup(ctx, id, at, opts)
	}
	// Out of the surge's group, and the surge and its claim are on record: the
	// instance is ours and nothing needs reading before it is terminated (a gone
	// or terminated one answers so).
	if opts.Mode == cloud.RetireTerminate && p.surgedByUs(id, opts) {
		var res cloud.RetireResult
		done, err := p.terminate(ctx, id)
		if err != nil {
			return res, err
		}
		res.Detached, res.Terminated, res.AlreadyDone = true, !done, done
		return res, p.releaseAfterRetire(ctx, at.surgeGroup, opts)
	}
	return p.retireDetached(ctx, id, at.surgeGroup, opts)
}

// retireLocation is where Retire found the instance.
type retireLocation struct {
	// surgeGroup is the surge's group as this call saw it (nil: no surge, or gone),
	// what the release after the termination needs.
	surgeGroup *cloud.Group
	inGroup    bool
	group      string // with inGroup: the group and the instance's lifecycle state in it
	lifecycle  string
}

// locateForRetire finds the instance's group and lifecycle state. With a surge, one
// look at its group says where the instance is; without (or not found there, and
// not surged by us), ask Auto Scaling where the instance is.
func (p *Provider) locateForRetire(ctx context.Context, id string, opts cloud.RetireOptions) (retireLocation, error) {
	var at retireLocation
	if opts.Surge != nil {
		sg, err := p.describeGroup(ctx, opts.Surge.Group)
		if err != nil && !errors.Is(err, cloud.ErrNotFound) {
			return at, fmt.Errorf("retire %s: %w", id, err)
		}
		if err == nil {
			at.surgeGroup = &sg
			if gi, ok := sg.Instance(id); ok {
				at.group, at.lifecycle, at.inGroup = sg.Name, gi.Lifecycle, true
			}
		}
	}
	if !at.inGroup && !p.surgedByUs(id, opts) {
		details, err := p.describeASGInstances(ctx, []string{id})
		if err != nil {
			return at, fmt.Errorf("retire %s: %w", id, err)
		}
		if d, ok := details[id]; ok {
			at.group, at.lifecycle, at.inGroup = sdkaws.ToString(d.AutoScalingGroupName), sdkaws.ToString(d.LifecycleState), true
		}
	}
	return at, nil
}

// retireFromGroup detaches an instance still in its group (terminated once it is
// out, by a later call), or reports why it cannot go on yet.
func (p *Provider) retireFromGroup(ctx context.Context, id string, at retireLocation, opts cloud.RetireOptions) (cloud.RetireResult, error) {
	var res cloud.RetireResult
	group, lifecycle := at.group, at.lifecycle
	if opts.Surge != nil && opts.Surge.Group != group {
		return res, fmt.Errorf("retire %s: instance is in group %s, the surge was in %s: %w", id, group, opts.Surge.Group, cloud.ErrNotInGroup)
	}
	switch {
	case lifecycle == cloud.LifecycleInService || lifecycle == cloud.LifecycleStandby:
		// Standby instances are outside desired capacity: decrementing would make
		// the group terminate another instance (AWS user guide, detaching Standby).
		// KeepCapacity (no surge happened): keep desired so the group launches the replacement now.
		decrement := lifecycle == cloud.LifecycleInService && !opts.KeepCapacity
		if err := p.tagInstances(ctx, []string{id}, map[string]string{cloud.TagExecution: opts.ExecutionID, cloud.TagDetachedAt: p.stamp()}); err != nil {
			return res, err
		}
		if _, err := p.asg.DetachInstances(ctx, &autoscaling.DetachInstancesInput{
			AutoScalingGroupName: &group, InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: &decrement,
		}); err != nil && !p.movedAnyway(ctx, err, group, []string{id}, true, cloud.LifecycleDetaching) {
			return res, classify(fmt.Sprintf("retire: detach %s (%s) from %s", id, lifecycle, group), err)
		}
		// AWS holds it in Detaching while it leaves the group's load balancers:
		// terminate it once it is out (the next call finds it detached).
		return res, &cloud.NotYetError{InstanceID: id, State: cloud.LifecycleDetaching, Waiting: "detach requested; it is terminated once it has left group " + group}
	case lifecycle == cloud.LifecycleDetaching, lifecycle == cloud.LifecycleEnteringStandby, pending(lifecycle):
		return res, &cloud.NotYetError{InstanceID: id, State: lifecycle, Waiting: "retire goes on once it is out of this state"}
	case strings.HasPrefix(lifecycle, cloud.LifecycleTerminating):
		// The group is terminating it already (Terminating:Wait: once its lifecycle
		// action is completed, which is the caller's job).
		res.AlreadyDone = true
		return res, p.releaseAfterRetire(ctx, at.surgeGroup, opts)
	default:
		return res, fmt.Errorf("retire %s: instance is %s in group %s; retire works on InService, Standby or terminating instances; wait until it is InService: %w",
			id, lifecycle, group, cloud.ErrValidation)
	}
}

// retireDetached stops or terminates an instance in no group: only if this execution
// detached it (or the instance is gone anyway); never one that was never ours.
func (p *Provider) retireDetached(ctx context.Context, id string, g *cloud.Group, opts cloud.RetireOptions) (cloud.RetireResult, error) {
	var res cloud.RetireResult
	found, err := p.describeEC2(ctx, []string{id}) // Auto Scaling just said: in no group
	if err != nil {
		return res, fmt.Errorf("retire %s: %w", id, err)
	}
	var in []cloud.Instance
	if e, ok := found[id]; ok {
		in = append(in, toInstance(e, asgtypes.AutoScalingInstanceDetails{}))
	}
	if len(in) == 0 || in[0].State == cloud.StateTerminated || in[0].State == cloud.StateShuttingDown {
		res.AlreadyDone = true
		return res, p.releaseAfterRetire(ctx, g, opts)
	}
	if opts.Mode == cloud.RetireStop && in[0].State == cloud.StateStopped && in[0].Tags[cloud.TagRetiredAt] != "" {
		res.AlreadyDone = true
		return res, p.releaseAfterRetire(ctx, g, opts)
	}
	tags := in[0].Tags
	detachedByUs := tags[cloud.TagDetachedAt] != "" && tags[cloud.TagExecution] == opts.ExecutionID
	if !detachedByUs && !p.wasOurs(id, opts) {
		return res, fmt.Errorf("retire %s: instance is in no Auto Scaling group and this execution did not detach it (no %s record of %s); refusing to %s it: %w",
			id, cloud.TagDetachedAt, opts.ExecutionID, opts.Mode, cloud.ErrNotInGroup)
	}
	res.Detached = tags[cloud.TagDetachedAt] != ""

	switch opts.Mode {
	case cloud.RetireStop:
		done, err := p.stop(ctx, id, opts.ExecutionID)
		if err != nil {
			return res, err
		}
		res.Stopped = !done
	default:
		done, err := p.terminate(ctx, id)
		if err != nil {
			return res, err
		}
		res.Terminated = !done
	}
	return res, p.releaseAfterRetire(ctx, g, opts)
}

// surgedByUs: the surge record names id and the caller kept its claim's answer —
// everything Retire would otherwise read from the instances' records.
func (p *Provider) surgedByUs(id string, opts cloud.RetireOptions) bool {
	return opts.Surge != nil && opts.Surge.Claimed && p.wasOurs(id, opts)
}

func (p *Provider) wasOurs(id string, opts cloud.RetireOptions) bool {
	if opts.Surge == nil {
		return false
	}
	for _, in := range opts.Surge.Instances {
		if in.ID == id {
			return true
		}
	}
	return false
}

// releaseAfterRetire restores, for the surge this retirement completes, what it
// changed on the group and on its replacements.
// g is the surge's group as this call saw it (nil: not described, or gone).
func (p *Provider) releaseAfterRetire(ctx context.Context, g *cloud.Group, opts cloud.RetireOptions) error {
	if opts.Surge == nil || g == nil {
		return nil
	}
	rec := *opts.Surge
	if rec.ExecutionID == "" {
		rec.ExecutionID = opts.ExecutionID
	}
	if _, err := p.release(ctx, *g, rec, false); err != nil {
		return err
	}
	return p.releaseReplacements(ctx, *g, rec)
}

// terminate returns done=true when the instance was already terminated or gone.
func (p *Provider) terminate(ctx context.Context, id string) (bool, error) {
	out, err := p.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		if errors.Is(classify("", err), cloud.ErrNotFound) {
			return true, nil
		}
		return false, classify("retire: terminate "+id, err)
	}
	for _, c := range out.TerminatingInstances {
		if c.PreviousState != nil && (c.PreviousState.Name == ec2types.InstanceStateNameTerminated || c.PreviousState.Name == ec2types.InstanceStateNameShuttingDown) {
			return true, nil
		}
	}
	return false, nil
}

// stop tags the instance (so a stopped instance is never anonymous), then stops it.
// done=true when it was already stopped, terminated or gone.
func (p *Provider) stop(ctx context.Context, id, execution string) (bool, error) {
	tags := []ec2types.Tag{{Key: sdkaws.String(cloud.TagRetiredAt), Value: sdkaws.String(p.clock.Now().UTC().Format(time.RFC3339))}}
	if execution != "" {
		tags = append(tags, ec2types.Tag{Key: sdkaws.String(cloud.TagExecution), Value: sdkaws.String(execution)})
	}
	if _, err := p.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: tags}); err != nil {
		if errors.Is(classify("", err), cloud.ErrNotFound) {
			return true, nil
		}
		return false, classify("retire: tag "+id, err)
	}
	out, err := p.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		code, _ := apiCode(err)
		if code == codeIncorrectState || errors.Is(classify("", err), cloud.ErrNotFound) {
			return true, nil // terminated meanwhile: nothing to stop
		}
		return false, classify("retire: stop "+id, err)
	}
	for _, c := range out.StoppingInstances {
		if c.PreviousState != nil && (c.PreviousState.Name == ec2types.InstanceStateNameStopped || c.PreviousState.Name == ec2types.InstanceStateNameStopping) {
			return true, nil
		}
	}
	return false, nil
}

func validateAction(a cloud.LifecycleAction) error {
	if err := cloud.ValidateGroupName(a.Group); err != nil {
		return err
	}
	if a.Hook == "" {
		return fmt.Errorf("lifecycle action: hook name is empty: %w", cloud.ErrValidation)
	}
	if a.InstanceID == "" && a.Token == "" {
		return fmt.Errorf("lifecycle action on %s/%s: give the instance id or the action token: %w", a.Group, a.Hook, cloud.ErrValidation)
	}
	if a.InstanceID != "" {
		return cloud.ValidateInstanceID(a.InstanceID)
	}
	return nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// RecordHeartbeat implements cloud.Lifecycle.
func (p *Provider) RecordHeartbeat(ctx context.Context, a cloud.LifecycleAction) error {
	if err := validateAction(a); err != nil {
		return err
	}
	_, err := p.asg.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: &a.Group, LifecycleHookName: &a.Hook,
		InstanceId: optional(a.InstanceID), LifecycleActionToken: optional(a.Token),
	})
	if err != nil {
		if isNoActiveLifecycleAction(err) {
			return fmt.Errorf("heartbeat %s/%s for %s: the lifecycle action is over (completed or timed out): %w", a.Group, a.Hook, a.InstanceID, cloud.ErrNotFound)
		}
		return classify(fmt.Sprintf("heartbeat %s/%s for %s", a.Group, a.Hook, a.InstanceID), err)
	}
	return nil
}

// CompleteLifecycleAction implements cloud.Lifecycle.
func (p *Provider) CompleteLifecycleAction(ctx context.Context, a cloud.LifecycleAction, result cloud.LifecycleResult) error {
	if err := validateAction(a); err != nil {
		return err
	}
	if result != cloud.LifecycleContinue && result != cloud.LifecycleAbandon {
		return fmt.Errorf("complete lifecycle action: result %q: want CONTINUE or ABANDON: %w", result, cloud.ErrValidation)
	}
	_, err := p.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: &a.Group, LifecycleHookName: &a.Hook, LifecycleActionResult: sdkaws.String(string(result)),
		InstanceId: optional(a.InstanceID), LifecycleActionToken: optional(a.Token),
	})
	if err != nil && !isNoActiveLifecycleAction(err) {
		return classify(fmt.Sprintf("complete lifecycle action %s/%s for %s with %s", a.Group, a.Hook, a.InstanceID, result), err)
	}
	return nil
}
