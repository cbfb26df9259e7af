package recycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// Cloud is what a recycle needs from the cloud; internal/cloud/aws implements it.
type Cloud interface {
	cloud.Describer
	cloud.Surger
	cloud.Retirer
	cloud.Lifecycle
	// Membership is Instance with only what Resolve needs (group, lifecycle, zone):
	// one call for a group member.
	Membership(ctx context.Context, id string) (cloud.Instance, error)
	// GroupMembers is Group without resolving launch templates or reading hooks.
	GroupMembers(ctx context.Context, name string) (cloud.Group, error)
}

// Cluster is what a recycle needs from Kubernetes; *kube.Client implements it.
type Cluster interface {
	ResolveNode(ctx context.Context, ref string) (*corev1.Node, error)
	Fence(ctx context.Context, node, executionID string) (kube.FenceRecord, error)
	Unfence(ctx context.Context, node, executionID string) error
	NoteFence(ctx context.Context, node, executionID string, update func(*kube.RecycleInfo)) error
	FencedNodes(ctx context.Context) ([]kube.FencedNode, error)
	PodsOnNode(ctx context.Context, node string, sel kube.PodSelector) (kube.PodSet, error)
	WaitPodsChange(ctx context.Context, node string, sel kube.PodSelector, prev kube.PodSet) (kube.PodSet, bool, error)
	Evict(ctx context.Context, pod kube.Pod, attempt int) error
	ForceDelete(ctx context.Context, pod kube.Pod, maxGrace time.Duration) error
	ExcludeFromLoadBalancers(ctx context.Context, node, executionID string) error
	NodeReady(ctx context.Context, ref string, requiredLabels map[string]string) (bool, string, error)
	WaitNodeReady(ctx context.Context, ref string, requiredLabels map[string]string) (bool, string, error)
	WorkloadsOf(ctx context.Context, pods []kube.Pod) ([]kube.Workload, []string, error)
	WorkloadsReady(ctx context.Context, before []kube.Workload) (kube.WorkloadStatus, error)
	WaitWorkloadsReady(ctx context.Context, before []kube.Workload) (kube.WorkloadStatus, error)
	DeleteNode(ctx context.Context, name string) error
	ProtectFromScaleDown(ctx context.Context, node string, protect bool) error
}

// Tasks are the recycle's task functions over the two ports. Both engines call them
// through Invoke with the same payload; each is idempotent and bounded.
type Tasks struct {
	Cloud   Cloud
	Cluster Cluster
	Clock   clock.WithTicker
}

// Payload is what the state machine passes to the function (the Lambda event).
type Payload struct {
	Task      string `json:"task"`
	Execution string `json:"execution"`
	State     State  `json:"state"`
}

// Task names, as the state machine's Parameters.task spells them.
const (
	TaskResolve          = "Resolve"
	TaskFence            = "Fence"
	TaskSurge            = "Surge"
	TaskCheckReplacement = "CheckReplacement"
	TaskDrain            = "Drain"
	TaskCheckWorkloads   = "CheckWorkloads"
	TaskRetire           = "Retire"
	TaskRollback         = "Rollback"
	TaskAnswerHook       = "AnswerHook"
)

// Registry returns the task registry both engines use: one resource (the function
// placeholder) that dispatches by task name, exactly like the Lambda handler.
func (t *Tasks) Registry() asl.Registry {
	return asl.Registry{FunctionPlaceholder: t.Invoke}
}

// Invoke validates a payload and runs the task it names.
func (t *Tasks) Invoke(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
	var p Payload
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, newError(ErrBadInput, "task payload: %v (want {\"task\": NAME, \"execution\": ID, \"state\": {...}})", err)
	}
	if p.Execution == "" {
		return nil, newError(ErrBadInput, "task payload: execution is empty")
	}
	if err := p.State.Request.Validate(); err != nil {
		return nil, newError(ErrBadInput, "request: %v", err)
	}
	var out any
	var err error
	switch p.Task {
	case TaskResolve:
		out, err = t.Resolve(ctx, p.State)
	case TaskFence:
		out, err = t.fence(ctx, p.Execution, p.State)
	case TaskSurge:
		out, err = t.surge(ctx, p.Execution, p.State)
	case TaskCheckReplacement:
		out, err = t.checkReplacement(ctx, p.Execution, p.State)
	case TaskDrain:
		out, err = t.drain(ctx, p.Execution, p.State)
	case TaskCheckWorkloads:
		out, err = t.checkWorkloads(ctx, p.State)
	case TaskRetire:
		out, err = t.retire(ctx, p.Execution, p.State)
	case TaskRollback:
		out, err = t.rollback(ctx, p.Execution, p.State)
	case TaskAnswerHook:
		out, err = t.answerHook(ctx, p.State)
	default:
		return nil, newError(ErrBadInput, "unknown task %q (want one of %s, %s, %s, %s, %s, %s, %s, %s, %s)", p.Task,
			TaskResolve, TaskFence, TaskSurge, TaskCheckReplacement, TaskDrain, TaskCheckWorkloads, TaskRetire, TaskRollback, TaskAnswerHook)
	}
	if err != nil {
		return nil, classify(p.Task, err)
	}
	return json.Marshal(out)
}

// Resolve finds the node, its instance and group, and checks the preconditions.
// It changes nothing, so the CLI's --dry-run calls it directly.
func (t *Tasks) Resolve(ctx context.Context, s State) (*Target, error) {
	req := s.Request
	ref := req.Target()
	node, err := t.Cluster.ResolveNode(ctx, ref)
	if err != nil {
		return nil, badInputIf(err, "resolve %s", ref)
	}
	if node.Spec.ProviderID == "" {
		return nil, newError(ErrBadInput, "node %s has no spec.providerID: Recycler finds the instance by providerID only; is this node managed by an Auto Scaling group?", node.Name)
	}
	pid, err := kube.ParseProviderID(node.Spec.ProviderID)
	if err != nil {
		return nil, newError(ErrBadInput, "node %s: %v", node.Name, err)
	}
	// A terminate hook for a node another recycle holds is that recycle's to drain:
	// this execution only answers it (AnswerHook), so the holder decides, not checkNode.
	heldBy := ""
	if rec, ok := kube.FenceOf(node); ok && req.LifecycleHook != nil {
		heldBy = rec.ExecutionID
	} else if err := t.checkNode(ctx, node, req); err != nil {
		return nil, err
	}
	member := t.Cloud.Membership // its group and lifecycle: one call
	if req.LifecycleHook != nil {
		member = t.Cloud.Instance // and its tags: Recycler's records say whether the termination is ours
	}
	inst, err := member(ctx, pid.InstanceID)
	if err != nil {
		return nil, badInputIf(err, "describe instance %s of node %s", pid.InstanceID, node.Name)
	}
	if inst.Group == "" {
		return nil, newError(ErrBadInput, "instance %s (node %s) is in no Auto Scaling group: Recycler only replaces group members (the group launches the replacement)", inst.ID, node.Name)
	}
	if by := ownTermination(inst); by != "" && req.LifecycleHook != nil {
		// Our own termination (a rollback's of its replacement, Retire's of a drained
		// old instance): the node is drained already. Answer, touch nothing.
		return &Target{Node: node.Name, InstanceID: inst.ID, AZ: inst.AZ, Group: inst.Group, ResolvedAt: t.Clock.Now().UTC(),
			HookOnly: &HookOnly{By: by, Own: true, Reason: fmt.Sprintf("instance %s was terminated by Recycler itself (execution %s), its node drained already", inst.ID, by)}}, nil
	}
	wantLifecycle := cloud.LifecycleInService
	if req.LifecycleHook != nil {
		wantLifecycle = cloud.LifecycleTerminatingWait
	}
	if inst.Lifecycle != wantLifecycle && (req.LifecycleHook == nil || inst.Lifecycle != cloud.LifecycleInService) {
		return nil, newError(ErrPrecondition, "instance %s in group %s is %s, not %s: recycle it once it is %s", inst.ID, inst.Group, inst.Lifecycle, wantLifecycle, wantLifecycle)
	}
	describe := t.Cloud.GroupMembers // sizes, members, processes: one call
	if req.LifecycleHook != nil {
		describe = t.Cloud.Group // and its lifecycle hooks
	}
	g, err := describe(ctx, inst.Group)
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", inst.Group, err)
	}
	// With Launch suspended the group starts no replacement (surged or not): the
	// recycle would only wait out --replacement-timeout and roll back.
	if req.LifecycleHook == nil && g.Suspended(processLaunch) {
		return nil, newError(ErrPrecondition, "group %s has its Launch process suspended, so it cannot start a replacement: resume it (aws autoscaling resume-processes --auto-scaling-group-name %s --scaling-processes Launch), then recycle",
			g.Name, g.Name)
	}
	if !req.NoSurge && !req.AllowRaiseMax && g.Desired+1 > g.MaxSize {
		return nil, newError(ErrPrecondition, "group %s is at MaxSize (%d of %d): there is no room for a replacement. Raise MaxSize, pass --allow-raise-max, or use --no-surge (drain first, then let the group replace the node)",
			g.Name, g.Desired, g.MaxSize)
	}
	tgt := &Target{
		Node: node.Name, InstanceID: inst.ID, AZ: inst.AZ, Group: g.Name,
		Desired: g.Desired, MaxSize: g.MaxSize, Suspended: g.SuspendedProcesses,
		InService: int32(g.CountLifecycle(cloud.LifecycleInService)), ResolvedAt: t.Clock.Now().UTC(),
	}
	for _, in := range g.Instances {
		tgt.Instances = append(tgt.Instances, in.ID)
	}
	slices.Sort(tgt.Instances)
	if req.LifecycleHook != nil {
		if tgt.Hook, err = t.resolveHook(ctx, req, inst.ID, g); err != nil {
			return nil, err
		}
	}
	if heldBy != "" {
		tgt.HookOnly = &HookOnly{By: heldBy, Reason: fmt.Sprintf("node %s is being recycled by execution %s: its lifecycle action is heartbeated while that drain runs and answered CONTINUE once the node is drained", node.Name, heldBy)}
	}
	return tgt, nil
}

// checkNode refuses a node another recycle holds and, like kubectl drain, pods no
// controller recreates that the drain would evict: before anything changes.
func (t *Tasks) checkNode(ctx context.Context, n *corev1.Node, req Request) error {
	if holder, ok := fencedBy(n); ok {
		return newError(ErrPrecondition, "node %s is already being recycled by execution %s: wait for it, or `recycler abort %s`", n.Name, holder, holder)
	}
	node := n.Name
	policy, err := req.DrainPolicy()
	if err != nil {
		return err
	}
	pods, err := t.Cluster.PodsOnNode(ctx, node, policy.Selector)
	if err != nil {
		return fmt.Errorf("list pods on %s: %w", node, err)
	}
	if err := policy.refuseUnmanaged(pods, node, "would be evicted by this recycle"); err != nil {
		return &Error{Name: ErrPrecondition, Err: err}
	}
	return nil
}

// processLaunch is the Auto Scaling process that starts new instances.
const processLaunch = "Launch"

func fencedBy(n *corev1.Node) (string, bool) {
	for _, taint := range n.Spec.Taints {
		if taint.Key == kube.TaintKey {
			return taint.Value, true
		}
	}
	return "", false
}

func (t *Tasks) fence(ctx context.Context, execution string, s State) (*kube.FenceRecord, error) {
	tgt, err := needTarget(s)
	if err != nil {
		return nil, err
	}
	rec, err := t.Cluster.Fence(ctx, tgt.Node, execution)
	if err != nil {
		return nil, fmt.Errorf("fence node %s: %w", tgt.Node, err)
	}
	// What the recycle is about to change, recorded where a person (or `recycler
	// abort --node`) finds it without the state file.
	req, err := json.Marshal(s.Request)
	if err != nil {
		return nil, err
	}
	if err := t.Cluster.NoteFence(ctx, tgt.Node, execution, func(in *kube.RecycleInfo) {
		in.Request, in.Instance, in.Group, in.AZ = req, tgt.InstanceID, tgt.Group, tgt.AZ
		in.Desired, in.MaxSize, in.InService, in.Suspended = tgt.Desired, tgt.MaxSize, tgt.InService, tgt.Suspended
	}); err != nil {
		return nil, err
	}
	return &rec, nil
}

func (t *Tasks) surge(ctx context.Context, execution string, s State) (*SurgeStatus, error) {
	tgt, err := needTarget(s)
	if err != nil {
		return nil, err
	}
	now := t.Clock.Now().UTC()
	if err := t.Cluster.NoteFence(ctx, tgt.Node, execution, func(in *kube.RecycleInfo) {
		if in.SurgedAt == nil {
			in.SurgedAt = &now
		}
	}); err != nil {
		return nil, err
	}
	rec, err := t.Cloud.Surge(ctx, tgt.Group, []string{tgt.InstanceID}, cloud.SurgeOptions{ExecutionID: execution, AllowRaiseMax: s.Request.AllowRaiseMax})
	if err != nil {
		return nil, fmt.Errorf("surge group %s for %s: %w", tgt.Group, tgt.InstanceID, err)
	}
	// The group as Resolve saw it is the truest "before": a repeated Surge (its first
	// answer lost in a crash) would otherwise count an early replacement as old. (A
	// MaxSize raise or AZRebalance suspension of the first attempt is on the group's
	// records, which the repeated Surge reads.)
	rec.Snapshot = slices.Clone(tgt.Instances)
	return &SurgeStatus{Record: rec, Deadline: now.Add(time.Duration(s.Request.ReplacementTimeout))}, nil
}

// checkReplacement answers "is our replacement InService with its Node Ready?",
// blocking on a Node watch for at most CheckSeconds so the answer comes as soon as
// the Node turns Ready. Once Ready, the replacement is claimed: protected from
// scale-in and recorded on the instance and the old Node.
func (t *Tasks) checkReplacement(ctx context.Context, execution string, s State) (*ReplacementStatus, error) {
	if s.Surge == nil {
		return nil, newError(ErrBadInput, "CheckReplacement before Surge: state has no surge record")
	}
	deadline := s.Surge.Deadline
	// Only the waiting is bounded; API calls use ctx so the bound never cuts one off.
	since := deadline.Add(-time.Duration(s.Request.ReplacementTimeout))
	bctx, cancel := t.bound(ctx, s.Request.CheckSeconds, since, deadline)
	defer cancel()
	nodeReady := false // the last watch ended with the candidate's Node Ready
	for {
		var st *ReplacementStatus
		if prev := s.Replacement; !nodeReady && prev != nil && !prev.Done && len(prev.Pending)+len(prev.Instances) > 0 &&
			t.Clock.Since(prev.LookedAt) < lookEvery {
			// The candidate's Node is not Ready yet, so AWS has nothing new to say
			// but a failed launch: watch again, and ask AWS every lookEvery.
			cp := *prev
			st = &cp
		} else {
			var err error
			if st, err = t.replacementOnce(ctx, execution, s); err != nil {
				return nil, err
			}
			st.LookedAt = t.Clock.Now().UTC()
		}
		if st.Done {
			if err := t.claim(ctx, execution, s, st); err != nil {
				return nil, err
			}
			return st, nil
		}
		if !t.Clock.Now().Before(deadline) {
			return nil, newError(ErrReplacementTimeout, "no Ready replacement within %s (%s); the old node goes back into service",
				s.Request.ReplacementTimeout, st.Reason)
		}
		// Not yet: look again after the state machine's pause. Also when the Node is
		// Ready and AWS does not have the instance InService yet (Pending:Wait under
		// a launch hook): the watch would end at once, and each pass cost a look.
		if bctx.Err() != nil || (len(st.Pending) == 0 && len(st.Instances) == 0) || nodeReady {
			return st, nil
		}
		// Watch the first candidate's Node until it is Ready (or the bound ends), then
		// look again: by name once it is known, else by its instance (it has not
		// registered yet).
		ref := firstOf(st.Instances, st.Pending)
		if name := st.Watch[ref]; name != "" {
			ref = name
		}
		ready, _, err := t.Cluster.WaitNodeReady(bctx, ref, s.Request.ReadyLabels)
		if err != nil && bctx.Err() == nil {
			return nil, fmt.Errorf("wait for node of %s: %w", ref, err)
		}
		nodeReady = ready && err == nil
		s.Replacement = st // keep what this pass learned (the Node names)
	}
}

// lookEvery is how often CheckReplacement asks AWS about a replacement whose Node
// is not Ready yet (a Node turning Ready makes it ask at once): often enough to see
// a failed launch soon, rarely enough that a long boot costs a few calls.
const lookEvery = 30 * time.Second

// claim protects the replacement from scale-in (the group's and, through the
// annotation, a cluster autoscaler's) and records it on the old Node.
func (t *Tasks) claim(ctx context.Context, execution string, s State, st *ReplacementStatus) error {
	rec := t.surgeRecord(execution, s)
	found := cloud.Replacement{Ready: true, InService: st.Instances, Protected: st.Protected}
	ours, err := t.Cloud.ClaimReplacement(ctx, rec, found)
	if err != nil {
		return fmt.Errorf("claim replacement %v: %w", st.Instances, err)
	}
	st.Claimed, st.ProtectedByUs = true, ours
	if err := t.Cluster.NoteFence(ctx, s.Target.Node, execution, func(in *kube.RecycleInfo) {
		in.Replacement, in.ReplacementNode = firstOf(st.Instances), firstOf(st.Nodes)
	}); err != nil {
		return err
	}
	// Until the drain has filled it, the replacement looks idle to a cluster
	// autoscaler: keep it from scaling the node down mid-recycle.
	return t.protect(ctx, st.Nodes, true)
}

func (t *Tasks) replacementOnce(ctx context.Context, execution string, s State) (*ReplacementStatus, error) {
	rec := t.surgeRecord(execution, s)
	rep, err := t.Cloud.FindReplacement(ctx, rec)
	if err != nil {
		var lf *cloud.LaunchFailedError
		if errors.As(err, &lf) {
			return nil, &Error{Name: ErrLaunchFailed, Err: err}
		}
		return nil, fmt.Errorf("find replacement in %s: %w", rec.Group, err)
	}
	st := &ReplacementStatus{Instances: rep.InService, Pending: rep.Pending, Protected: rep.Protected, Watch: map[string]string{}}
	if s.Replacement != nil {
		maps.Copy(st.Watch, s.Replacement.Watch)
	}
	if !rep.Ready {
		st.Reason = fmt.Sprintf("waiting for the new instance to be InService (pending: %v)", rep.Pending)
		if rep.Ambiguous != "" {
			st.Reason = rep.Ambiguous
		}
		return st, nil
	}
	for _, id := range rep.InService {
		name := st.Watch[id]
		if name == "" {
			node, err := t.Cluster.ResolveNode(ctx, id)
			if errors.Is(err, kube.ErrNodeNotFound) {
				st.Reason = fmt.Sprintf("instance %s is InService, its node has not registered yet", id)
				return st, nil
			}
			if err != nil {
				return nil, fmt.Errorf("node of replacement %s: %w", id, err)
			}
			name = node.Name
			st.Watch[id] = name
		}
		ready, reason, err := t.Cluster.NodeReady(ctx, name, s.Request.ReadyLabels)
		if err != nil {
			return nil, fmt.Errorf("node of replacement %s: %w", id, err)
		}
		if !ready {
			st.Reason = fmt.Sprintf("instance %s is InService, its node is not Ready: %s", id, reason)
			return st, nil
		}
		st.Nodes = append(st.Nodes, name)
	}
	if len(st.Nodes) < len(rec.Instances) {
		st.Reason = "waiting for the replacement node"
		return st, nil
	}
	st.Done, st.ReadyAt = true, t.Clock.Now().UTC()
	return st, nil
}

// drain drains the old node with the request's policy, one bounded pass per call;
// the state machine loops until Done.
func (t *Tasks) drain(ctx context.Context, execution string, s State) (*DrainStatus, error) {
	tgt, err := needTarget(s)
	if err != nil {
		return nil, err
	}
	p, err := s.Request.DrainPolicy()
	if err != nil {
		return nil, err
	}
	// A lifecycle hook started this recycle: keep it alive, check often enough for
	// the next heartbeat, and end the drain before Auto Scaling ends the action.
	var heartbeat time.Time
	if s.Drain != nil {
		heartbeat = s.Drain.HeartbeatAt
	}
	if heartbeat, err = t.keepHookAlive(ctx, s, heartbeat); err != nil {
		return nil, err
	}
	p.CheckSeconds = checkSeconds(s)
	if s.Target.Hook != nil {
		p.NotAfter = hookDeadline(s, s.Target.Hook.GlobalDeadline)
	}
	st, err := t.DrainNode(ctx, execution, tgt.Node, p, s.Drain)
	if err != nil {
		return nil, err
	}
	st.HeartbeatAt = heartbeat
	return st, nil
}

// checkWorkloads answers "are the moved workloads back to their availability
// before the drain?", blocking on a watch of the first that is not, for at most
// the loop's period, so the answer comes as soon as they are.
func (t *Tasks) checkWorkloads(ctx context.Context, s State) (*WorkloadsStatus, error) {
	now := t.Clock.Now().UTC()
	st := &WorkloadsStatus{StartedAt: now, Deadline: now.Add(time.Duration(s.Request.WorkloadTimeout))}
	if s.Workloads != nil {
		st.StartedAt, st.Deadline, st.HeartbeatAt = s.Workloads.StartedAt, s.Workloads.Deadline, s.Workloads.HeartbeatAt
	}
	var err error
	if st.HeartbeatAt, err = t.keepHookAlive(ctx, s, st.HeartbeatAt); err != nil {
		return nil, err
	}
	var before []kube.Workload
	if s.Drain != nil {
		before = s.Drain.Workloads
	}
	bctx, cancel := t.bound(ctx, checkSeconds(s), st.StartedAt, st.Deadline)
	defer cancel()
	if _, err := t.Cluster.WaitWorkloadsReady(bctx, before); err != nil && bctx.Err() == nil {
		return nil, fmt.Errorf("wait for moved workloads: %w", err)
	}
	// The answer comes from a read with the full context: the bound may have cut the wait's.
	ws, err := t.Cluster.WorkloadsReady(ctx, before)
	if err != nil {
		return nil, fmt.Errorf("check moved workloads: %w", err)
	}
	if ws.Ready {
		st.Done = true
		return st, nil
	}
	st.NotReady = ws.NotReady
	if !t.Clock.Now().Before(st.Deadline) {
		return nil, newError(ErrWorkloadTimeout, "moved workloads not back to their availability before the drain within --workload-timeout %s: %v", s.Request.WorkloadTimeout, ws.NotReady)
	}
	return st, nil
}

func (t *Tasks) retire(ctx context.Context, execution string, s State) (*RetireStatus, error) {
	tgt, err := needTarget(s)
	if err != nil {
		return nil, err
	}
	opts := cloud.RetireOptions{Mode: cloud.RetireMode(s.Request.Retire), ExecutionID: execution, KeepCapacity: s.Request.NoSurge}
	if s.Surge != nil {
		rec := t.surgeRecord(execution, s)
		opts.Surge = &rec
	}
	now := t.Clock.Now().UTC()
	st := &RetireStatus{At: now, Deadline: now.Add(rollbackTimeout(s.Request))}
	if s.Retire != nil && !s.Retire.Deadline.IsZero() {
		st.Deadline = s.Retire.Deadline
	}
	res, err := t.Cloud.Retire(ctx, tgt.InstanceID, opts)
	var ny *cloud.NotYetError
	if errors.As(err, &ny) {
		// Not a failure: AWS is between two states (the detach we asked for
		// finishes once the instance left its load balancers). Look again.
		if !now.Before(st.Deadline) {
			return nil, newError(ErrRetireTimeout, "retire %s: still waiting at its deadline (%s): %v", tgt.InstanceID, rollbackTimeout(s.Request), ny)
		}
		st.Reason = ny.Error()
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("retire %s: %w", tgt.InstanceID, err)
	}
	st.RetireResult = res
	// Like the cloud controller would, but now: a stopped instance keeps its Node
	// otherwise, and a Node object left behind confuses every later look at the cluster.
	if err := t.Cluster.DeleteNode(ctx, tgt.Node); err != nil {
		return nil, fmt.Errorf("delete node %s: %w", tgt.Node, err)
	}
	st.NodeDeleted = true
	if s.Replacement != nil {
		if err := t.protect(ctx, s.Replacement.Nodes, false); err != nil {
			return nil, err
		}
	}
	if st.LifecycleComplete, err = t.completeHook(ctx, s, cloud.LifecycleContinue); err != nil {
		return nil, err
	}
	st.Done = true
	return st, nil
}

// protect sets or lifts the cluster autoscaler's scale-down protection on nodes.
func (t *Tasks) protect(ctx context.Context, nodes []string, on bool) error {
	for _, n := range nodes {
		if err := t.Cluster.ProtectFromScaleDown(ctx, n, on); err != nil {
			return fmt.Errorf("scale-down protection of replacement %s: %w", n, err)
		}
	}
	return nil
}

// completeHook answers the lifecycle action that started this recycle, if one did.
func (t *Tasks) completeHook(ctx context.Context, s State, result cloud.LifecycleResult) (bool, error) {
	h := s.Request.LifecycleHook
	if h == nil {
		return false, nil
	}
	act := cloud.LifecycleAction{Group: h.Group, Hook: h.Name, InstanceID: s.Target.InstanceID, Token: h.Token}
	if err := t.Cloud.CompleteLifecycleAction(ctx, act, result); err != nil {
		return false, fmt.Errorf("complete lifecycle action %s for %s with %s: %w", h.Name, act.InstanceID, result, err)
	}
	return true, nil
}

// rollback undoes only what this execution recorded. It works from whatever the
// state holds: a step that died before recording its result is undone from the
// records on the Node, the instances and the group (the surge record is rebuilt from
// what Resolve saw). The state machine calls it again until Done: AWS may hold an
// instance between two states (EnteringStandby while it leaves its load balancers).
func (t *Tasks) rollback(ctx context.Context, execution string, s State) (*RollbackStatus, error) {
	now := t.Clock.Now().UTC()
	st := &RollbackStatus{At: now, Deadline: now.Add(rollbackTimeout(s.Request))}
	if s.Rollback != nil && !s.Rollback.Deadline.IsZero() {
		st.Deadline = s.Rollback.Deadline
	}
	tgt := s.Target
	if tgt == nil {
		st.Done = true
		st.Notes = append(st.Notes, "nothing to undo: the node was never resolved")
		return st, nil
	}
	st.Before = &GroupCounts{Desired: tgt.Desired, InService: tgt.InService}
	// A node another execution holds is not ours to unfence (we only answered its hook).
	var held *kube.NodeHeldError
	if err := t.Cluster.Unfence(ctx, tgt.Node, execution); err != nil && !errors.Is(err, kube.ErrNodeNotFound) && !errors.As(err, &held) {
		return nil, fmt.Errorf("unfence %s: %w", tgt.Node, err)
	}
	st.Unfenced = true
	// --no-surge changes nothing on AWS before Retire: an instance the autoscaler
	// launched meanwhile is not ours to remove. Nor does a recycle that only
	// answers a lifecycle action.
	if s.Surge != nil || (!s.Request.NoSurge && tgt.HookOnly == nil) {
		rec := t.surgeRecord(execution, s)
		// First the old instance back in service; the replacement stays meanwhile.
		rec.HoldReplacements = true
		if ok, err := t.cloudRollback(ctx, s, st, rec); !ok || err != nil {
			return st, err
		}
		// Then the replacement goes, as ASG Instance Refresh's rollback does: drained
		// (PDBs honoured, the same drain as the recycle's) and terminated with
		// decrement, so the group's size and members are as at the start. Kept with
		// --keep-replacement, or when pods the recycle waits for (selected) run there.
		keep := s.Request.KeepReplacement
		if !keep {
			var done bool
			var err error
			if keep, done, err = t.drainReplacement(ctx, execution, s, st); err != nil || !done {
				return st, err
			}
		}
		rec.HoldReplacements, rec.KeepReplacements = false, keep
		if ok, err := t.cloudRollback(ctx, s, st, rec); !ok || err != nil {
			return st, err
		}
	}
	if s.Replacement != nil {
		// A kept replacement may now be scaled in like any node.
		if err := t.protect(ctx, s.Replacement.Nodes, false); err != nil {
			return nil, err
		}
	}
	st.SurgeUndone = true
	// The hook that started this recycle is a terminate hook: the instance goes
	// whatever we answer, and ABANDON would also skip the group's other terminate
	// hooks (someone's log shipping, say). So even a failed recycle answers CONTINUE —
	// after the node was unfenced — and never ABANDON, transient error or not.
	var err error
	if st.LifecycleComplete, err = t.completeHook(ctx, s, cloud.LifecycleContinue); err != nil {
		return nil, err
	}
	if g, err := t.Cloud.Group(ctx, tgt.Group); err == nil {
		st.After = &GroupCounts{Desired: g.Desired, InService: int32(g.CountLifecycle(cloud.LifecycleInService))}
		st.Notes = append(st.Notes, fmt.Sprintf("group %s: desired %d → %d, InService %d → %d (before the recycle → now)",
			tgt.Group, st.Before.Desired, st.After.Desired, st.Before.InService, st.After.InService))
	} else if !errors.Is(err, cloud.ErrNotFound) {
		return nil, fmt.Errorf("describe group %s after the rollback: %w", tgt.Group, err)
	}
	st.Done, st.At = true, t.Clock.Now().UTC()
	return st, nil
}

// cloudRollback runs one cloud Rollback pass; false while AWS is not done yet (st
// says why), an error past the rollback's deadline.
func (t *Tasks) cloudRollback(ctx context.Context, s State, st *RollbackStatus, rec cloud.SurgeRecord) (bool, error) {
	res, err := t.Cloud.Rollback(ctx, rec)
	if err != nil {
		return false, fmt.Errorf("roll back surge of %s: %w", rec.Group, err)
	}
	if !res.Done {
		return false, t.notDone(s, st, res.Waiting)
	}
	st.Notes = append(st.Notes, res.Notes...)
	if len(res.Kept) > 0 {
		st.Notes = append(st.Notes, fmt.Sprintf("kept the replacement %v: group %s is one instance larger; scale it in when convenient", res.Kept, rec.Group))
	}
	return true, nil
}

// notDone records what the rollback waits for, or fails it past its deadline.
func (t *Tasks) notDone(s State, st *RollbackStatus, why string) error {
	if !t.Clock.Now().Before(st.Deadline) {
		return newError(ErrRollbackTimeout, "rollback of %s still waits at its deadline (%s after it began): %s; a person must finish it",
			s.Target.Node, rollbackTimeout(s.Request), why)
	}
	st.Reason = why
	return nil
}

// drainReplacement drains the replacement's Node before the rollback terminates
// it: fenced (so nothing lands there again), then DrainNode — the recycle's own
// drain — with every pod evictable, PDBs honoured, by the rollback's deadline. It
// keeps the replacement instead (keep) when pods run there that the recycle never
// evicts early (selected) or at all (unmanaged, without --delete-unmanaged). done
// is false while pods remain.
func (t *Tasks) drainReplacement(ctx context.Context, execution string, s State, st *RollbackStatus) (keep, done bool, err error) {
	node := ""
	if prev := s.Rollback; prev != nil {
		st.Drain, node = prev.Drain, prev.DrainNode
	}
	if node == "" {
		if node, err = t.replacementNode(ctx, execution, s); err != nil || node == "" {
			return false, err == nil, err
		}
	}
	st.DrainNode = node
	p, err := s.Request.DrainPolicy()
	if err != nil {
		return false, false, err
	}
	p.EvictOthers, p.EvictTimeout, p.OnTimeout = true, 0, OnTimeoutFail
	p.MaxWait = max(st.Deadline.Sub(t.Clock.Now()), time.Second)
	if st.Drain == nil {
		set, err := t.Cluster.PodsOnNode(ctx, node, p.Selector)
		if errors.Is(err, kube.ErrNodeNotFound) {
			return false, true, nil
		}
		if err != nil {
			return false, false, fmt.Errorf("list pods on replacement %s: %w", node, err)
		}
		if kept := append(podNames(set.Selected), podNames(p.unmanagedAtRisk(set))...); len(kept) > 0 {
			st.Notes = append(st.Notes, fmt.Sprintf("kept the replacement %s: pods the recycle does not evict run there (%v)", node, kept))
			return true, true, nil
		}
		if _, err := t.Cluster.Fence(ctx, node, execution); err != nil && !errors.Is(err, kube.ErrNodeNotFound) {
			return false, false, fmt.Errorf("fence replacement %s: %w", node, err)
		}
	}
	d, err := t.DrainNode(ctx, execution, node, p, st.Drain)
	if errors.Is(err, kube.ErrNodeNotFound) {
		return false, true, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("drain replacement %s: %w", node, err)
	}
	st.Drain = d
	if !d.Done {
		return false, false, t.notDone(s, st, fmt.Sprintf("draining the replacement %s: %d pod(s) left", node, d.Remaining))
	}
	return false, true, nil
}

// replacementNode is the Node of the surge's replacement ("" when it has none yet).
func (t *Tasks) replacementNode(ctx context.Context, execution string, s State) (string, error) {
	if s.Replacement != nil && len(s.Replacement.Nodes) > 0 {
		return s.Replacement.Nodes[0], nil
	}
	rep, err := t.Cloud.FindReplacement(ctx, t.surgeRecord(execution, s))
	if err != nil && !errors.Is(err, cloud.ErrLaunchFailed) {
		return "", fmt.Errorf("find the replacement in %s: %w", s.Target.Group, err)
	}
	for _, id := range append(rep.InService, rep.Pending...) {
		n, err := t.Cluster.ResolveNode(ctx, id)
		if errors.Is(err, kube.ErrNodeNotFound) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("node of replacement %s: %w", id, err)
		}
		return n.Name, nil
	}
	return "", nil
}

func rollbackTimeout(r Request) time.Duration {
	if r.RollbackTimeout > 0 {
		return time.Duration(r.RollbackTimeout)
	}
	return DefaultRollbackTimeout
}

// surgeRecord is the surge to retire or undo: the recorded one, or — when Surge may
// have acted without its answer being recorded — one rebuilt from Resolve's view;
// with the execution that made it and the replacements found since.
func (t *Tasks) surgeRecord(execution string, s State) cloud.SurgeRecord {
	var rec cloud.SurgeRecord
	if s.Surge != nil {
		rec = s.Surge.Record
	} else {
		tgt := s.Target
		rec = cloud.SurgeRecord{
			Group:         tgt.Group,
			Instances:     []cloud.SurgedInstance{{ID: tgt.InstanceID, Method: cloud.SurgeStandby}},
			Snapshot:      slices.Clone(tgt.Instances),
			DesiredBefore: tgt.Desired,
			MaxBefore:     tgt.MaxSize,
			MaxAfter:      tgt.MaxSize,
			StartedAt:     tgt.ResolvedAt,
		}
	}
	if rec.ExecutionID == "" {
		rec.ExecutionID = execution
	}
	switch r := s.Replacement; {
	case r == nil:
	case r.Done && len(rec.Replacements) == 0:
		rec.Replacements = slices.Clone(r.Instances)
		rec.Claimed, rec.ProtectedReplacements = r.Claimed, slices.Clone(r.ProtectedByUs)
	case !r.Done:
		// What the last look found launched for this surge: the next look starts there.
		rec.Launched = append(slices.Clone(r.Pending), r.Instances...)
	}
	return rec
}
