package recycle_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/testenv"
)

func drainDone(st recycle.State) bool { return st.Drain != nil && st.Drain.Done }

// assertNamedError checks err has the ASL name and says each of says.
func assertNamedError(t *testing.T, err error, name string, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s saying %q", name, says)
	}
	if got := recycle.ErrorNameOf(err); got != name {
		t.Errorf("error %q named %q, want %q", err, got, name)
	}
	for _, want := range says {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// Every pod on the node has a deadline, and each policy ends the drain by it: a
// PodDisruptionBudget that never allows a disruption (one replica, minAvailable 1)
// blocks a pod that is not selected; a selected job runs for ever.
func TestDrainEndsAtItsDeadlinesWhateverBlocks(t *testing.T) {
	const maxWait = 10 * time.Minute
	for _, tc := range []struct {
		name         string
		onTimeout    recycle.OnTimeout
		evictTimeout time.Duration
		selected     bool // a selected pod runs on the node too
		wantErr      []string
		wantAt       time.Duration // the deadline that acts, from the drain's start
	}{
		{name: "fail at max-wait", onTimeout: recycle.OnTimeoutFail, wantAt: maxWait,
			wantErr: []string{recycle.ErrDrainTimeout, "at --max-wait 10m0s", "/blocked-", "blocked by PodDisruptionBudget blocked"}},
		{name: "evict fails at the drain's end", onTimeout: recycle.OnTimeoutEvict, wantAt: maxWait + 5*time.Second,
			wantErr: []string{recycle.ErrDrainTimeout, "at the drain's end", "blocked by PodDisruptionBudget blocked"}},
		{name: "force deletes at max-wait", onTimeout: recycle.OnTimeoutForce, wantAt: maxWait},
		{name: "fail at evict-timeout", onTimeout: recycle.OnTimeoutFail, evictTimeout: 2 * time.Minute, selected: true, wantAt: 2 * time.Minute,
			wantErr: []string{recycle.ErrDrainTimeout, "at --evict-timeout 2m0s", "blocked by PodDisruptionBudget blocked"}},
		{name: "force at evict-timeout, then at max-wait", onTimeout: recycle.OnTimeoutForce, evictTimeout: 2 * time.Minute, selected: true, wantAt: maxWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, false)
			w.deployment("blocked", 1, ptr.To[int32](1), nil, 0)
			if tc.selected {
				w.pod("job", map[string]string{"role": "job"}, nil, 30)
			}
			w.fence()
			req := w.request(maxWait)
			req.OnTimeout, req.EvictTimeout = tc.onTimeout, recycle.Duration(tc.evictTimeout)
			st := w.state(req)
			err := w.loop(recycle.TaskDrain, &st, maxWait+time.Hour, func(st recycle.State) bool {
				// The selected job is never touched before max-wait.
				if tc.selected && w.clk.Since(st.Drain.StartedAt) < maxWait && w.podGone("job") {
					t.Fatalf("selected pod deleted %s into the drain, before max-wait %s", w.clk.Since(st.Drain.StartedAt), maxWait)
				}
				if tc.evictTimeout > 0 && tc.onTimeout == recycle.OnTimeoutForce && w.clk.Since(st.Drain.StartedAt) > tc.evictTimeout+time.Minute &&
					len(w.podNames("app=blocked")) > 0 {
					t.Fatalf("the blocked pod still runs %s into the drain, after --evict-timeout %s with force", w.clk.Since(st.Drain.StartedAt), tc.evictTimeout)
				}
				return drainDone(st)
			})
			took := w.clk.Since(st.Drain.StartedAt)
			t.Logf("drain ended after %s (fake clock): %v; status %+v", took, err, st.Drain)
			if took < tc.wantAt || took > tc.wantAt+30*time.Second {
				t.Errorf("drain ended %s after its start, want at its deadline %s", took, tc.wantAt)
			}
			if tc.wantErr != nil {
				assertNamedError(t, err, tc.wantErr[0], append(tc.wantErr[1:], "the node goes back into service")...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !st.Drain.Done || st.Drain.ForcedPods < 1 || len(w.podNames("")) != 0 {
				t.Errorf("drain %+v, pods left %v: want done with the blocked pod (and the job) deleted", st.Drain, w.podNames(""))
			}
		})
	}
}

// Past its deadline, a drain still waiting (here: for a budget to allow an
// eviction, until the drain's end) blocks on the watch and the back-off: it makes
// no call while nothing is due. Before, it computed a wake-up in the past and
// looped without blocking.
func TestDrainPastItsDeadlineDoesNotSpin(t *testing.T) {
	w := newWorld(t, false)
	w.deployment("blocked", 1, ptr.To[int32](1), nil, 0)
	w.fence()
	req := w.request(time.Minute)
	req.OnTimeout, req.ForceGrace = recycle.OnTimeoutEvict, recycle.Duration(30*time.Minute)
	st := w.state(req)
	if err := w.loop(recycle.TaskDrain, &st, time.Hour, func(st recycle.State) bool {
		return drainDone(st) || w.clk.Since(st.Drain.StartedAt) > 3*time.Minute
	}); err != nil {
		t.Fatal(err)
	}
	if !st.Drain.TimedOut || len(st.Drain.Blocked) == 0 {
		t.Fatalf("want a drain past max-wait with a blocked eviction, got %+v", st.Drain)
	}
	// One more pass: once it blocks, nothing is due for a while (the next retry is
	// minutes away): in a second of wall time it makes no call at all.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- w.invoke(ctx, recycle.TaskDrain, &st) }()
	w.waitFor("the pass to block", func(context.Context) (bool, error) { return w.clk.HasWaiters() && w.waits.Load() > 0, nil })
	time.Sleep(200 * time.Millisecond) // let it settle into the watch
	waits, reqs := w.waits.Load(), w.reqs.Load()
	time.Sleep(time.Second)
	if dw, dr := w.waits.Load()-waits, w.reqs.Load()-reqs; dw > 1 || dr > 1 {
		t.Errorf("a blocked drain past its deadline made %d waits and %d requests in one second, want none", dw, dr)
	}
	cancel()
	if err := <-res; err != nil {
		t.Logf("the pass ended with %v once canceled", err)
	}
}

// A drain blocked by a budget that never allows asks the API server at the pace
// of the eviction back-off, not of the CPU.
func TestBlockedDrainRequestsPerMinute(t *testing.T) {
	w := newWorld(t, false)
	w.deployment("blocked", 1, ptr.To[int32](1), nil, 0)
	w.fence()
	st := w.state(w.request(2 * time.Hour))
	type sample struct {
		at   time.Time
		reqs int64
	}
	var samples []sample
	w.reqs.Store(0)
	start := w.clk.Now()
	if err := w.loop(recycle.TaskDrain, &st, 3*time.Hour, func(recycle.State) bool {
		samples = append(samples, sample{w.clk.Now(), w.reqs.Load()})
		return w.clk.Since(start) > 30*time.Minute
	}); err != nil {
		t.Fatal(err)
	}
	total := w.reqs.Load()
	perMinute := func(from, to time.Duration) float64 {
		var a, b *sample
		for i := range samples {
			s := &samples[i]
			if a == nil && s.at.Sub(start) >= from {
				a = s
			}
			if s.at.Sub(start) <= to {
				b = s
			}
		}
		if a == nil || b == nil || !b.at.After(a.at) {
			return 0
		}
		return float64(b.reqs-a.reqs) / b.at.Sub(a.at).Minutes()
	}
	steady := perMinute(10*time.Minute, 30*time.Minute)
	attempts := 0
	for _, b := range st.Drain.Blocked {
		attempts = b.Attempts
	}
	t.Logf("blocked drain over %s (fake): %d Kubernetes requests in all (%.1f a minute), %.1f a minute after the first 10 minutes; %d passes; %d eviction attempts",
		w.clk.Since(start).Truncate(time.Second), total, float64(total)/w.clk.Since(start).Minutes(), steady, st.Drain.Passes, attempts)
	if attempts < 8 {
		t.Errorf("%d eviction attempts in 30 minutes, want the back-off's ≥ 8 (is the drain retrying at all?)", attempts)
	}
	if avg := float64(total) / w.clk.Since(start).Minutes(); avg > 10 {
		t.Errorf("%.1f requests a minute on average, want ≤ 10", avg)
	}
	if steady > 4 {
		t.Errorf("%.1f requests a minute once the back-off reached its 150 s, want ≤ 4", steady)
	}
}

// Pods other tools mark do-not-disrupt are waited for like selected ones.
func TestDrainWaitsForDoNotDisruptPodsUntilTheDeadline(t *testing.T) {
	w := newWorld(t, true)
	w.deployment("karpenter", 1, nil, map[string]string{kube.AnnotationDoNotDisrupt: "true"}, 0)
	w.deployment("autoscaler", 1, nil, map[string]string{kube.AnnotationSafeToEvict: "false"}, 0)
	w.fence()
	const maxWait = 5 * time.Minute
	req := w.request(maxWait)
	req.OnTimeout = recycle.OnTimeoutEvict
	st := w.state(req)
	err := w.loop(recycle.TaskDrain, &st, time.Hour, func(st recycle.State) bool {
		if left := w.podNames(""); w.clk.Since(st.Drain.StartedAt) < maxWait && len(left) != 2 {
			t.Fatalf("%s into the drain the pods on the node are %v, want both kept until max-wait %s", w.clk.Since(st.Drain.StartedAt), left, maxWait)
		}
		if st.Drain.Passes > 1 && w.clk.Since(st.Drain.StartedAt) < maxWait && len(st.Drain.Selected) != 2 {
			t.Fatalf("drain shows waited-for pods %v, want the 2 annotated ones", st.Drain.Selected)
		}
		return drainDone(st)
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := w.clk.Since(st.Drain.StartedAt); took < maxWait || len(st.Drain.Evicted) != 2 {
		t.Errorf("drain done after %s with %d evicted, want both evicted at max-wait %s", took, len(st.Drain.Evicted), maxWait)
	}
}

// --evict-others=false: the drain waits for the selected pods only and evicts nothing.
func TestDrainWithoutEvictOthersLeavesThem(t *testing.T) {
	w := newWorld(t, true)
	w.deployment("web", 1, nil, nil, 0)
	w.pod("job", map[string]string{"role": "job"}, map[string]string{testenv.PodCompleteDelayAnnotation: "3s"}, 30)
	w.fence()
	req := w.request(time.Hour)
	req.EvictOthers = false
	st := w.state(req)
	if err := w.loop(recycle.TaskDrain, &st, time.Hour, drainDone); err != nil {
		t.Fatal(err)
	}
	if len(st.Drain.Evicted) != 0 || len(w.podNames("app=web")) != 1 {
		t.Errorf("evicted %v, web pods on the node %v: want nothing evicted, web left in place", st.Drain.Evicted, w.podNames("app=web"))
	}
}

// Pods without a controller are refused (kubectl drain without --force), or evicted with --delete-unmanaged.
func TestDrainRefusesUnmanagedPodsUnlessTold(t *testing.T) {
	w := newWorld(t, false)
	w.pod("loner", nil, nil, 5)
	w.fence()
	st := w.state(w.request(time.Hour))
	err := w.invoke(context.Background(), recycle.TaskDrain, &st)
	if err == nil || !strings.Contains(err.Error(), "/loner") || !strings.Contains(err.Error(), "--delete-unmanaged") {
		t.Fatalf("first pass with a bare pod: %v; want a refusal naming the pod and --delete-unmanaged", err)
	}
	if w.podGone("loner") {
		t.Fatal("the bare pod was evicted although refused")
	}
	req := w.request(time.Hour)
	req.DeleteUnmanaged = true
	st = w.state(req)
	if err := w.loop(recycle.TaskDrain, &st, time.Hour, drainDone); err != nil {
		t.Fatal(err)
	}
	if len(st.Drain.Evicted) != 1 || !w.podGone("loner") {
		t.Errorf("with --delete-unmanaged: evicted %v; want the bare pod evicted", st.Drain.Evicted)
	}
}

// API throttling of an eviction is transient: the state machine retries the pass.
func TestDrainThrottledEvictionIsTransient(t *testing.T) {
	w := newWorld(t, true)
	w.deployment("web", 1, nil, nil, 0)
	w.fence()
	st := w.state(w.request(time.Hour))
	if err := w.invoke(context.Background(), recycle.TaskDrain, &st); err != nil || st.Drain.Passes != 1 {
		t.Fatalf("recording pass: %v %+v", err, st.Drain)
	}
	w.faults.script(1, 429, isEviction)
	err := w.invoke(context.Background(), recycle.TaskDrain, &st)
	if recycle.ErrorNameOf(err) != recycle.ErrTransient {
		t.Fatalf("pass with a throttled eviction: %v (%q); want %s (the state machine retries it)", err, recycle.ErrorNameOf(err), recycle.ErrTransient)
	}
	if err := w.loop(recycle.TaskDrain, &st, time.Hour, drainDone); err != nil {
		t.Fatal(err)
	}
	if len(st.Drain.Evicted) != 1 {
		t.Errorf("after the retry: evicted %v, want the web pod", st.Drain.Evicted)
	}
}

// The node leaves the external load balancers before its pods move, and the label is undone with the fence.
func TestDrainExcludesTheNodeFromLoadBalancersFirst(t *testing.T) {
	w := newWorld(t, true)
	w.deployment("web", 1, nil, nil, 0)
	w.fence()
	st := w.state(w.request(time.Hour))
	if err := w.invoke(context.Background(), recycle.TaskDrain, &st); err != nil {
		t.Fatal(err)
	}
	n, err := w.cs.CoreV1().Nodes().Get(context.Background(), w.old, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels[corev1.LabelNodeExcludeBalancers]; !ok || len(w.podNames("app=web")) != 1 || !strings.Contains(n.Annotations[kube.AnnotationFenced], `"lbExcluded":true`) {
		t.Errorf("after the first pass: labels %v, fence %s, web pods %v; want the label, recorded as ours, and web not yet moved",
			n.Labels, n.Annotations[kube.AnnotationFenced], w.podNames("app=web"))
	}
	if err := w.kube.Unfence(context.Background(), w.old, w.exec); err != nil {
		t.Fatal(err)
	}
	n, _ = w.cs.CoreV1().Nodes().Get(context.Background(), w.old, metav1.GetOptions{})
	if _, ok := n.Labels[corev1.LabelNodeExcludeBalancers]; ok {
		t.Errorf("unfence left the label %s we set", corev1.LabelNodeExcludeBalancers)
	}
}

// The moved-workloads check compares each workload with its availability before
// the drain, from a record made before anything was evicted.
func TestCheckWorkloads(t *testing.T) {
	t.Run("a workload degraded before the drain does not fail it", func(t *testing.T) {
		w := newWorld(t, true)
		// minReadySeconds of an hour: its pod is never "available", before or after.
		w.deployment("slow", 1, nil, nil, 3600)
		w.fence()
		req := w.request(time.Hour)
		req.WorkloadTimeout = recycle.Duration(time.Minute)
		st := w.state(req)
		if err := w.loop(recycle.TaskDrain, &st, time.Hour, drainDone); err != nil {
			t.Fatal(err)
		}
		err := w.loop(recycle.TaskCheckWorkloads, &st, time.Hour, func(st recycle.State) bool { return st.Workloads.Done })
		if err != nil || !st.Workloads.Done {
			t.Errorf("CheckWorkloads: %v %+v; want done (as available as before the drain)", err, st.Workloads)
		}
	})
	t.Run("moved workloads are checked although the pass that evicted them was lost", func(t *testing.T) {
		w := newWorld(t, false) // no spare node: the moved pod stays Pending
		w.deployment("web", 1, nil, nil, 0)
		w.fence()
		req := w.request(time.Hour)
		req.WorkloadTimeout = recycle.Duration(2 * time.Minute)
		st := w.state(req)
		// Play passes; the pass during which the web pod is evicted "crashes":
		// its result is lost and the next pass starts from the state before it.
		for i := 0; ; i++ {
			if i > 20 {
				t.Fatalf("drain not done after 20 passes: %+v", st.Drain)
			}
			before := st
			res := make(chan error, 1)
			go func() { res <- w.invoke(context.Background(), recycle.TaskDrain, &st) }()
			if err := w.stepUntil(res, w.clk.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(pods(st.Drain), func(name string) bool { return strings.HasPrefix(name, "web-") }) {
				st = before // the pass evicted web: lose its result
			}
			if drainDone(st) {
				break
			}
			w.clk.Step(time.Second)
		}
		err := w.loop(recycle.TaskCheckWorkloads, &st, time.Hour, func(st recycle.State) bool { return st.Workloads.Done })
		if recycle.ErrorNameOf(err) != recycle.ErrWorkloadTimeout || !strings.Contains(err.Error(), "Deployment "+w.ns+"/web: 0 of 1") {
			t.Errorf("CheckWorkloads: %v; want %s naming Deployment web (its pod is Pending)", err, recycle.ErrWorkloadTimeout)
		}
	})
	t.Run("the check returns as soon as the moved pods are available", func(t *testing.T) {
		w := newWorld(t, true)
		w.deployment("web", 2, nil, nil, 0)
		w.fence()
		st := w.state(w.request(time.Hour))
		if err := w.loop(recycle.TaskDrain, &st, time.Hour, drainDone); err != nil {
			t.Fatal(err)
		}
		// One call, the clock never stepped: it returns when the Deployment is back.
		if err := w.invoke(context.Background(), recycle.TaskCheckWorkloads, &st); err != nil || !st.Workloads.Done {
			t.Errorf("CheckWorkloads: %v %+v; want done from a single call that waited on a watch", err, st.Workloads)
		}
	})
}

func pods(d *recycle.DrainStatus) []string {
	var out []string
	for _, p := range d.Evicted {
		out = append(out, p.Name)
	}
	return out
}

// A recycle killed mid-Drain can leave an eviction half done: the API server
// spent the budget's disruption on the pod (status.disruptedPods) but the delete
// that follows died with the request. The resumed drain's next pass carries that
// eviction out at once. Before, the budget refused the pod for the 2 minutes the
// disruption controller keeps such a grant, and the back-off on top: a resumed
// drain sat blocked "by PodDisruptionBudget web" for minutes.
func TestResumedDrainCompletesAnEvictionCutOffByTheCrash(t *testing.T) {
	w := newWorld(t, true)
	w.deployment("web", 2, ptr.To[int32](1), nil, 0)
	w.fence()
	st := w.state(w.request(time.Hour))
	if err := w.invoke(context.Background(), recycle.TaskDrain, &st); err != nil { // the first pass: records, evicts nothing
		t.Fatal(err)
	}
	victim := w.podNames("app=web")[0]
	live, err := w.cs.CoreV1().Pods(w.ns).Get(context.Background(), victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The killed process's eviction, as the server leaves it when the delete fails
	// after the grant (reproducibly: a UID precondition that does not match).
	wrong := types.UID("not-" + string(live.UID))
	err = w.cs.CoreV1().Pods(w.ns).EvictV1(context.Background(), &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Namespace: w.ns, Name: victim},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrong}},
	})
	if !apierrors.IsConflict(err) {
		t.Fatalf("eviction with a stale UID: %v; want 409 Conflict after the budget was decremented", err)
	}
	var granted time.Time
	w.waitFor("the budget holding "+victim, func(ctx context.Context) (bool, error) {
		p, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		at, ok := p.Status.DisruptedPods[victim]
		granted = at.Time
		return ok && p.Status.DisruptionsAllowed == 0, nil
	})
	w.clk.SetTime(granted) // the resume comes right after the kill, whatever the wall clock did meanwhile

	// A minute of passes (fake clock; the budget's hold runs on the real one).
	err = w.loop(recycle.TaskDrain, &st, time.Minute, func(recycle.State) bool { return w.podGone(victim) })
	if err != nil {
		t.Fatal(err)
	}
	if took := w.clk.Since(granted); took > 10*time.Second {
		t.Errorf("the cut-off eviction of %s was completed %s after the resume, want in its first pass", victim, took)
	}
	if !slices.ContainsFunc(st.Drain.Evicted, func(p kube.Pod) bool { return p.Name == victim }) {
		t.Errorf("drain status lists evicted %v, want %s among them", pods(st.Drain), victim)
	}
}
