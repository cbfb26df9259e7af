// Package cloudtest is the contract test suite of the cloud port: every Provider
// implementation must pass Run against a cloud that keeps real Auto Scaling semantics
// (for the AWS provider: the simulator in internal/sim, over real HTTP).
package cloudtest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/cloud"
)

// GroupSpec describes a group a Harness creates.
type GroupSpec struct {
	Min, Max, Desired int
	// InstanceTypes, when set, make it a mixed-instances group with these overrides.
	InstanceTypes []string
	// TerminateHook adds a lifecycle hook on autoscaling:EC2_INSTANCE_TERMINATING
	// named "drain" (heartbeat timeout 300 s, default result CONTINUE).
	TerminateHook bool
}

// Harness is what the suite needs besides the Provider: test-only actions on the
// cloud behind it. Implementations fail t on error.
type Harness interface {
	// CreateGroup creates a group (launch template version 1, version "$Latest") and
	// returns its name once Desired instances are InService.
	CreateGroup(t testing.TB, spec GroupSpec) string
	// Advance lets simulated time pass by d and applies what became due (boots,
	// launches, terminations, hook timeouts).
	Advance(t testing.TB, d time.Duration)
	// FailLaunches makes the next n launches fail (0 stops failing).
	FailLaunches(t testing.TB, n int)
	// Throttle sets the share of API calls refused with a throttling error.
	Throttle(t testing.TB, rate float64)
	// Detach takes an instance out of its group (decrementing desired), leaving it running.
	Detach(t testing.TB, group, instanceID string)
	// StartHookedTermination terminates an instance with decrement in a group with
	// TerminateHook, leaving it in Terminating:Wait.
	StartHookedTermination(t testing.TB, group, instanceID string)
	// NewTemplateVersion creates a new version of the group's launch template.
	NewTemplateVersion(t testing.TB, group string)
	// Suspend suspends a scaling process on the group, as a person would.
	Suspend(t testing.TB, group, process string)
	// SetDesired sets the group's desired capacity as another actor would (a
	// cluster autoscaler scaling up).
	SetDesired(t testing.TB, group string, desired int)
	// TransitionDelay makes the in-between lifecycle state (EnteringStandby,
	// Pending after ExitStandby, Detaching) last d from now on.
	TransitionDelay(t testing.TB, state string, d time.Duration)
	// LoseAnswers makes the next n calls of operation (an API action name) take
	// effect while their answer is lost (the client sees a server error and retries).
	LoseAnswers(t testing.TB, operation string, n int)
	// Calls is the number of API operations the Provider made so far.
	Calls() int64
}

// NewFunc builds a fresh Provider and its Harness for one test.
type NewFunc func(t testing.TB) (cloud.Provider, Harness)

// Step is how much simulated time passes between two checks of the suite; Deadline
// bounds a wait for a replacement (simulated time).
const (
	Step     = 5 * time.Second
	Deadline = 10 * time.Minute
)

// Run runs the whole contract suite.
func Run(t *testing.T, newProvider NewFunc) {
	t.Run("CycleKeepsCapacity", func(t *testing.T) { testCycle(t, newProvider, 0) })
	t.Run("CycleUnderThrottlingStorm", func(t *testing.T) { testCycle(t, newProvider, 0.3) })
	t.Run("CycleStopRetire", testStopRetire(newProvider))
	t.Run("RollbackAfterReplacement", testRollback(newProvider, true))
	t.Run("RollbackBeforeReplacement", testRollback(newProvider, false))
	t.Run("LaunchFailureReported", testLaunchFailure(newProvider))
	t.Run("SurgeIsIdempotent", testSurgeTwice(newProvider))
	t.Run("NoHeadroom", testNoHeadroom(newProvider))
	t.Run("BadInput", testBadInput(newProvider))
	t.Run("LifecycleHookPath", testHookPath(newProvider))
	t.Run("Drift", testDrift(newProvider))
	t.Run("BatchedDescribe", testBatchedDescribe(newProvider))
	t.Run("SurgeSeveral", testSurgeSeveral(newProvider))
	t.Run("ForeignSuspensionKept", testForeignSuspension(newProvider))
	t.Run("RetireRetriedAfterLostDetach", testLostDetach(newProvider))
	t.Run("LostAnswersAreNotRepeated", testLostAnswers(newProvider))
	t.Run("RollbackWaitsForEnteringStandby", testRollbackEnteringStandby(newProvider))
	t.Run("RetireWaitsForInBetweenStates", testRetireInBetween(newProvider))
	t.Run("AutoscalerLaunchIsNotTheReplacement", testAutoscalerLaunch(newProvider))
	t.Run("ClaimProtectsUntilRetire", testClaim(newProvider))
}

// Execution is the execution id the suite's changes are recorded with.
const Execution = "exec-1"

// opts are the surge options of a plain surge.
var opts = cloud.SurgeOptions{ExecutionID: Execution}

// RetireUntilDone calls Retire until it no longer answers ErrNotYet (an instance in
// an in-between state), advancing time between calls.
func RetireUntilDone(t testing.TB, p cloud.Provider, h Harness, id string, o cloud.RetireOptions) (cloud.RetireResult, error) {
	t.Helper()
	if o.ExecutionID == "" {
		o.ExecutionID = Execution
	}
	for waited := time.Duration(0); ; waited += Step {
		res, err := p.Retire(ctxFor(t), id, o)
		if !errors.Is(err, cloud.ErrNotYet) || waited > Deadline {
			return res, err
		}
		h.Advance(t, Step)
	}
}

// RollbackUntilDone calls Rollback until it is Done, advancing time between calls.
func RollbackUntilDone(t testing.TB, p cloud.Provider, h Harness, rec cloud.SurgeRecord) cloud.RollbackResult {
	t.Helper()
	for waited := time.Duration(0); waited <= Deadline; waited += Step {
		res, err := p.Rollback(ctxFor(t), rec)
		if err != nil {
			t.Fatalf("rollback after %v: %v", waited, err)
		}
		if res.Done {
			return res
		}
		if res.Waiting == "" {
			t.Fatalf("rollback not done and not saying why: %+v", res)
		}
		h.Advance(t, Step)
	}
	t.Fatalf("rollback not done within %v", Deadline)
	return cloud.RollbackResult{}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func group(t testing.TB, p cloud.Provider, name string) cloud.Group {
	t.Helper()
	g, err := p.Group(ctxFor(t), name)
	if err != nil {
		t.Fatalf("describe group %s: %v", name, err)
	}
	return g
}

// victim picks an InService instance of the group.
func victim(t testing.TB, g cloud.Group) string {
	t.Helper()
	for _, in := range g.Instances {
		if in.Lifecycle == cloud.LifecycleInService {
			return in.ID
		}
	}
	t.Fatalf("group %s has no InService instance: %+v", g.Name, g.Instances)
	return ""
}

// serving counts the instances that still carry workloads: InService ones and the
// given old ones in (Entering)Standby (still running, their Node still Ready).
func serving(g cloud.Group, old []string) int {
	n := 0
	for _, in := range g.Instances {
		standby := in.Lifecycle == cloud.LifecycleStandby || in.Lifecycle == cloud.LifecycleEnteringStandby
		if in.Lifecycle == cloud.LifecycleInService || (standby && slices.Contains(old, in.ID)) {
			n++
		}
	}
	return n
}

// WaitReplacement advances time until FindReplacement is ready, checking after
// every step that the group serves with at least its desired capacity.
func WaitReplacement(t testing.TB, p cloud.Provider, h Harness, rec cloud.SurgeRecord, desired int32) cloud.Replacement {
	t.Helper()
	for waited := time.Duration(0); waited <= Deadline; waited += Step {
		r, err := p.FindReplacement(ctxFor(t), rec)
		if err != nil {
			t.Fatalf("find replacement after %v: %v", waited, err)
		}
		g := group(t, p, rec.Group)
		if s := serving(g, rec.IDs()); s < int(desired) {
			t.Fatalf("after %v the group serves with %d instances, desired is %d: %+v", waited, s, desired, g.Instances)
		}
		if r.Ready {
			for _, id := range r.InService {
				if slices.Contains(rec.Snapshot, id) {
					t.Fatalf("replacement %s was in the snapshot %v", id, rec.Snapshot)
				}
			}
			return r
		}
		h.Advance(t, Step)
	}
	t.Fatalf("no replacement within %v", Deadline)
	return cloud.Replacement{}
}

// Cycle runs surge → replacement → retire for one instance and returns the retired
// id. The benchmark in the provider's package uses it to count API calls.
func Cycle(t testing.TB, p cloud.Provider, h Harness, groupName string, mode cloud.RetireMode) string {
	t.Helper()
	ctx := ctxFor(t)
	before := group(t, p, groupName)
	old := victim(t, before)
	rec, err := p.Surge(ctx, groupName, []string{old}, opts)
	if err != nil {
		t.Fatalf("surge %s: %v", old, err)
	}
	if len(rec.Instances) != 1 || rec.Instances[0].Method != cloud.SurgeStandby {
		t.Fatalf("surge record %+v: want one instance surged by standby", rec)
	}
	g := group(t, p, groupName)
	if in, _ := g.Instance(old); in.Lifecycle != cloud.LifecycleStandby && in.Lifecycle != cloud.LifecycleEnteringStandby {
		t.Fatalf("after surge %s is %q, want (Entering)Standby", old, in.Lifecycle)
	}
	if g.Desired != before.Desired {
		t.Fatalf("surge by standby changed desired capacity %d → %d", before.Desired, g.Desired)
	}
	if !g.Suspended(cloud.ProcessAZRebalance) {
		t.Fatalf("AZRebalance not suspended while %s is in standby", old)
	}
	WaitReplacement(t, p, h, rec, before.Desired)
	res, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Mode: mode, ExecutionID: Execution, Surge: &rec})
	if err != nil {
		t.Fatalf("retire %s: %v", old, err)
	}
	if !res.Detached || res.AlreadyDone {
		t.Fatalf("retire result %+v: want detached, not already done", res)
	}
	return old
}

func testCycle(t *testing.T, newProvider NewFunc, throttle float64) {
	p, h := newProvider(t)
	name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 3})
	before := group(t, p, name)
	h.Throttle(t, throttle)
	old := Cycle(t, p, h, name, cloud.RetireTerminate)
	// Let the cloud settle: nothing new may launch, nothing else may go.
	for range 6 {
		h.Advance(t, Step)
	}
	after := group(t, p, name)
	if after.Desired != before.Desired || after.MaxSize != before.MaxSize {
		t.Errorf("after the cycle desired/max = %d/%d, want %d/%d", after.Desired, after.MaxSize, before.Desired, before.MaxSize)
	}
	if n := after.CountLifecycle(cloud.LifecycleInService); n != int(before.Desired) || len(after.Instances) != int(before.Desired) {
		t.Errorf("after the cycle %d InService of %d instances, want %d: %+v", n, len(after.Instances), before.Desired, after.Instances)
	}
	if _, ok := after.Instance(old); ok {
		t.Errorf("retired %s is still in the group", old)
	}
	if after.Suspended(cloud.ProcessAZRebalance) {
		t.Errorf("AZRebalance still suspended after the cycle")
	}
	in, err := p.Instance(ctxFor(t), old)
	if err != nil {
		t.Fatalf("describe retired %s: %v", old, err)
	}
	if in.State != cloud.StateTerminated && in.State != cloud.StateShuttingDown {
		t.Errorf("retired %s is %s, want terminated", old, in.State)
	}
	// Retire again: already done, and nothing changes.
	res, err := p.Retire(ctxFor(t), old, cloud.RetireOptions{ExecutionID: Execution})
	if err != nil || !res.AlreadyDone {
		t.Errorf("second retire of %s = %+v, %v; want already done", old, res, err)
	}
	h.Throttle(t, 0)
	t.Logf("API calls made by the provider (setup included): %d", h.Calls())
}

func testStopRetire(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 4, Desired: 2})
		old := Cycle(t, p, h, name, cloud.RetireStop)
		h.Advance(t, Step)
		in, err := p.Instance(ctxFor(t), old)
		if err != nil {
			t.Fatalf("describe %s: %v", old, err)
		}
		if in.State != cloud.StateStopped && in.State != cloud.StateStopping {
			t.Errorf("retired %s is %s, want stopped", old, in.State)
		}
		if in.Group != "" {
			t.Errorf("stopped %s is still in group %s", old, in.Group)
		}
		if in.Tags[cloud.TagRetiredAt] == "" || in.Tags[cloud.TagExecution] != "exec-1" {
			t.Errorf("stopped %s tags = %v, want %s and %s=exec-1", old, in.Tags, cloud.TagRetiredAt, cloud.TagExecution)
		}
		res, err := p.Retire(ctxFor(t), old, cloud.RetireOptions{Mode: cloud.RetireStop, ExecutionID: Execution})
		if err != nil || !res.AlreadyDone {
			t.Errorf("second stop-retire of %s = %+v, %v; want already done", old, res, err)
		}
		g := group(t, p, name)
		if g.Desired != 2 || g.CountLifecycle(cloud.LifecycleInService) != 2 {
			t.Errorf("group after stop-retire: desired %d, InService %d; want 2, 2", g.Desired, g.CountLifecycle(cloud.LifecycleInService))
		}
	}
}

func testRollback(newProvider NewFunc, waitForReplacement bool) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 3})
		before := group(t, p, name)
		old := victim(t, before)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		if waitForReplacement {
			WaitReplacement(t, p, h, rec, before.Desired)
		}
		RollbackUntilDone(t, p, h, rec)
		if res, err := p.Rollback(ctxFor(t), rec); err != nil || !res.Done { // a second rollback has nothing left to do
			t.Fatalf("second rollback: %+v, %v", res, err)
		}
		for range 12 {
			h.Advance(t, Step)
		}
		after := group(t, p, name)
		if in, ok := after.Instance(old); !ok || in.Lifecycle != cloud.LifecycleInService {
			t.Errorf("after rollback %s is %+v, want InService in the group", old, in)
		}
		if after.Desired != before.Desired || after.MaxSize != before.MaxSize {
			t.Errorf("after rollback desired/max = %d/%d, want %d/%d", after.Desired, after.MaxSize, before.Desired, before.MaxSize)
		}
		if n := after.CountLifecycle(cloud.LifecycleInService); n != int(before.Desired) || len(after.Instances) != int(before.Desired) {
			t.Errorf("after rollback %d InService of %d instances, want %d: %+v", n, len(after.Instances), before.Desired, after.Instances)
		}
		if after.Suspended(cloud.ProcessAZRebalance) {
			t.Errorf("AZRebalance still suspended after rollback")
		}
		// Nothing of the recycle is left recorded on the group's instances.
		rs, err := p.Recorded(ctxFor(t))
		if err != nil {
			t.Fatalf("recorded: %v", err)
		}
		for _, in := range rs {
			if in.Group == name {
				t.Errorf("after rollback %s still carries records: %v", in.ID, in.Tags)
			}
		}
	}
}

func testLaunchFailure(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 4, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		h.FailLaunches(t, 1000)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		const deadline = 2 * time.Minute
		var failure error
		for waited := time.Duration(0); waited <= deadline && failure == nil; waited += Step {
			r, err := p.FindReplacement(ctxFor(t), rec)
			switch {
			case errors.Is(err, cloud.ErrLaunchFailed):
				failure = err
			case err != nil:
				t.Fatalf("find replacement: %v", err)
			case r.Ready:
				t.Fatalf("replacement %v reported ready although every launch fails", r.InService)
			default:
				h.Advance(t, Step)
			}
		}
		if failure == nil {
			t.Fatalf("no ErrLaunchFailed within %v of simulated time", deadline)
		}
		var lf *cloud.LaunchFailedError
		if !errors.As(failure, &lf) || lf.Activity.StatusMessage == "" || cloud.IsRetryable(failure) {
			t.Errorf("launch failure %v: want a non-retryable *LaunchFailedError with the activity's message", failure)
		}
		h.FailLaunches(t, 0)
		RollbackUntilDone(t, p, h, rec)
		h.Advance(t, Step)
		after := group(t, p, name)
		if in, _ := after.Instance(old); in.Lifecycle != cloud.LifecycleInService || after.Desired != before.Desired {
			t.Errorf("after rollback: %s is %q, desired %d; want InService, %d", old, in.Lifecycle, after.Desired, before.Desired)
		}
	}
}

func testSurgeTwice(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		rec1, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		rec2, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("second surge: %v", err)
		}
		if !slices.Equal(rec1.Snapshot, rec2.Snapshot) || !slices.Equal(rec1.IDs(), rec2.IDs()) {
			t.Errorf("second surge record %+v differs from the first %+v", rec2, rec1)
		}
		WaitReplacement(t, p, h, rec2, before.Desired)
		for range 6 {
			h.Advance(t, Step)
		}
		g := group(t, p, name)
		if len(g.Instances) != len(before.Instances)+1 || g.Desired != before.Desired {
			t.Errorf("after two surges: %d instances, desired %d; want %d, %d (one replacement only)", len(g.Instances), g.Desired, len(before.Instances)+1, before.Desired)
		}
		if _, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec2}); err != nil {
			t.Fatalf("retire: %v", err)
		}
	}
}

func testNoHeadroom(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 2, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		_, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if !errors.Is(err, cloud.ErrNoHeadroom) || cloud.IsRetryable(err) {
			t.Fatalf("surge at max size: %v, want ErrNoHeadroom", err)
		}
		h.Advance(t, Step)
		assertUnchanged(t, before, group(t, p, name))

		rec, err := p.Surge(ctxFor(t), name, []string{old}, cloud.SurgeOptions{ExecutionID: Execution, AllowRaiseMax: true})
		if err != nil {
			t.Fatalf("surge allowing MaxSize to rise: %v", err)
		}
		if !rec.MaxRaised || rec.MaxBefore != 2 || rec.MaxAfter != 3 {
			t.Errorf("record %+v: want MaxSize raised 2 → 3", rec)
		}
		if g := group(t, p, name); g.MaxSize != 3 {
			t.Errorf("MaxSize during the surge = %d, want 3", g.MaxSize)
		}
		WaitReplacement(t, p, h, rec, before.Desired)
		if _, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec}); err != nil {
			t.Fatalf("retire: %v", err)
		}
		if g := group(t, p, name); g.MaxSize != 2 || g.Desired != 2 {
			t.Errorf("after retire MaxSize/desired = %d/%d, want 2/2 (restored)", g.MaxSize, g.Desired)
		}
	}
}

func assertUnchanged(t testing.TB, before, after cloud.Group) {
	t.Helper()
	if before.Desired != after.Desired || before.MaxSize != after.MaxSize || before.MinSize != after.MinSize ||
		!slices.Equal(before.SuspendedProcesses, after.SuspendedProcesses) || len(before.Instances) != len(after.Instances) {
		t.Errorf("group changed:\nbefore %+v\nafter  %+v", before, after)
		return
	}
	for _, in := range before.Instances {
		if a, ok := after.Instance(in.ID); !ok || a.Lifecycle != in.Lifecycle {
			t.Errorf("instance %s changed: %q → %+v", in.ID, in.Lifecycle, a)
		}
	}
}

func testBadInput(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 0, Max: 5, Desired: 3})
		other := h.CreateGroup(t, GroupSpec{Min: 0, Max: 5, Desired: 1})
		ctx := ctxFor(t)
		g := group(t, p, name)
		loner := g.Instances[0].ID
		h.Detach(t, name, loner)
		h.Advance(t, Step)
		before := group(t, p, name)
		stranger := group(t, p, other).Instances[0].ID

		calls := h.Calls()
		for _, bad := range []string{"", "i-123", "i-0123456789ABCDEF0", "i-0123456789abcdef", "node-1", "i-0123456789abcdef0 "} {
			if _, err := p.Surge(ctx, name, []string{bad}, opts); !errors.Is(err, cloud.ErrValidation) {
				t.Errorf("surge %q: %v, want ErrValidation", bad, err)
			}
			if _, err := p.Retire(ctx, bad, cloud.RetireOptions{ExecutionID: Execution}); !errors.Is(err, cloud.ErrValidation) {
				t.Errorf("retire %q: %v, want ErrValidation", bad, err)
			}
			if _, err := p.Instance(ctx, bad); !errors.Is(err, cloud.ErrValidation) {
				t.Errorf("instance %q: %v, want ErrValidation", bad, err)
			}
		}
		for _, bad := range []string{"", "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x", "a\x00b"} {
			if _, err := p.Group(ctx, bad); !errors.Is(err, cloud.ErrValidation) {
				t.Errorf("group %q: %v, want ErrValidation", bad, err)
			}
		}
		if _, err := p.Retire(ctx, loner, cloud.RetireOptions{Mode: "explode", ExecutionID: Execution}); !errors.Is(err, cloud.ErrValidation) {
			t.Errorf("retire with mode explode: %v, want ErrValidation", err)
		}
		// Every change is recorded with its execution: none without one.
		if _, err := p.Surge(ctx, name, []string{loner}, cloud.SurgeOptions{}); !errors.Is(err, cloud.ErrValidation) {
			t.Errorf("surge without an execution id: %v, want ErrValidation", err)
		}
		if _, err := p.Retire(ctx, loner, cloud.RetireOptions{}); !errors.Is(err, cloud.ErrValidation) {
			t.Errorf("retire without an execution id: %v, want ErrValidation", err)
		}
		if _, err := p.Rollback(ctx, cloud.SurgeRecord{Group: name}); !errors.Is(err, cloud.ErrValidation) {
			t.Errorf("rollback without an execution id: %v, want ErrValidation", err)
		}
		if n := h.Calls(); n != calls {
			t.Errorf("malformed input made %d API calls, want none", n-calls)
		}

		unknown := "i-0fedcba9876543210"
		if _, err := p.Instance(ctx, unknown); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("instance %s: %v, want ErrNotFound", unknown, err)
		}
		if _, err := p.Surge(ctx, name, []string{unknown}, opts); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("surge unknown %s: %v, want ErrNotFound", unknown, err)
		}
		if _, err := p.Surge(ctx, name, []string{loner}, opts); !errors.Is(err, cloud.ErrNotInGroup) {
			t.Errorf("surge of %s (in no group): %v, want ErrNotInGroup", loner, err)
		}
		if _, err := p.Surge(ctx, name, []string{stranger}, opts); !errors.Is(err, cloud.ErrNotInGroup) {
			t.Errorf("surge of %s (in group %s): %v, want ErrNotInGroup", stranger, other, err)
		}
		if _, err := p.Retire(ctx, loner, cloud.RetireOptions{ExecutionID: Execution}); !errors.Is(err, cloud.ErrNotInGroup) {
			t.Errorf("retire of %s (in no group, no surge record): %v, want ErrNotInGroup", loner, err)
		}
		if _, err := p.Group(ctx, "no-such-group"); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("group no-such-group: %v, want ErrNotFound", err)
		}
		if _, err := p.Surge(ctx, "no-such-group", []string{loner}, opts); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("surge in no-such-group: %v, want ErrNotFound", err)
		}
		if in, err := p.Instance(ctx, loner); err != nil || in.State != cloud.StateRunning || in.Group != "" {
			t.Errorf("instance %s after refused calls: %+v, %v; want running, in no group", loner, in, err)
		}
		h.Advance(t, Step)
		assertUnchanged(t, before, group(t, p, name))
	}
}

func testHookPath(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 3, TerminateHook: true})
		g := group(t, p, name)
		if len(g.LifecycleHooks) != 1 || g.LifecycleHooks[0].HeartbeatTimeout != 300*time.Second {
			t.Fatalf("lifecycle hooks %+v: want the drain hook with 300 s heartbeat timeout", g.LifecycleHooks)
		}
		old := victim(t, g)
		h.StartHookedTermination(t, name, old)
		before := group(t, p, name) // desired 2, old in Terminating:Wait
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge of Terminating:Wait instance: %v", err)
		}
		if rec.Instances[0].Method != cloud.SurgeDesired {
			t.Fatalf("surge method %q, want %q", rec.Instances[0].Method, cloud.SurgeDesired)
		}
		action := cloud.LifecycleAction{Group: name, Hook: "drain", InstanceID: old}
		if err := p.RecordHeartbeat(ctxFor(t), action); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		WaitReplacement(t, p, h, rec, before.Desired)
		if res, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec}); err != nil || !res.AlreadyDone {
			t.Errorf("retire of a Terminating:Wait instance = %+v, %v; want already done (the hook ends it)", res, err)
		}
		for i := range 2 {
			if err := p.CompleteLifecycleAction(ctxFor(t), action, cloud.LifecycleContinue); err != nil {
				t.Fatalf("complete lifecycle action #%d: %v", i+1, err)
			}
		}
		if err := p.RecordHeartbeat(ctxFor(t), action); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("heartbeat after completion: %v, want ErrNotFound", err)
		}
		for range 6 {
			h.Advance(t, Step)
		}
		after := group(t, p, name)
		if _, ok := after.Instance(old); ok {
			t.Errorf("%s still in the group after CONTINUE", old)
		}
		if after.Desired != before.Desired+1 || after.CountLifecycle(cloud.LifecycleInService) != int(after.Desired) {
			t.Errorf("after the hook path: desired %d, InService %d; want %d, %d", after.Desired, after.CountLifecycle(cloud.LifecycleInService), before.Desired+1, before.Desired+1)
		}
	}
}

func testDrift(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		for _, types := range [][]string{nil, {"m5.large", "m5a.large"}} {
			p, h := newProvider(t)
			name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 3, Desired: 1, InstanceTypes: types})
			id := group(t, p, name).Instances[0].ID
			in, err := p.Instance(ctxFor(t), id)
			if err != nil {
				t.Fatalf("instance: %v", err)
			}
			if in.LaunchTemplate == nil || in.LaunchTemplate.ResolvedVersion != 1 || in.Group != name || in.Lifecycle != cloud.LifecycleInService {
				t.Fatalf("instance %+v: want group %s, InService, launch template version 1", in, name)
			}
			d, err := p.Drift(ctxFor(t), in)
			if err != nil || d.Drifted {
				t.Fatalf("drift before a new version (types %v) = %+v, %v; want none", types, d, err)
			}
			h.NewTemplateVersion(t, name)
			d, err = p.Drift(ctxFor(t), in)
			if err != nil || !d.Drifted || d.Group.LaunchTemplate.ResolvedVersion != 2 || d.Reason == "" {
				t.Errorf("drift after version 2 ($Latest, types %v) = %+v, %v; want drifted to version 2", types, d, err)
			}
			in.Group = ""
			if _, err := p.Drift(ctxFor(t), in); !errors.Is(err, cloud.ErrNotInGroup) {
				t.Errorf("drift of an instance without group: %v, want ErrNotInGroup", err)
			}
		}
	}
}

func testBatchedDescribe(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 30, Desired: 25})
		var ids []string
		for _, in := range group(t, p, name).Instances {
			ids = append(ids, in.ID)
		}
		ids = append(ids, "i-0fedcba9876543210") // unknown: absent, not an error
		calls := h.Calls()
		got, err := p.Instances(ctxFor(t), ids...)
		if err != nil {
			t.Fatalf("instances: %v", err)
		}
		if len(got) != 25 {
			t.Fatalf("described %d instances, want 25", len(got))
		}
		for i, in := range got {
			if in.ID != ids[i] || in.Group != name || in.AZ == "" || in.State != cloud.StateRunning || in.PrivateDNSName == "" || in.LaunchTime.IsZero() {
				t.Errorf("instance %d: %+v", i, in)
			}
		}
		// One DescribeInstances (+ one retry without the unknown id) and one
		// DescribeAutoScalingInstances: never one call per instance.
		if n := h.Calls() - calls; n > 3 {
			t.Errorf("describing 26 instances took %d API calls, want ≤ 3", n)
		}
	}
}

func testSurgeSeveral(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 8, Desired: 4})
		before := group(t, p, name)
		olds := []string{before.Instances[0].ID, before.Instances[1].ID}
		rec, err := p.Surge(ctxFor(t), name, olds, opts)
		if err != nil {
			t.Fatalf("surge %v: %v", olds, err)
		}
		r := WaitReplacement(t, p, h, rec, before.Desired)
		if len(r.InService) != 2 {
			t.Fatalf("replacements %v, want 2", r.InService)
		}
		for i, old := range olds {
			// The first retirement must keep AZRebalance suspended: the second old
			// instance is still in standby.
			if _, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec}); err != nil {
				t.Fatalf("retire %s: %v", old, err)
			}
			if got, want := group(t, p, name).Suspended(cloud.ProcessAZRebalance), i == 0; got != want {
				t.Errorf("after retiring %d of 2: AZRebalance suspended = %v, want %v", i+1, got, want)
			}
		}
		for range 6 {
			h.Advance(t, Step)
		}
		after := group(t, p, name)
		if after.Desired != before.Desired || after.CountLifecycle(cloud.LifecycleInService) != int(before.Desired) || len(after.Instances) != int(before.Desired) {
			t.Errorf("after retiring 2: desired %d, %d InService of %d; want %d", after.Desired, after.CountLifecycle(cloud.LifecycleInService), len(after.Instances), before.Desired)
		}
	}
}

func testForeignSuspension(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 4, Desired: 2})
		h.Suspend(t, name, cloud.ProcessAZRebalance)
		before := group(t, p, name)
		old := victim(t, before)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		if rec.SuspendedAZRebalance {
			t.Errorf("record claims the AZRebalance suspension someone else made")
		}
		WaitReplacement(t, p, h, rec, before.Desired)
		if _, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec}); err != nil {
			t.Fatalf("retire: %v", err)
		}
		if !group(t, p, name).Suspended(cloud.ProcessAZRebalance) {
			t.Errorf("AZRebalance resumed although someone else had suspended it")
		}
	}
}

// settle lets the cloud converge (launches, terminations, transitions).
func settle(t testing.TB, h Harness) {
	for range 12 {
		h.Advance(t, Step)
	}
}

func ids(g cloud.Group) []string {
	var out []string
	for _, in := range g.Instances {
		out = append(out, in.ID)
	}
	slices.Sort(out)
	return out
}

// The --no-surge retirement: detach keeping desired capacity, then terminate. The
// detach takes effect but its answer is lost (the SDK asks again and is refused:
// the instance is no longer InService); a retried Retire must recognise its own
// detach and terminate the instance, not refuse it as "in no group".
func testLostDetach(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 3, Desired: 3})
		before := group(t, p, name)
		old := victim(t, before)
		h.LoseAnswers(t, "DetachInstances", 1)
		o := cloud.RetireOptions{ExecutionID: Execution, KeepCapacity: true}
		var res cloud.RetireResult
		var err error
		for try := 0; try < 20; try++ {
			if res, err = p.Retire(ctxFor(t), old, o); err == nil {
				break
			}
			if !cloud.IsRetryable(err) {
				t.Fatalf("retire #%d after a detach whose answer was lost: %v (want it retried to the end, not refused)", try+1, err)
			}
			h.Advance(t, Step)
		}
		if err != nil || !res.Terminated {
			t.Fatalf("retire = %+v, %v; want the detached instance terminated", res, err)
		}
		settle(t, h)
		in, err := p.Instance(ctxFor(t), old)
		if err != nil || (in.State != cloud.StateTerminated && in.State != cloud.StateShuttingDown) {
			t.Errorf("retired %s: %+v, %v; want terminated", old, in, err)
		}
		after := group(t, p, name)
		if after.Desired != before.Desired || after.CountLifecycle(cloud.LifecycleInService) != int(before.Desired) {
			t.Errorf("after a retire keeping capacity: desired %d, %d InService; want %d (the group replaced the instance)",
				after.Desired, after.CountLifecycle(cloud.LifecycleInService), before.Desired)
		}
	}
}

// EnterStandby and ExitStandby take effect but their answers are lost: the surge
// asks for one replacement only, and the rollback finishes.
func testLostAnswers(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		h.LoseAnswers(t, "EnterStandby", 1)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge with a lost EnterStandby answer: %v", err)
		}
		WaitReplacement(t, p, h, rec, before.Desired)
		settle(t, h)
		if g := group(t, p, name); len(g.Instances) != len(before.Instances)+1 {
			t.Errorf("after a surge whose answer was lost: %d instances, want %d (one replacement)", len(g.Instances), len(before.Instances)+1)
		}
		h.LoseAnswers(t, "ExitStandby", 1)
		RollbackUntilDone(t, p, h, rec)
		settle(t, h)
		after := group(t, p, name)
		if !slices.Equal(ids(after), ids(before)) || after.Desired != before.Desired {
			t.Errorf("after rollback: members %v desired %d, want %v desired %d", ids(after), after.Desired, ids(before), before.Desired)
		}
	}
}

// AWS keeps an instance in EnteringStandby while it leaves the group's load
// balancers (up to the deregistration delay). A rollback then must wait and exit
// standby, not skip the instance and report success.
func testRollbackEnteringStandby(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 3})
		before := group(t, p, name)
		old := victim(t, before)
		h.TransitionDelay(t, cloud.LifecycleEnteringStandby, time.Minute)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		res, err := p.Rollback(ctxFor(t), rec)
		if err != nil || res.Done || !strings.Contains(res.Waiting, cloud.LifecycleEnteringStandby) {
			t.Fatalf("rollback during EnteringStandby = %+v, %v; want not done, waiting for %s", res, err, cloud.LifecycleEnteringStandby)
		}
		RollbackUntilDone(t, p, h, rec)
		settle(t, h)
		after := group(t, p, name)
		if in, _ := after.Instance(old); in.Lifecycle != cloud.LifecycleInService {
			t.Errorf("after rollback %s is %q, want InService", old, in.Lifecycle)
		}
		if !slices.Equal(ids(after), ids(before)) || after.Desired != before.Desired || after.Suspended(cloud.ProcessAZRebalance) {
			t.Errorf("after rollback: members %v desired %d suspended %v; want %v desired %d nothing suspended",
				ids(after), after.Desired, after.SuspendedProcesses, ids(before), before.Desired)
		}
	}
}

// Retire answers "not yet" (ErrNotYet) while the old instance is EnteringStandby or
// Detaching, then finishes.
func testRetireInBetween(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		h.TransitionDelay(t, cloud.LifecycleEnteringStandby, 2*time.Minute)
		h.TransitionDelay(t, cloud.LifecycleDetaching, 30*time.Second)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		WaitReplacement(t, p, h, rec, before.Desired)
		o := cloud.RetireOptions{ExecutionID: Execution, Surge: &rec}
		if g := group(t, p, name); g.CountLifecycle(cloud.LifecycleEnteringStandby) == 1 {
			var ny *cloud.NotYetError
			if _, err := p.Retire(ctxFor(t), old, o); !errors.As(err, &ny) || ny.State != cloud.LifecycleEnteringStandby {
				t.Fatalf("retire during EnteringStandby: %v, want a NotYetError naming %s", err, cloud.LifecycleEnteringStandby)
			}
		}
		res, err := RetireUntilDone(t, p, h, old, o)
		if err != nil || !res.Terminated {
			t.Fatalf("retire = %+v, %v; want terminated", res, err)
		}
		settle(t, h)
		after := group(t, p, name)
		if _, ok := after.Instance(old); ok || after.Desired != before.Desired || after.Suspended(cloud.ProcessAZRebalance) {
			t.Errorf("after retire: %+v; want %s gone, desired %d, AZRebalance resumed", after, old, before.Desired)
		}
	}
}

// A cluster autoscaler raises desired capacity just after Resolve looked at the
// group, so its instance is new to the recycle too. It is not the replacement: the
// replacement is the launch the standby caused, and a rollback leaves the
// autoscaler's instance (and its desired capacity) alone.
func testAutoscalerLaunch(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 6, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		h.SetDesired(t, name, int(before.Desired)+1)
		h.Advance(t, time.Second)
		var theirs string
		for _, id := range ids(group(t, p, name)) {
			if !slices.Contains(ids(before), id) {
				theirs = id
			}
		}
		if theirs == "" {
			t.Fatal("the autoscaler's scale-up launched nothing")
		}
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		rec.Snapshot = ids(before) // the workflow's snapshot is Resolve's, from before the scale-up
		r := WaitReplacement(t, p, h, rec, before.Desired)
		if len(r.InService) != 1 || r.InService[0] == theirs {
			t.Fatalf("replacements %v: want exactly the standby's replacement, not the autoscaler's %s", r.InService, theirs)
		}
		RollbackUntilDone(t, p, h, rec)
		settle(t, h)
		after := group(t, p, name)
		want := append(ids(before), theirs)
		slices.Sort(want)
		if !slices.Equal(ids(after), want) || after.Desired != before.Desired+1 {
			t.Errorf("after rollback: members %v desired %d; want %v desired %d (the autoscaler's instance and scale-up kept)",
				ids(after), after.Desired, want, before.Desired+1)
		}
	}
}

// The replacement is protected from scale-in while the recycle needs it; Retire
// gives it back the protection it had and removes the claim's records.
func testClaim(newProvider NewFunc) func(t *testing.T) {
	return func(t *testing.T) {
		p, h := newProvider(t)
		name := h.CreateGroup(t, GroupSpec{Min: 1, Max: 5, Desired: 2})
		before := group(t, p, name)
		old := victim(t, before)
		rec, err := p.Surge(ctxFor(t), name, []string{old}, opts)
		if err != nil {
			t.Fatalf("surge: %v", err)
		}
		r := WaitReplacement(t, p, h, rec, before.Desired)
		var ours []string
		for i := range 2 { // the second claim (its first answer lost) changes nothing
			if i > 0 {
				if r, err = p.FindReplacement(ctxFor(t), rec); err != nil || !slices.Equal(r.Protected, r.InService) {
					t.Fatalf("look after the claim: %+v, %v; want the replacement protected", r, err)
				}
			}
			if ours, err = p.ClaimReplacement(ctxFor(t), rec, r); err != nil || !slices.Equal(ours, r.InService) {
				t.Fatalf("claim #%d: %v, %v; want %v protected by this execution", i+1, ours, err, r.InService)
			}
		}
		repl := r.InService[0]
		if gi, _ := group(t, p, name).Instance(repl); !gi.ProtectedFromScaleIn {
			t.Errorf("claimed replacement %s is not protected from scale-in", repl)
		}
		in, err := p.Instance(ctxFor(t), repl)
		if err != nil || in.Tags[cloud.TagReplacementFor] != old || in.Tags[cloud.TagExecution] != Execution || in.Tags[cloud.TagProtectedBefore] != "false" {
			t.Errorf("claimed replacement tags %v, %v; want %s=%s, %s=%s, %s=false", in.Tags, err,
				cloud.TagReplacementFor, old, cloud.TagExecution, Execution, cloud.TagProtectedBefore)
		}
		// The cloud alone tells what the recycle changed: the old instance in standby,
		// the replacement it claimed, both naming the execution.
		found := map[string]cloud.Instance{}
		rs, err := p.Recorded(ctxFor(t))
		if err != nil {
			t.Fatalf("recorded: %v", err)
		}
		for _, in := range rs {
			if in.Group == name {
				found[in.ID] = in
			}
		}
		if in := found[old]; in.Tags[cloud.TagExecution] != Execution || in.Tags[cloud.TagStandbyAt] == "" || in.Lifecycle != cloud.LifecycleStandby {
			t.Errorf("recorded %s: %+v; want in Standby with %s=%s and %s", old, in, cloud.TagExecution, Execution, cloud.TagStandbyAt)
		}
		if _, ok := found[repl]; !ok || len(found) != 2 {
			t.Errorf("recorded instances %v: want exactly the old %s and the replacement %s", slices.Sorted(maps.Keys(found)), old, repl)
		}
		rec.Replacements, rec.Claimed, rec.ProtectedReplacements = r.InService, true, ours
		if _, err := RetireUntilDone(t, p, h, old, cloud.RetireOptions{Surge: &rec}); err != nil {
			t.Fatalf("retire: %v", err)
		}
		if gi, _ := group(t, p, name).Instance(repl); gi.ProtectedFromScaleIn {
			t.Errorf("after retire %s is still protected from scale-in", repl)
		}
		if in, err := p.Instance(ctxFor(t), repl); err != nil || in.Tags[cloud.TagReplacementFor] != "" || in.Tags[cloud.TagProtectedBefore] != "" {
			t.Errorf("after retire the replacement keeps the claim's tags: %v, %v", in.Tags, err)
		}
	}
}
