package recycle

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/cloud"
)

// hookCloud records lifecycle calls; the other methods are never reached here (the
// end-to-end proof is internal/serve's TestServeLifecycleHookDrainsHeartbeatsAndCompletes).
type hookCloud struct {
	Cloud
	heartbeats int
	completed  []cloud.LifecycleResult
}

func (c *hookCloud) RecordHeartbeat(context.Context, cloud.LifecycleAction) error {
	c.heartbeats++
	return nil
}

func (c *hookCloud) CompleteLifecycleAction(_ context.Context, _ cloud.LifecycleAction, r cloud.LifecycleResult) error {
	c.completed = append(c.completed, r)
	return nil
}

func (c *hookCloud) Rollback(context.Context, cloud.SurgeRecord) (cloud.RollbackResult, error) {
	return cloud.RollbackResult{Done: true}, nil
}

func (c *hookCloud) Group(context.Context, string) (cloud.Group, error) {
	return cloud.Group{}, cloud.ErrNotFound
}

type unfenceOnly struct{ Cluster }

func (unfenceOnly) Unfence(context.Context, string, string) error { return nil }

func hookState(now time.Time, timeout time.Duration) State {
	req := NewRequest("i-0123456789abcdef0")
	req.LifecycleHook = &LifecycleHook{Group: "g", Name: "drain", Token: "t"}
	req.NoSurge = true
	return State{Request: req, Target: &Target{Node: "n", InstanceID: "i-0123456789abcdef0", Group: "g",
		Hook: &HookTiming{HeartbeatTimeout: Duration(timeout), GlobalDeadline: now.Add(100 * timeout), HeartbeatAt: now}}}
}

// The promise: heartbeats at most half the HeartbeatTimeout apart. A task heartbeats
// once a quarter has passed, and a check blocks at most a quarter minus 1 s.
func TestHeartbeatsStayWithinHalfTheTimeout(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	c := &hookCloud{}
	tasks := &Tasks{Cloud: c, Clock: clk}
	s := hookState(now, 30*time.Second)
	if got := checkSeconds(s); got != 6 { // 30 s / 4 − 1
		t.Fatalf("checkSeconds = %d, want 6", got)
	}
	last := s.Target.Hook.HeartbeatAt
	clk.Step(7 * time.Second) // < 7.5 s: not due
	if l, err := tasks.keepHookAlive(context.Background(), s, last); err != nil || c.heartbeats != 0 || !l.Equal(last) {
		t.Fatalf("heartbeat before due: %d calls, err %v", c.heartbeats, err)
	}
	clk.Step(time.Second)
	l, err := tasks.keepHookAlive(context.Background(), s, last)
	if err != nil || c.heartbeats != 1 || !l.Equal(clk.Now()) {
		t.Fatalf("no heartbeat when due: %d calls, err %v", c.heartbeats, err)
	}
	// Worst case between two heartbeats: due just after a call (7.5 s), then one
	// bounded check (6 s) and the state machine's 1 s pause: 14.5 s < 15 s.
	if worst := 7500*time.Millisecond + time.Duration(checkSeconds(s))*time.Second + time.Second; worst >= 15*time.Second {
		t.Errorf("worst gap %s, promised < half of 30 s", worst)
	}
	// A long timeout keeps the request's own bound.
	if got := checkSeconds(hookState(now, time.Hour)); got != DefaultCheckSeconds {
		t.Errorf("checkSeconds under a 1 h hook = %d, want %d", got, DefaultCheckSeconds)
	}
	// The drain deadline stays a minute before the global timeout.
	s.Target.Hook.GlobalDeadline = now.Add(time.Hour)
	if d := hookDeadline(s, now.Add(24*time.Hour)); !d.Equal(now.Add(59 * time.Minute)) {
		t.Errorf("drain deadline %s, want 1 min before the global timeout", d)
	}
}

func TestRollbackOfAHookRecycleAnswersContinueNeverAbandon(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &hookCloud{}
	tasks := &Tasks{Cloud: c, Cluster: unfenceOnly{}, Clock: clocktesting.NewFakeClock(now)}
	st, err := tasks.rollback(context.Background(), "exec-1", hookState(now, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.completed) != 1 || c.completed[0] != cloud.LifecycleContinue || !st.LifecycleComplete {
		t.Fatalf("rollback answered %v (complete=%v), want exactly CONTINUE", c.completed, st.LifecycleComplete)
	}
}
