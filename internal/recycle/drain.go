package recycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/recycler/recycler/internal/kube"
)

// DrainPolicy is how one node is drained: which pods are waited for, the
// deadlines, and what happens to whatever still stands at them. A recycle drains
// its old node with the request's policy (Request.DrainPolicy); any other caller
// (a rollback draining a replacement) may pass its own. The rules are in
// docs/recycle.md, "Draining".
type DrainPolicy struct {
	// Selector picks the pods that are waited for, never evicted before MaxWait.
	// Pods annotated karpenter.sh/do-not-disrupt=true or
	// cluster-autoscaler.kubernetes.io/safe-to-evict=false are treated the same.
	Selector kube.PodSelector
	// MaxWait is the drain's deadline for every pod on the node, from the drain's start (> 0).
	MaxWait time.Duration
	// EvictTimeout, when shorter than MaxWait, is an earlier deadline for the
	// pods that are not waited for (0: none, MaxWait applies).
	EvictTimeout time.Duration
	// OnTimeout is what a deadline does to the pods of its kind still standing.
	OnTimeout OnTimeout
	// EvictOthers: evict the pods that are not waited for. Off, they are left on
	// the node (they end with the instance) and no deadline applies to them.
	EvictOthers bool
	// ForceGrace caps the grace period of a forced deletion (≥ 1 s) and is how long
	// past MaxWait pods already terminating may still hold the drain.
	ForceGrace time.Duration
	// DeleteUnmanaged allows evicting pods that no controller recreates.
	DeleteUnmanaged bool
	// CheckSeconds is the longest one pass may block (see CheckPeriod).
	CheckSeconds int
	// NotAfter, when set, caps the deadlines: the drain must be over by then
	// (a lifecycle hook's global timeout, less a margin).
	NotAfter time.Time
}

// DrainPolicy is the policy of the request's drain of its old node.
func (r Request) DrainPolicy() (DrainPolicy, error) {
	sel, err := kube.NewPodSelector(r.Selector, r.Namespaces)
	if err != nil {
		return DrainPolicy{}, newError(ErrBadInput, "%v", err)
	}
	return DrainPolicy{
		Selector: sel, MaxWait: time.Duration(r.MaxWait), EvictTimeout: time.Duration(r.EvictTimeout),
		OnTimeout: r.OnTimeout, EvictOthers: r.EvictOthers, ForceGrace: time.Duration(r.ForceGrace),
		DeleteUnmanaged: r.DeleteUnmanaged, CheckSeconds: r.CheckSeconds,
	}, nil
}

// DrainNode runs one pass of draining node under p and returns the drain's
// status, to be passed back as prev to the next pass until Done (nil: the first
// pass). The first pass records the drain's start, its deadlines and the
// controllers of the pods about to move (with their availability then), labels
// the node out of external load balancers, and returns before evicting anything,
// so that record survives a crash. Later passes evict, wait for the selected
// pods, and apply p.OnTimeout at the deadlines, blocking on a pod watch for at
// most CheckPeriod. Every pass returns by the drain's End at the latest, and a
// pass never computes a wake-up that is already over.
//
// node must be fenced by execution (the load-balancer label is recorded in the
// fence record, so an unfence removes it).
func (t *Tasks) DrainNode(ctx context.Context, execution, node string, p DrainPolicy, prev *DrainStatus) (*DrainStatus, error) {
	if prev == nil || prev.Passes == 0 {
		return t.startDrain(ctx, execution, node, p, prev)
	}
	st := cloneDrain(prev)
	st.Passes++
	// Only the waiting is bounded; API calls use ctx so the bound never cuts one off.
	bctx, cancel := t.bound(ctx, p.CheckSeconds, st.StartedAt, time.Time{})
	defer cancel()
	set, err := t.Cluster.PodsOnNode(ctx, node, p.Selector)
	if err != nil {
		return nil, fmt.Errorf("list pods on %s: %w", node, err)
	}
	asked := map[types.UID]bool{} // this pass already evicted or deleted it: the watch may lag
	for {
		now := t.Clock.Now().UTC()
		if err := p.refuseUnmanaged(set, node, "appeared on the node after the recycle started"); err != nil {
			return nil, err
		}
		if err := st.checkDeadlines(set, p, node, now); err != nil {
			return nil, err
		}
		next, err := t.evictRound(ctx, node, st, set, p, now, asked)
		if err != nil {
			return nil, err
		}
		st.observe(set, p, now)
		if st.Remaining == 0 {
			st.Done, st.DoneAt, st.Selected = true, now, nil
			st.Left = podNames(p.left(set, st, now))
			return st, nil
		}
		// The drain's first refusal by a budget: answer now, so the status (and
		// `recycler status`, the metrics) names the budget at once rather than at
		// the bound. Once per drain, so it costs one round, not one per pod.
		if !st.Refused && len(st.Blocked) > 0 {
			st.Refused = true
			return st, nil
		}
		// Block until a pod changes, the next eviction retry or deadline comes, or
		// the pass's bound ends. Only instants after now count: one already passed
		// was acted on above.
		wctx, wcancel := t.until(bctx, st.wakeAfter(now, next))
		cur, _, err := t.Cluster.WaitPodsChange(wctx, node, p.Selector, set)
		wcancel()
		if bctx.Err() != nil {
			return st, nil // bound reached: "not yet"
		}
		if err != nil {
			return nil, fmt.Errorf("watch pods on %s: %w", node, err)
		}
		if cur.ResourceVersion != "" {
			set = cur
		}
	}
}

// startDrain is the first pass: record, label, evict nothing.
func (t *Tasks) startDrain(ctx context.Context, execution, node string, p DrainPolicy, prev *DrainStatus) (*DrainStatus, error) {
	now := t.Clock.Now().UTC()
	st := &DrainStatus{StartedAt: now}
	if prev != nil { // a state written before passes were counted: keep its start
		st = cloneDrain(prev)
	}
	st.Passes, st.OnTimeout = 1, p.OnTimeout
	st.Deadline = p.capped(st.StartedAt.Add(p.MaxWait))
	st.OthersDeadline = time.Time{}
	if p.EvictTimeout > 0 && p.EvictTimeout < p.MaxWait && p.EvictOthers {
		if d := p.capped(st.StartedAt.Add(p.EvictTimeout)); d.Before(st.Deadline) {
			st.OthersDeadline = d
		}
	}
	st.End = st.Deadline.Add(p.ForceGrace)
	set, err := t.Cluster.PodsOnNode(ctx, node, p.Selector)
	if err != nil {
		return nil, fmt.Errorf("list pods on %s: %w", node, err)
	}
	if err := p.refuseUnmanaged(set, node, "appeared on the node after the recycle started"); err != nil {
		return nil, err
	}
	st.Workloads, st.Unchecked, err = t.Cluster.WorkloadsOf(ctx, p.movable(set))
	if err != nil {
		return nil, fmt.Errorf("record the workloads on %s: %w", node, err)
	}
	// Load balancers first, so they stop sending to the node before its pods move.
	if err := t.Cluster.ExcludeFromLoadBalancers(ctx, node, execution); err != nil {
		return nil, err
	}
	st.observe(set, p, now)
	if st.Remaining == 0 {
		st.Done, st.DoneAt, st.Selected = true, now, nil
	}
	return st, nil
}

func (p DrainPolicy) capped(d time.Time) time.Time {
	if !p.NotAfter.IsZero() && p.NotAfter.Before(d) {
		return p.NotAfter
	}
	return d
}

// movable returns the pods the drain may move: their controllers are what the
// moved-workloads check compares with.
func (p DrainPolicy) movable(set kube.PodSet) []kube.Pod {
	var out []kube.Pod
	if p.EvictOthers {
		out = append(out, set.Evictable...)
	}
	if p.OnTimeout != OnTimeoutFail {
		out = append(out, set.Selected...)
	}
	return out
}

// unmanagedAtRisk returns the pods without a controller that this policy would
// evict or delete although the user did not name them: the others (when
// evicted) and, when a deadline evicts or forces, the pods kept only by a
// do-not-disrupt annotation. Pods the selector names are the user's own choice.
func (p DrainPolicy) unmanagedAtRisk(set kube.PodSet) []kube.Pod {
	if p.DeleteUnmanaged {
		return nil
	}
	var out []kube.Pod
	for _, pod := range set.Evictable {
		if p.EvictOthers && pod.Unmanaged() {
			out = append(out, pod)
		}
	}
	for _, pod := range set.Selected {
		if p.OnTimeout != OnTimeoutFail && pod.Why != "" && pod.Unmanaged() {
			out = append(out, pod)
		}
	}
	return out
}

// refuseUnmanaged fails when pods without a controller would be evicted.
func (p DrainPolicy) refuseUnmanaged(set kube.PodSet, node, when string) error {
	pods := p.unmanagedAtRisk(set)
	if len(pods) == 0 {
		return nil
	}
	return fmt.Errorf("%d pod(s) on %s have no controller and would be lost if evicted: %s; they %s. Move or delete them yourself, or pass --delete-unmanaged to evict them",
		len(pods), node, strings.Join(podNames(pods), ", "), when)
}

// holds reports whether pod keeps the drain from ending: the selected ones, the
// others when they are evicted, a terminating one only until the drain's End.
func (p DrainPolicy) holds(pod kube.Pod, st *DrainStatus, now time.Time) bool {
	if pod.Class == kube.Evictable && !p.EvictOthers {
		return false
	}
	return !pod.Terminating || now.Before(st.End)
}

// left returns the pods that no longer hold the drain although still on the
// node: terminating past the End (the instance's end stops them).
func (p DrainPolicy) left(set kube.PodSet, st *DrainStatus, now time.Time) []kube.Pod {
	var out []kube.Pod
	for _, pod := range append(slices.Clone(set.Selected), set.Evictable...) {
		if pod.Terminating && !p.holds(pod, st, now) && (pod.Class == kube.Selected || p.EvictOthers) {
			out = append(out, pod)
		}
	}
	return out
}

// checkDeadlines fails the drain where the policy says so: with fail, at a
// deadline, any pod of its kind still standing (not already terminating); with
// evict, at the End, any pod an eviction still could not move.
func (st *DrainStatus) checkDeadlines(set kube.PodSet, p DrainPolicy, node string, now time.Time) error {
	pastOthers := !st.OthersDeadline.IsZero() && !now.Before(st.OthersDeadline)
	pastAll := !now.Before(st.Deadline)
	st.OthersTimedOut = st.OthersTimedOut || pastOthers
	st.TimedOut = st.TimedOut || pastAll
	var standing []kube.Pod
	if p.EvictOthers && (pastOthers || pastAll) {
		standing = append(standing, st.notLeaving(set.Evictable)...)
	}
	if pastAll {
		standing = append(st.notLeaving(set.Selected), standing...)
	}
	if len(standing) == 0 {
		return nil
	}
	switch {
	case p.OnTimeout == OnTimeoutFail && pastAll:
		return newError(ErrDrainTimeout, "%d pod(s) still on %s at --max-wait %s: %s; the node goes back into service (use --on-timeout evict or force to go on instead)",
			len(standing), node, p.MaxWait, st.describe(standing))
	case p.OnTimeout == OnTimeoutFail:
		return newError(ErrDrainTimeout, "%d pod(s) still on %s at --evict-timeout %s: %s; the node goes back into service (use --on-timeout force to delete them instead)",
			len(standing), node, p.EvictTimeout, st.describe(standing))
	case p.OnTimeout == OnTimeoutEvict && !now.Before(st.End):
		return newError(ErrDrainTimeout, "%d pod(s) still on %s at the drain's end (--max-wait %s + --force-grace %s) although evicted: %s; the node goes back into service (use --on-timeout force to delete them instead)",
			len(standing), node, p.MaxWait, p.ForceGrace, st.describe(standing))
	}
	return nil
}

// notLeaving returns the pods neither terminating nor evicted by this drain (an
// accepted eviction is a deletion under way, even before the watch shows it).
func (st *DrainStatus) notLeaving(pods []kube.Pod) []kube.Pod {
	var out []kube.Pod
	for _, p := range notTerminating(pods) {
		if !slices.ContainsFunc(st.Evicted, func(e kube.Pod) bool { return e.UID == p.UID }) {
			out = append(out, p)
		}
	}
	return out
}

// describe names pods with the budgets that refused them.
func (st *DrainStatus) describe(pods []kube.Pod) string {
	names := podNames(pods)
	for i, pod := range pods[:len(names)] {
		if b, ok := st.Blocked[string(pod.UID)]; ok && len(b.PDBs) > 0 {
			names[i] += " (blocked by PodDisruptionBudget " + strings.Join(b.PDBs, ", ") + ")"
		} else if pod.Why != "" {
			names[i] += " (" + pod.Why + ")"
		}
	}
	return strings.Join(names, ", ")
}

// forcing reports whether the policy deletes pod now instead of evicting it.
func (p DrainPolicy) forcing(pod kube.Pod, st *DrainStatus, now time.Time) bool {
	if p.OnTimeout != OnTimeoutForce {
		return false
	}
	if !now.Before(st.Deadline) {
		return true
	}
	return pod.Class == kube.Evictable && !st.OthersDeadline.IsZero() && !now.Before(st.OthersDeadline)
}

// evictRound asks once for every pod that may go now — evicted, or deleted when
// a deadline forces it — and returns the earliest time a refused eviction may be
// retried (zero when none waits).
func (t *Tasks) evictRound(ctx context.Context, node string, st *DrainStatus, set kube.PodSet, p DrainPolicy, now time.Time, asked map[types.UID]bool) (time.Time, error) {
	var todo []kube.Pod
	if p.EvictOthers {
		todo = append(todo, set.Evictable...)
	}
	if !now.Before(st.Deadline) && p.OnTimeout != OnTimeoutFail {
		todo = append(todo, set.Selected...)
	}
	var next time.Time
	for _, pod := range todo {
		force := p.forcing(pod, st, now)
		switch {
		case asked[pod.UID]:
			continue
		case pod.Terminating && (!force || !pod.DeleteAt.After(now.Add(p.ForceGrace))):
			continue // on its way; a forced deadline only shortens a longer grace
		}
		b, blocked := st.Blocked[string(pod.UID)]
		if !force && blocked && now.Before(b.NotBefore) {
			next = earliest(next, b.NotBefore)
			continue
		}
		var err error
		if force {
			err = t.Cluster.ForceDelete(ctx, pod, p.ForceGrace)
		} else {
			err = t.Cluster.Evict(ctx, pod, b.Attempts)
		}
		var eb *kube.EvictionBlockedError
		switch {
		case errors.As(err, &eb):
			info := BlockInfo{Pod: pod.String(), PDBs: eb.PDBs, Attempts: b.Attempts + 1, NotBefore: eb.NotBefore.UTC()}
			if !info.NotBefore.After(now) { // never a retry time already over
				info.NotBefore = now.Add(time.Second)
			}
			if st.Blocked == nil {
				st.Blocked = map[string]BlockInfo{}
			}
			st.Blocked[string(pod.UID)] = info
			next = earliest(next, info.NotBefore)
		case err != nil:
			return time.Time{}, fmt.Errorf("evict %s from %s: %w", pod, node, err)
		default:
			asked[pod.UID] = true
			delete(st.Blocked, string(pod.UID))
			if force {
				st.ForcedPods++
			}
			if !slices.ContainsFunc(st.Evicted, func(e kube.Pod) bool { return e.UID == pod.UID }) && len(st.Evicted) < maxListed*4 {
				st.Evicted = append(st.Evicted, pod)
			}
		}
	}
	return next, nil
}

// observe updates what the status says about the pods still on the node.
func (st *DrainStatus) observe(set kube.PodSet, p DrainPolicy, now time.Time) {
	st.Selected = podAges(set.Selected, now)
	st.Remaining = 0
	present := map[string]bool{}
	for _, pod := range append(slices.Clone(set.Selected), set.Evictable...) {
		present[string(pod.UID)] = true
		if p.holds(pod, st, now) {
			st.Remaining++
		}
	}
	for uid := range st.Blocked {
		if !present[uid] {
			delete(st.Blocked, uid)
		}
	}
}

// wakeAfter is the next instant after now at which a pass must act without a
// pod changing: a refused eviction's retry (next), a deadline, or the End. Zero
// when none is ahead (the watch and the pass's bound remain).
func (st *DrainStatus) wakeAfter(now, next time.Time) time.Time {
	var wake time.Time
	for _, at := range []time.Time{next, st.OthersDeadline, st.Deadline, st.End} {
		if at.After(now) {
			wake = earliest(wake, at)
		}
	}
	return wake
}

// NextDeadline says what the drain's next deadline will do and when: what the
// progress view and `recycler status` show. Zero once the End has passed.
func (st *DrainStatus) NextDeadline(now time.Time) (time.Time, string) {
	switch {
	case !st.OthersDeadline.IsZero() && now.Before(st.OthersDeadline):
		if st.OnTimeout == OnTimeoutForce {
			return st.OthersDeadline, "the other pods still there are deleted (evict-timeout)"
		}
		return st.OthersDeadline, "rollback if other pods are still there (evict-timeout)"
	case now.Before(st.Deadline):
		switch st.OnTimeout {
		case OnTimeoutEvict:
			return st.Deadline, "the selected pods are evicted (max-wait)"
		case OnTimeoutForce:
			return st.Deadline, "every pod still there is deleted (max-wait)"
		}
		return st.Deadline, "rollback if pods are still there (max-wait)"
	case now.Before(st.End):
		if st.OnTimeout == OnTimeoutEvict {
			return st.End, "rollback if an eviction is still refused (drain end)"
		}
		return st.End, "terminating pods no longer hold the node (drain end)"
	}
	return time.Time{}, ""
}

// notTerminating returns the pods whose deletion has not started: the ones an
// eviction can still be asked for.
func notTerminating(pods []kube.Pod) []kube.Pod {
	var out []kube.Pod
	for _, p := range pods {
		if !p.Terminating {
			out = append(out, p)
		}
	}
	return out
}

func podNames(pods []kube.Pod) []string {
	names := make([]string, 0, min(len(pods), maxListed))
	for _, p := range pods {
		if len(names) == maxListed {
			break
		}
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

// podAges names the pods with how long they have been running, for the progress view.
func podAges(pods []kube.Pod, now time.Time) []string {
	out := podNames(pods)
	for i := range out {
		if started := pods[i].Started; !started.IsZero() {
			out[i] += fmt.Sprintf(" (running %s)", now.Sub(started).Truncate(time.Second))
		}
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func cloneDrain(d *DrainStatus) *DrainStatus {
	c := *d
	c.Evicted = slices.Clone(d.Evicted)
	c.Workloads = slices.Clone(d.Workloads)
	c.Blocked = make(map[string]BlockInfo, len(d.Blocked))
	for k, v := range d.Blocked {
		c.Blocked[k] = v
	}
	return &c
}
