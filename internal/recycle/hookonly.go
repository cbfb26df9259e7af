package recycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// A terminate lifecycle action Recycler must answer without recycling the node
// (docs/serve.md, "Terminate hooks Recycler did not start"): Resolve decides, the
// AnswerHook task answers. Both engines and the Lambda run the same decision.
//
//   - Our own termination: a rollback terminates its replacement through the group
//     (TerminateInstanceInAutoScalingGroup), recorded first on the instance
//     (cloud.TagTerminatedAt); Retire detaches the old instance first
//     (cloud.TagDetachedAt), after its drain. The node is drained already:
//     CONTINUE at once, nothing else.
//   - A node another recycle holds (its fence): that recycle drains it. The
//     action is heartbeated meanwhile and answered CONTINUE once the node has no
//     pods left the drain moves, or is gone. If the holder lets go of a node that
//     still exists (it rolled back), this execution recycles the node itself:
//     back to Resolve.

// HookOnly is Resolve's verdict that this lifecycle action only needs an answer.
type HookOnly struct {
	// By is the execution that terminated the instance (Own) or holds its node.
	By     string `json:"by"`
	Own    bool   `json:"own,omitempty"`
	Reason string `json:"reason"`
}

// HookAnswer is AnswerHook's result; the state machine calls it again until Done,
// or goes back to Resolve when Resolve is set.
type HookAnswer struct {
	Done      bool      `json:"done"`
	Resolve   bool      `json:"resolve,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	// Deadline: the action is answered then, drained or not (the hook's global
	// timeout less a margin, and no later than our own drain would have ended).
	Deadline    time.Time `json:"deadline"`
	HeartbeatAt time.Time `json:"heartbeatAt,omitzero"`
	Answered    bool      `json:"answered,omitempty"`
}

// ownTermination names the execution whose own records say it made the group
// terminate inst ("" when none did).
func ownTermination(inst cloud.Instance) string {
	if inst.Tags[cloud.TagTerminatedAt] != "" || inst.Tags[cloud.TagDetachedAt] != "" {
		return inst.Tags[cloud.TagExecution]
	}
	return ""
}

// answerHook answers a lifecycle action Resolve found only needs one.
func (t *Tasks) answerHook(ctx context.Context, s State) (*HookAnswer, error) {
	tgt, err := needTarget(s)
	if err != nil {
		return nil, err
	}
	only := tgt.HookOnly
	if only == nil || s.Request.LifecycleHook == nil {
		return nil, newError(ErrBadInput, "AnswerHook without a lifecycle action Resolve found to answer only")
	}
	now := t.Clock.Now().UTC()
	st := &HookAnswer{StartedAt: now, Deadline: hookDeadline(s, now.Add(time.Duration(s.Request.MaxWait+s.Request.ForceGrace)))}
	if prev := s.Answer; prev != nil && !prev.StartedAt.IsZero() {
		st.StartedAt, st.Deadline, st.HeartbeatAt = prev.StartedAt, prev.Deadline, prev.HeartbeatAt
	}
	if only.Own {
		return t.answered(ctx, s, st, only.Reason)
	}
	for {
		node, err := t.Cluster.ResolveNode(ctx, tgt.Node)
		if errors.Is(err, kube.ErrNodeNotFound) {
			return t.answered(ctx, s, st, fmt.Sprintf("node %s is gone", tgt.Node))
		}
		if err != nil {
			return nil, fmt.Errorf("look at node %s: %w", tgt.Node, err)
		}
		if rec, ok := kube.FenceOf(node); !ok || rec.ExecutionID != only.By {
			// The holder let go (rolled back) of a node that still runs pods: recycle it.
			st.Resolve, st.Reason = true, fmt.Sprintf("execution %s no longer holds node %s: this execution recycles it", only.By, tgt.Node)
			return st, nil
		}
		sel, err := holderSelector(node, s.Request)
		if err != nil {
			return nil, err
		}
		pods, err := t.Cluster.PodsOnNode(ctx, tgt.Node, sel)
		if err != nil {
			return nil, fmt.Errorf("list pods on %s: %w", tgt.Node, err)
		}
		if pods.Remaining() == 0 {
			return t.answered(ctx, s, st, fmt.Sprintf("execution %s drained node %s", only.By, tgt.Node))
		}
		if !t.Clock.Now().Before(st.Deadline) {
			// Never left to time out: CONTINUE is the end Auto Scaling would reach anyway.
			return t.answered(ctx, s, st, fmt.Sprintf("deadline %s reached with %d pod(s) left on %s (execution %s still drains it)",
				st.Deadline.Format(time.RFC3339), pods.Remaining(), tgt.Node, only.By))
		}
		if st.HeartbeatAt, err = t.keepHookAlive(ctx, s, st.HeartbeatAt); err != nil {
			return nil, err
		}
		st.Reason = fmt.Sprintf("execution %s drains node %s: %d pod(s) left", only.By, tgt.Node, pods.Remaining())
		bctx, cancel := t.bound(ctx, checkSeconds(s), st.StartedAt, st.Deadline)
		_, changed, err := t.Cluster.WaitPodsChange(bctx, tgt.Node, sel, pods)
		over := bctx.Err() != nil // the bound ended the wait (err, if any, says only that)
		cancel()
		if err != nil && !over {
			return nil, fmt.Errorf("watch pods on %s: %w", tgt.Node, err)
		}
		if over || !changed {
			return st, nil //nolint:nilerr // the bound cut the wait: not yet, the state machine asks again
		}
	}
}

// answered completes the action with CONTINUE (never ABANDON: the instance goes
// whatever we answer, and ABANDON would skip the group's other terminate hooks).
func (t *Tasks) answered(ctx context.Context, s State, st *HookAnswer, why string) (*HookAnswer, error) {
	ok, err := t.completeHook(ctx, s, cloud.LifecycleContinue)
	if err != nil {
		return nil, err
	}
	st.Done, st.Answered, st.Reason = true, ok, why+": lifecycle action answered CONTINUE"
	return st, nil
}

// holderSelector is the pod selector of the recycle holding node (its request, as
// its fence records it), else ours.
func holderSelector(node *corev1.Node, ours Request) (kube.PodSelector, error) {
	req := ours
	if rec, ok := kube.FenceOf(node); ok && rec.Recycle != nil && len(rec.Recycle.Request) > 0 {
		var theirs Request
		if json.Unmarshal(rec.Recycle.Request, &theirs) == nil {
			req = theirs
		}
	}
	p, err := req.DrainPolicy()
	if err != nil {
		return kube.PodSelector{}, err
	}
	return p.Selector, nil
}
