package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/window"
)

// IterState is the state of one item's iteration as the rollout machine carries it.
type IterState struct {
	Item        ItemInput          `json:"item"`
	Group       string             `json:"group"`
	RolloutID   string             `json:"rolloutId"`
	RolloutName string             `json:"rolloutName"`
	Gate        *GateResult        `json:"gate,omitempty"`
	Failure     *recycle.StepError `json:"failure,omitempty"`    // the child recycle did not succeed
	PauseEnded  json.RawMessage    `json:"pauseEnded,omitempty"` // the pause waited for ended
}

// Gate decisions.
const (
	DecisionGo     = "go"     // the child recycle is started: wait for it
	DecisionWait   = "wait"   // not yet: look again at Until
	DecisionPaused = "paused" // wait for the pause execution to end
	DecisionSkip   = "skip"   // the node is no longer a candidate
	DecisionFailed = "failed" // the node's recycle failed; the rollout goes on
	DecisionAbort  = "abort"  // abort the rollout
)

// GateResult is the gate's answer ($.gate).
type GateResult struct {
	Decision   string    `json:"decision"`
	InstanceID string    `json:"instanceId"`
	Reason     string    `json:"reason,omitempty"`
	Until      time.Time `json:"until,omitzero"` // wait: never in the past
	Child      *ExecRef  `json:"child,omitempty"`
	Pause      *ExecRef  `json:"pause,omitempty"`
	// HoldSince is when a health hold of this item began (its deadline is PauseTimeout later).
	HoldSince time.Time `json:"holdSince,omitzero"`
	At        time.Time `json:"at"`
}

// ExecRef names a child execution with the exact input it is started with (the same
// name and input find it again).
type ExecRef struct {
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// PauseInput is a pause execution's input.
type PauseInput struct {
	RolloutID   string    `json:"rolloutId"`
	RolloutName string    `json:"rolloutName"`
	Reason      string    `json:"reason"`
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
}

// Gate decides, before each recycle of a rollout, whether it may start now, and
// starts it when it may. After a failed recycle it applies --on-failure. It changes
// nothing but the child execution, a pause execution and batch cordons; everything it
// reads it reads fresh (the group through a 1 s cache), and anything it cannot read
// is an error: the state machine retries, nothing starts ("fail closed").
func (t *Tasks) Gate(ctx context.Context, s IterState) (*GateResult, error) {
	in, err := t.input(ctx, s.RolloutID)
	if err != nil {
		return nil, err
	}
	now := t.Clock.Now().UTC()
	res := &GateResult{InstanceID: s.Item.InstanceID, At: now}
	if s.Gate != nil {
		res.Child = s.Gate.Child
	}
	if s.Failure != nil {
		return t.afterFailure(ctx, in, s, res)
	}
	child := t.childRef(in, s)
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	// A re-run after a crash: the recycle this gate started before exists (running or
	// ended); the Recycle state attaches to it.
	if exs, err := e.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Name: child.Name}); err != nil {
		return nil, fmt.Errorf("find recycle %s: %w", child.Name, err)
	} else if len(exs) > 0 {
		if !sameRequest(exs[0].Input, child.Input) {
			// Not ours: someone recycled the instance under that name since the rollout
			// began (`recycler recycle` names its recycle the same way).
			return t.terminal(ctx, s, res, DecisionSkip, fmt.Sprintf("recycled meanwhile by execution %s (%s, %s)", exs[0].ID, exs[0].Name, exs[0].Status))
		}
		res.Decision, res.Child, res.Reason = DecisionGo, child, "recycle already started"
		return res, nil
	}
	mine, err := t.running(ctx, recycle.StateMachineName, "", in.kids)
	if err != nil {
		return nil, err
	}
	gs, err := t.groupState(ctx, s.Group, now)
	if err != nil {
		return nil, err
	}
	if why := gs.stillCandidate(s.Item, s.RolloutID); why != "" {
		return t.terminal(ctx, s, res, DecisionSkip, why)
	}
	pauses, err := t.running(ctx, PauseStateMachineName, pausePrefix(s.RolloutName), nil)
	if err != nil {
		return nil, err
	}
	if len(pauses) > 0 {
		p := pauses[0]
		var pin PauseInput
		_ = json.Unmarshal(p.Input, &pin)
		res.Decision, res.Pause, res.Reason = DecisionPaused, &ExecRef{Name: p.Name, Input: p.Input}, "paused: "+pin.Reason
		return res, nil
	}
	windows, err := window.ParseAll(in.Rollout.Windows)
	if err != nil {
		return nil, fmt.Errorf("rollout windows: %w", err)
	}
	if !windows.Open(now) {
		next := windows.NextOpen(now)
		res.Decision, res.Until = DecisionWait, next
		res.Reason = fmt.Sprintf("outside the maintenance windows (%s): next opens %s", strings.Join(windows.Strings(), "; "), next.Format(time.RFC3339))
		return res, nil
	}
	check := time.Duration(max(1, in.Rollout.CheckSeconds)) * time.Second
	bad, size, err := t.unhealthy(ctx, gs, in, s, mine, now)
	if err != nil {
		return nil, err
	}
	if limit := in.Rollout.MaxUnhealthy; limit.Exceeded(len(bad), size) {
		return t.healthHold(ctx, in, s, res, fmt.Sprintf("%d of %d nodes of group %s are unhealthy (more than --max-unhealthy %s): %s",
			len(bad), size, s.Group, limit, strings.Join(first(bad, 5), ", ")), check)
	}
	// From here on one gate at a time: the surge cap counts what is running, and the
	// start below is what it counts.
	t.startMu.Lock()
	defer t.startMu.Unlock()
	if limit := in.Rollout.MaxSurge; limit > 0 {
		mine, err = t.running(ctx, recycle.StateMachineName, "", in.kids)
		if err != nil {
			return nil, err
		}
		if len(mine) >= limit {
			res.Decision, res.Until = DecisionWait, now.Add(check)
			res.Reason = fmt.Sprintf("%d recycles running across groups, the --max-surge cap", len(mine))
			return res, nil
		}
	}
	if in.Rollout.FenceBatch {
		if err := t.cordonBatch(ctx, in, s, gs); err != nil {
			return nil, err
		}
	}
	if _, err := t.startChild(ctx, recycleARN, child.Name, child.Input); err != nil {
		return nil, err
	}
	res.Decision, res.Child, res.Reason = DecisionGo, child, "started"
	return res, nil
}

// childRef is the item's recycle: the rollout's request for this instance.
func (t *Tasks) childRef(in *rolloutInput, s IterState) *ExecRef {
	req := in.Request
	req.SetTarget(s.Item.InstanceID)
	raw, _ := json.Marshal(recycle.State{Request: req})
	return &ExecRef{Name: s.Item.ChildName(), Input: raw}
}

// afterFailure applies --on-failure once the item's recycle did not succeed.
func (t *Tasks) afterFailure(ctx context.Context, in *rolloutInput, s IterState, res *GateResult) (*GateResult, error) {
	reason := "the recycle of " + s.Item.Node + " failed"
	// Everything below is derived from durable state (the ended recycle, the state
	// document), so a re-run after a crash builds the same pause: same name, same input.
	since := res.At
	if s.Gate != nil {
		since = s.Gate.At
	}
	if s.Gate != nil && s.Gate.Child != nil {
		// The same name and input find the recycle that ended.
		ex, err := t.startChild(ctx, recycleARN, s.Gate.Child.Name, s.Gate.Child.Input)
		if err != nil {
			return nil, err
		}
		reason = fmt.Sprintf("the recycle of %s (execution %s) ended %s: %s: %s", s.Item.Node, ex.ID, ex.Status, ex.Error, firstLine(ex.Cause))
		if !ex.StopTime.IsZero() {
			since = ex.StopTime.UTC()
		}
	}
	switch in.Rollout.OnFailure {
	case OnFailureContinue:
		return t.terminal(ctx, s, res, DecisionFailed, reason)
	case OnFailureAbort:
		return t.terminal(ctx, s, res, DecisionAbort, reason+" (--on-failure abort)")
	}
	var ref *ExecRef
	if s.Gate != nil && s.Gate.Decision == DecisionPaused {
		ref = s.Gate.Pause
	}
	if ref == nil {
		raw, _ := json.Marshal(PauseInput{RolloutID: s.RolloutID, RolloutName: s.RolloutName, Reason: reason, Since: since,
			Until: since.Add(time.Duration(in.Rollout.PauseTimeout))})
		ref = &ExecRef{Name: pauseName(s.RolloutName, s.Item.InstanceID), Input: raw}
	}
	ex, err := t.startChild(ctx, pauseARN, ref.Name, ref.Input)
	if err != nil {
		return nil, err
	}
	switch ex.Status {
	case engine.StatusRunning:
		res.Decision, res.Pause, res.Reason = DecisionPaused, ref, "paused: "+reason
		return res, nil
	case engine.StatusAborted: // resumed
		return t.terminal(ctx, s, res, DecisionFailed, reason+" (resumed)")
	}
	return t.terminal(ctx, s, res, DecisionAbort, reason+" (nobody resumed the rollout within --pause-timeout)")
}

// healthHold waits for the group to be healthy again, up to PauseTimeout; then it
// pauses the rollout for a person.
func (t *Tasks) healthHold(ctx context.Context, in *rolloutInput, s IterState, res *GateResult, reason string, check time.Duration) (*GateResult, error) {
	since := res.At
	held := s.Gate != nil && s.Gate.Decision == DecisionWait && !s.Gate.HoldSince.IsZero()
	if held {
		since = s.Gate.HoldSince
	}
	deadline := since.Add(time.Duration(in.Rollout.PauseTimeout))
	if res.At.Before(deadline) || !held {
		res.Decision, res.HoldSince, res.Until = DecisionWait, since, minTime(res.At.Add(check), deadline)
		res.Reason = reason + "; starting nothing until they recover"
		return res, nil
	}
	// Derived from the hold's start (in the state document), so a re-run after a crash
	// builds the same pause.
	raw, _ := json.Marshal(PauseInput{RolloutID: s.RolloutID, RolloutName: s.RolloutName, Since: deadline,
		Until: deadline.Add(time.Duration(in.Rollout.PauseTimeout)), Reason: fmt.Sprintf("held longer than --pause-timeout %s: %s", in.Rollout.PauseTimeout, s.Gate.Reason)})
	ref := &ExecRef{Name: pauseName(s.RolloutName, fmt.Sprintf("health-%s-%d", shortHash(s.Group), since.Unix())), Input: raw}
	if _, err := t.startChild(ctx, pauseARN, ref.Name, ref.Input); err != nil {
		return nil, err
	}
	res.Decision, res.Pause, res.Reason = DecisionPaused, ref, "paused: "+reason
	return res, nil
}

// terminal ends the item without a (further) recycle: its batch cordon is lifted.
func (t *Tasks) terminal(ctx context.Context, s IterState, res *GateResult, decision, reason string) (*GateResult, error) {
	if err := t.Cluster.UncordonForBatch(ctx, s.Item.Node, s.RolloutID); err != nil {
		return nil, err
	}
	res.Decision, res.Reason, res.Pause = decision, reason, nil
	return res, nil
}

// groupState is one look at a group: its members in the cloud and their Nodes.
type groupState struct {
	group  cloud.Group
	byID   map[string]cloud.GroupInstance
	nodes  map[string]*corev1.Node // by instance id
	seenAt time.Time
}

func (t *Tasks) groupState(ctx context.Context, name string, now time.Time) (groupState, error) {
	ttl := t.GroupTTL
	if ttl == 0 {
		ttl = time.Second
	}
	t.mu.Lock()
	hit, ok := t.groups[name]
	t.mu.Unlock()
	if ok && now.Sub(hit.at) < ttl && !now.Before(hit.at) {
		return hit.g, nil
	}
	g, err := t.Cloud.GroupMembers(ctx, name)
	if err != nil {
		return groupState{}, fmt.Errorf("describe group %s: %w", name, err)
	}
	nodes, err := t.Cluster.Nodes(ctx, "")
	if err != nil {
		return groupState{}, err
	}
	gs := groupState{group: g, byID: map[string]cloud.GroupInstance{}, nodes: map[string]*corev1.Node{}, seenAt: now}
	for _, gi := range g.Instances {
		gs.byID[gi.ID] = gi
	}
	for i := range nodes {
		if id, err := kube.InstanceID(&nodes[i]); err == nil {
			if _, member := gs.byID[id]; member {
				n := nodes[i] // the members only: the cached view must not keep the whole fleet alive
				gs.nodes[id] = &n
			}
		}
	}
	t.mu.Lock()
	t.groups[name] = groupHit{at: now, g: gs}
	t.mu.Unlock()
	return gs, nil
}

// stillCandidate says why the item can no longer be recycled ("" = it can).
func (gs groupState) stillCandidate(it ItemInput, rolloutID string) string {
	gi, ok := gs.byID[it.InstanceID]
	if !ok {
		return fmt.Sprintf("instance %s is no longer in group %s (terminated, detached or replaced meanwhile)", it.InstanceID, gs.group.Name)
	}
	n := gs.nodes[it.InstanceID]
	if n != nil {
		if bc, ok := kube.BatchCordonOf(n); ok && bc.Rollout == rolloutID {
			// Our own batch cordon: the node is still ours to recycle.
			m := n.DeepCopy()
			m.Spec.Unschedulable = m.Spec.Unschedulable && !bc.Cordoned
			delete(m.Annotations, kube.AnnotationBatchCordon)
			n = m
		}
	}
	return skipReason(gi, n)
}

// unhealthy lists the group's nodes that count against the health budget, and the
// size the budget is a share of (the group's desired capacity). Counted: members that
// are NotReady, have no Node, are being deleted or terminated, are in someone else's
// Standby, or are fenced or cordoned by anyone but this rollout's own recycles and
// batch cordons. Not counted: this rollout's recycles in flight (their capacity is
// surged) and new instances still booting (no Ready Node yet, younger than the
// replacement timeout).
func (t *Tasks) unhealthy(ctx context.Context, gs groupState, in *rolloutInput, s IterState, mine []engine.Execution, now time.Time) ([]string, int, error) {
	ours := map[string]bool{} // execution ids of this rollout's recycles in flight
	oldOfOurs := map[string]bool{}
	for _, ex := range mine {
		ours[ex.ID] = true
		oldOfOurs[in.kids[ex.Name].InstanceID] = true
	}
	var members map[string]bool
	for _, g := range in.Groups {
		if g.Name == s.Group {
			members = make(map[string]bool, len(g.Members))
			for _, id := range g.Members {
				members[id] = true
			}
		}
	}
	grace := time.Duration(in.Request.ReplacementTimeout)
	e, err := t.executions(ctx)
	if err != nil {
		return nil, 0, err
	}
	var bad []string
	ids := make([]string, 0, len(gs.group.Instances))
	for _, gi := range gs.group.Instances {
		ids = append(ids, gi.ID)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if oldOfOurs[id] {
			continue
		}
		gi, n := gs.byID[id], gs.nodes[id]
		name := id
		if n != nil {
			name = n.Name
		}
		isNew := !members[id]
		switch gi.Lifecycle {
		case cloud.LifecyclePending, cloud.LifecyclePendingWait, cloud.LifecyclePendingProceed:
			continue // booting
		case cloud.LifecycleInService:
		case cloud.LifecycleStandby, cloud.LifecycleEnteringStandby:
			bad = append(bad, name+" in Standby")
			continue
		default:
			bad = append(bad, name+" "+gi.Lifecycle)
			continue
		}
		if n == nil {
			if !isNew {
				bad = append(bad, name+" has no Node")
			}
			continue
		}
		if n.DeletionTimestamp != nil {
			bad = append(bad, name+" being deleted")
			continue
		}
		if ready, _ := kube.NodeIsReady(n, nil); !ready {
			if !isNew || now.Sub(n.CreationTimestamp.Time) >= grace { // a new node has ReplacementTimeout to become Ready
				bad = append(bad, name+" NotReady")
			}
			continue
		}
		if rec, ok := kube.FenceOf(n); ok {
			if ours[rec.ExecutionID] || t.ourChild(ctx, e, rec.ExecutionID, in) {
				continue
			}
			bad = append(bad, name+" fenced by execution "+rec.ExecutionID)
			continue
		}
		if bc, ok := kube.BatchCordonOf(n); ok && bc.Rollout == s.RolloutID {
			continue
		}
		if n.Spec.Unschedulable || hasTaint(n, kube.TaintKey) {
			bad = append(bad, name+" cordoned")
		}
	}
	return bad, int(gs.group.Desired), nil
}

// ourChild: a fence left by one of this rollout's recycles that just ended (its
// rollback is lifting it) is ours too.
func (t *Tasks) ourChild(ctx context.Context, e Executions, id string, in *rolloutInput) bool {
	ex, err := e.Describe(ctx, id)
	if err != nil || ex.StateMachine != recycle.StateMachineName {
		return false
	}
	_, ok := in.kids[ex.Name]
	return ok
}

// cordonBatch cordons every node of the item's batch not started yet (--fence-batch).
func (t *Tasks) cordonBatch(ctx context.Context, in *rolloutInput, s IterState, gs groupState) error {
	for _, g := range in.Groups {
		if g.Name != s.Group {
			continue
		}
		for _, it := range g.Items {
			if it.Batch != s.Item.Batch {
				continue
			}
			n := gs.nodes[it.InstanceID]
			if n == nil {
				continue
			}
			if bc, ok := kube.BatchCordonOf(n); ok && bc.Rollout == s.RolloutID {
				continue
			}
			if _, fenced := kube.FenceOf(n); fenced {
				continue
			}
			err := t.Cluster.CordonForBatch(ctx, n.Name, s.RolloutID)
			if err != nil && !errors.Is(err, kube.ErrNodeHeld) {
				return err
			}
		}
	}
	return nil
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func batchCordon(n *corev1.Node) (string, bool) {
	bc, ok := kube.BatchCordonOf(n)
	return bc.Rollout, ok
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(append([]string(nil), s[:n]...), fmt.Sprintf("+%d more", len(s)-n))
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sameRequest tells whether an execution's input is the child input this gate
// builds (json.Marshal of the same request: the same bytes, spacing aside).
func sameRequest(got, want json.RawMessage) bool {
	var a, b bytes.Buffer
	return json.Compact(&a, got) == nil && json.Compact(&b, want) == nil && bytes.Equal(a.Bytes(), b.Bytes())
}
