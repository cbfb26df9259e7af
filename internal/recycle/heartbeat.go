package recycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/recycler/recycler/internal/cloud"
)

// Lifecycle-hook heartbeats live in the tasks, not in the process that drives them:
// the same definition then keeps a hook alive on the embedded engine and on Step
// Functions (where no process of ours runs between tasks). Every task that can last
// (Drain, CheckWorkloads; Resolve once, to prove the action is still live) records
// a heartbeat when half the promised period has passed since the last one, and
// bounds its own wait so the next call comes in time. The promise: the gap between
// heartbeats stays under half the hook's HeartbeatTimeout, while the engine runs.

// HookTiming is what Resolve learned about the lifecycle action that started a recycle.
type HookTiming struct {
	HeartbeatTimeout Duration  `json:"heartbeatTimeout"`
	GlobalDeadline   time.Time `json:"globalDeadline"` // Auto Scaling ends the action then, whatever we do
	HeartbeatAt      time.Time `json:"heartbeatAt"`    // Resolve's heartbeat
}

// hookMargin keeps the drain's deadline this far before the hook's global timeout,
// so the recycle ends (and completes the action) before Auto Scaling does.
const hookMargin = time.Minute

// period is the longest gap between two heartbeats: half the HeartbeatTimeout.
func (h *HookTiming) period() time.Duration { return time.Duration(h.HeartbeatTimeout) / 2 }

// resolveHook checks that the action is live (a heartbeat: ErrNotFound means it is
// over) and records the hook's timeouts.
func (t *Tasks) resolveHook(ctx context.Context, req Request, inst string, g cloud.Group) (*HookTiming, error) {
	h := req.LifecycleHook
	var hook *cloud.LifecycleHook
	for i := range g.LifecycleHooks {
		if g.LifecycleHooks[i].Name == h.Name {
			hook = &g.LifecycleHooks[i]
		}
	}
	if hook == nil {
		return nil, newError(ErrBadInput, "group %s has no lifecycle hook %q: the event names a hook that does not exist (deleted since?)", g.Name, h.Name)
	}
	now := t.Clock.Now().UTC()
	started := h.StartedAt
	if started.IsZero() || started.After(now) {
		started = now
	}
	global := hook.GlobalTimeout
	if global <= 0 {
		global = min(48*time.Hour, 100*hook.HeartbeatTimeout)
	}
	act := cloud.LifecycleAction{Group: h.Group, Hook: h.Name, InstanceID: inst, Token: h.Token}
	if err := t.Cloud.RecordHeartbeat(ctx, act); err != nil {
		if errors.Is(err, cloud.ErrNotFound) {
			return nil, newError(ErrPrecondition, "lifecycle action %s of %s is over (completed or timed out): nothing to drain for it", h.Name, inst)
		}
		return nil, fmt.Errorf("heartbeat lifecycle action %s of %s: %w", h.Name, inst, err)
	}
	return &HookTiming{HeartbeatTimeout: Duration(hook.HeartbeatTimeout), GlobalDeadline: started.Add(global), HeartbeatAt: now}, nil
}

// keepHookAlive records a heartbeat when one is due and returns when the last one
// was made (last, unchanged, when none was due or there is no hook).
func (t *Tasks) keepHookAlive(ctx context.Context, s State, last time.Time) (time.Time, error) {
	if s.Request.LifecycleHook == nil || s.Target == nil || s.Target.Hook == nil {
		return last, nil
	}
	if l := lastHeartbeat(s); l.After(last) {
		last = l
	}
	now := t.Clock.Now().UTC()
	if now.Sub(last) < s.Target.Hook.period()/2 {
		return last, nil
	}
	h := s.Request.LifecycleHook
	act := cloud.LifecycleAction{Group: h.Group, Hook: h.Name, InstanceID: s.Target.InstanceID, Token: h.Token}
	if err := t.Cloud.RecordHeartbeat(ctx, act); err != nil {
		if errors.Is(err, cloud.ErrNotFound) {
			return last, fmt.Errorf("lifecycle action %s of %s ended before the drain did (timed out, or completed by someone else): Auto Scaling terminates the instance now: %w", h.Name, s.Target.InstanceID, err)
		}
		return last, fmt.Errorf("heartbeat lifecycle action %s of %s: %w", h.Name, s.Target.InstanceID, err)
	}
	return now, nil
}

// lastHeartbeat is the latest heartbeat any step recorded.
func lastHeartbeat(s State) time.Time {
	var last time.Time
	if s.Target != nil && s.Target.Hook != nil {
		last = s.Target.Hook.HeartbeatAt
	}
	if s.Drain != nil && s.Drain.HeartbeatAt.After(last) {
		last = s.Drain.HeartbeatAt
	}
	if s.Workloads != nil && s.Workloads.HeartbeatAt.After(last) {
		last = s.Workloads.HeartbeatAt
	}
	if s.Answer != nil && s.Answer.HeartbeatAt.After(last) {
		last = s.Answer.HeartbeatAt
	}
	return last
}

// checkSeconds bounds one check: the request's CheckSeconds, shorter under a hook
// so the next call (and its heartbeat) comes before the promised period ends.
func checkSeconds(s State) int {
	n := s.Request.CheckSeconds
	if s.Target != nil && s.Target.Hook != nil {
		limit := int(s.Target.Hook.period()/2/time.Second) - 1
		n = max(1, min(n, limit))
	}
	return n
}

// hookDeadline keeps a drain deadline before the hook's global timeout.
func hookDeadline(s State, d time.Time) time.Time {
	if s.Target == nil || s.Target.Hook == nil {
		return d
	}
	if limit := s.Target.Hook.GlobalDeadline.Add(-hookMargin); limit.Before(d) {
		return limit
	}
	return d
}
