package scenario_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/invariant"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// world is one fresh simulated environment with an engine wired to it.
type world struct {
	env *sim.Environment
	h   *scenario.Harness
	eng *engine.Engine
}

func newWorld(t *testing.T, boot, job time.Duration) *world {
	t.Helper()
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	ctx := context.Background()
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: 3, BootDelay: boot, JobDuration: job})
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Down(context.Background()); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := scenario.New(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(ctx, engine.Options{Path: filepath.Join(t.TempDir(), "state.db"), Registry: h.Tasks.Registry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return &world{env: env, h: h, eng: eng}
}

// longJobNode returns the node running a long-job pod of the seeded workloads.
func (w *world) longJobNode(t *testing.T) string {
	t.Helper()
	pods, err := w.env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(context.Background(),
		metav1.ListOptions{LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" {
			return p.Spec.NodeName
		}
	}
	t.Fatal("no long-job pod scheduled")
	return ""
}

func (w *world) request(node string, maxWait time.Duration) recycle.Request {
	r := recycle.NewRequest(node)
	r.Selector = sim.LabelComponent + "=" + sim.LongJobComponent
	r.Namespaces = []string{sim.WorkloadNamespace}
	r.MaxWait = recycle.Duration(maxWait)
	return r
}

func (w *world) group(t *testing.T) cloud.Group {
	t.Helper()
	g, err := w.h.Observer.Group(context.Background(), w.env.Groups[0])
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// assertNodeAsBefore checks the node is schedulable and carries nothing of ours.
func assertUnfenced(t *testing.T, w *world, node string) {
	t.Helper()
	n, err := w.env.Kube.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node %s after rollback: %v", node, err)
	}
	if n.Spec.Unschedulable {
		t.Errorf("node %s is still cordoned", node)
	}
	for _, taint := range n.Spec.Taints {
		if taint.Key == kube.TaintKey {
			t.Errorf("node %s still has our taint %v", node, taint)
		}
	}
	if _, ok := n.Annotations[kube.AnnotationFenced]; ok {
		t.Errorf("node %s still has the fence annotation", node)
	}
}

func TestRecycleWaitsForSelectedPodsMovesOthersWithPDBs(t *testing.T) {
	const job = 12 * time.Second
	w := newWorld(t, 2*time.Second, job)
	ctx := context.Background()
	node := w.longJobNode(t)
	// A pod with the selected label in another namespace is not waited for: it is
	// evicted like any other pod, long before it would finish.
	other := "elsewhere"
	if _, err := w.env.Kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "lookalike", Namespace: other,
			Labels:      map[string]string{sim.LabelComponent: sim.LongJobComponent},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: "1h"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, TerminationGracePeriodSeconds: ptr.To[int64](1)},
	}
	if _, err := w.env.Kube.Client.CoreV1().Pods(other).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := scenario.WaitSettled(ctx, w.env.Kube.Client, other, time.Minute); err != nil {
		t.Fatal(err)
	}
	before := w.group(t)

	// While the drain runs, the replacement is protected from a cluster autoscaler.
	protectedInDrain := make(chan string, 1)
	// The observer never fails the recycle: what it sees goes to the channel.
	onEvent := func(ev engine.Event) error {
		if len(protectedInDrain) == 0 {
			if seen, ok := replacementProtectionAtDrain(ctx, w.env.Kube.Client, ev); ok {
				protectedInDrain <- seen
			}
		}
		return nil
	}
	started := time.Now()
	req := w.request(node, 10*time.Minute)
	req.DeleteUnmanaged = true // the lookalike has no controller
	out, err := w.h.Recycle(ctx, w.eng, req, "happy", onEvent)
	if err != nil {
		t.Fatal(err)
	}
	if out.Execution.Status != engine.StatusSucceeded {
		t.Fatalf("recycle %s: %s %s", out.Execution.Status, out.Execution.Error, out.Execution.Cause)
	}
	t.Logf("recycled in %s with %d AWS calls, %d Kubernetes requests\n%s", out.Elapsed, out.AWSCalls, out.KubeCalls, out.Report)
	if err := checkAWSCalls(out); err != nil {
		t.Errorf("AWS calls of one recycle over budget (%v):\n%v", out.AWSByOp, err)
	}
	if !out.Report.OK() {
		t.Errorf("invariants broken:\n%s", out.Report)
	}
	st := recycle.StateFromHistory(out.History)
	if st.Drain == nil || st.Retire == nil || st.Replacement == nil {
		t.Fatalf("final state lacks drain/retire/replacement: %+v", st)
	}
	// The node is retired only after the selected pods finished on their own.
	jobs, err := w.env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range jobs.Items {
		if p.Spec.NodeName == node && p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("selected pod %s ended %s, want Succeeded (it must finish, not be evicted)", p.Name, p.Status.Phase)
		}
	}
	if waited := st.Drain.DoneAt.Sub(started); waited < job/2 {
		t.Errorf("drain finished %s after the start, before the %s job could have finished", waited, job)
	}
	// The lookalike was evicted, not waited for an hour.
	var evicted []string
	for _, p := range st.Drain.Evicted {
		evicted = append(evicted, p.Namespace+"/"+p.Name)
	}
	if !slices.Contains(evicted, other+"/lookalike") {
		t.Errorf("pod %s/lookalike was not evicted; evicted: %v", other, evicted)
	}
	// The group is back at its size with the old instance gone and a new one serving.
	after := w.group(t)
	if after.Desired != before.Desired {
		t.Errorf("desired capacity %d, was %d", after.Desired, before.Desired)
	}
	if _, ok := after.Instance(st.Target.InstanceID); ok {
		t.Errorf("old instance %s still in the group", st.Target.InstanceID)
	}
	if got := after.CountLifecycle(cloud.LifecycleInService); got != int(before.Desired) {
		t.Errorf("%d InService instances, want %d", got, before.Desired)
	}
	if _, err := w.env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old node object still exists (err %v)", err)
	}
	repl := st.Replacement.Nodes[0]
	if got := <-protectedInDrain; got != repl+"=true" {
		t.Errorf("during the drain the replacement's %s was %q, want %s=true", kube.AnnotationScaleDownDisabled, got, repl)
	}
	n, err := w.env.Kube.Client.CoreV1().Nodes().Get(ctx, repl, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := n.Annotations[kube.AnnotationScaleDownDisabled]; ok {
		t.Errorf("after the recycle the replacement still carries %s=%s", kube.AnnotationScaleDownDisabled, v)
	}
}

func TestReplacementNeverReadyRollsBack(t *testing.T) {
	w := newWorld(t, 2*time.Second, 10*time.Minute)
	ctx := context.Background()
	f := w.env.AWS.Faults()
	f.NeverReadyNext = 5
	if err := w.env.AWS.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	node := w.longJobNode(t)
	before := w.group(t)
	req := w.request(node, time.Hour)
	req.ReplacementTimeout = recycle.Duration(8 * time.Second)
	out, err := w.h.Recycle(ctx, w.eng, req, "never-ready", nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Execution.Status != engine.StatusFailed || out.Execution.Error != recycle.ErrReplacementTimeout {
		t.Fatalf("want FAILED %s, got %s %s: %s", recycle.ErrReplacementTimeout, out.Execution.Status, out.Execution.Error, out.Execution.Cause)
	}
	if out.Elapsed > 8*time.Second+20*time.Second {
		t.Errorf("rollback took %s, want it soon after the 8s replacement timeout", out.Elapsed)
	}
	st := recycle.StateFromHistory(out.History)
	if st.Rollback == nil || !st.Rollback.SurgeUndone || !st.Rollback.Unfenced {
		t.Fatalf("rollback did not finish: %+v", st.Rollback)
	}
	assertUnfenced(t, w, node)
	after := w.group(t)
	if after.Desired != before.Desired {
		t.Errorf("desired %d after rollback, was %d", after.Desired, before.Desired)
	}
	if gi, ok := after.Instance(st.Target.InstanceID); !ok || gi.Lifecycle != cloud.LifecycleInService {
		t.Errorf("old instance %s after rollback: %+v (want InService)", st.Target.InstanceID, gi)
	}
	if !out.Report.OK() {
		t.Errorf("invariants broken:\n%s", out.Report)
	}
}

func TestAbortRollsBackAtEveryWaitingStep(t *testing.T) {
	for _, tc := range []struct {
		step string
		keep bool // --keep-replacement
	}{{"CheckReplacement", false}, {"Drain", false}, {"Drain", true}} {
		step := tc.step
		name := step
		if tc.keep {
			name += "/keep-replacement"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 2*time.Second, 10*time.Minute)
			ctx := context.Background()
			if step == "CheckReplacement" {
				// The replacement takes longer than the test: abort while waiting for it.
				f := w.env.AWS.Faults()
				f.BootDelay = sim.Duration(5 * time.Minute)
				if err := w.env.AWS.SetFaults(f); err != nil {
					t.Fatal(err)
				}
			}
			node := w.longJobNode(t)
			before := w.group(t)
			reached := make(chan string, 1)
			onEvent := entered(step, reached)
			go func() {
				id := <-reached
				time.Sleep(500 * time.Millisecond) // let the step act (a surge, an eviction) before aborting
				if _, err := w.eng.Stop(ctx, id, recycle.ErrAborted, "test abort at "+step); err != nil {
					t.Errorf("abort: %v", err)
				}
			}()
			req := w.request(node, time.Hour)
			req.KeepReplacement = tc.keep
			out, err := w.h.Recycle(ctx, w.eng, req, "abort-"+step, onEvent)
			if err != nil {
				t.Fatal(err)
			}
			if out.Execution.Status != engine.StatusAborted || out.Execution.RollbackID == "" {
				t.Fatalf("want ABORTED with a rollback, got %s (rollback %q)", out.Execution.Status, out.Execution.RollbackID)
			}
			rb, err := w.eng.Describe(ctx, out.Execution.RollbackID)
			if err != nil || rb.Status != engine.StatusSucceeded {
				t.Fatalf("rollback execution: %v %s %s %s", err, rb.Status, rb.Error, rb.Cause)
			}
			assertUnfenced(t, w, node)
			// The old instance serves again, and the group is as it was: a replacement
			// that was already Ready (the drain may have moved pods onto it) is drained
			// back and terminated with decrement — unless --keep-replacement keeps it.
			wantDesired := before.Desired
			if tc.keep {
				wantDesired++
			}
			tgt := recycle.StateFromHistory(out.History).Target
			if tgt == nil {
				t.Fatal("no target recorded before the abort")
			}
			rbHist, err := w.eng.History(ctx, rb.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st := recycle.StateFromHistory(rbHist).Rollback; st == nil || st.Before == nil || st.After == nil ||
				!slices.ContainsFunc(st.Notes, func(n string) bool {
					return strings.Contains(n, fmt.Sprintf("desired %d → %d", before.Desired, wantDesired))
				}) {
				t.Errorf("rollback result %+v: want the group's counts before and after in its notes", st)
			}
			if !tc.keep {
				var ids []string
				for _, in := range before.Instances {
					ids = append(ids, in.ID)
				}
				slices.Sort(ids)
				w.settledGroup(t, ids)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				after := w.group(t)
				gi, ok := after.Instance(tgt.InstanceID)
				if after.Desired == wantDesired && ok && gi.Lifecycle == cloud.LifecycleInService && after.CountLifecycle(cloud.LifecycleStandby) == 0 &&
					after.CountLifecycle(cloud.LifecycleInService) == int(wantDesired) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("group after abort: desired %d (want %d), old instance %+v", after.Desired, wantDesired, gi)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !out.Report.OK() {
				t.Errorf("invariants broken:\n%s", out.Report)
			}
		})
	}
}

func TestOnTimeout(t *testing.T) {
	for _, tc := range []struct {
		policy recycle.OnTimeout
		retire recycle.RetireMode
		want   engine.Status
	}{
		{recycle.OnTimeoutFail, recycle.RetireTerminate, engine.StatusFailed},
		{recycle.OnTimeoutEvict, recycle.RetireStop, engine.StatusSucceeded},
		{recycle.OnTimeoutForce, recycle.RetireTerminate, engine.StatusSucceeded},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			w := newWorld(t, 2*time.Second, 10*time.Minute)
			ctx := context.Background()
			node := w.longJobNode(t)
			before := w.group(t)
			req := w.request(node, 6*time.Second)
			req.OnTimeout, req.Retire = tc.policy, tc.retire
			out, err := w.h.Recycle(ctx, w.eng, req, "timeout-"+string(tc.policy), nil)
			if err != nil {
				t.Fatal(err)
			}
			if out.Execution.Status != tc.want {
				t.Fatalf("status %s (%s: %s), want %s", out.Execution.Status, out.Execution.Error, out.Execution.Cause, tc.want)
			}
			st := recycle.StateFromHistory(out.History)
			switch tc.policy {
			case recycle.OnTimeoutFail:
				if out.Execution.Error != recycle.ErrDrainTimeout {
					t.Errorf("error %s, want %s", out.Execution.Error, recycle.ErrDrainTimeout)
				}
				assertUnfenced(t, w, node)
				// The pods evicted before the timeout ran on the replacement: they are
				// drained back (PDBs honoured) and the replacement terminated, so the
				// group is as it was.
				var ids []string
				for _, in := range before.Instances {
					ids = append(ids, in.ID)
				}
				slices.Sort(ids)
				if after := w.settledGroup(t, ids); after.Desired != before.Desired {
					t.Errorf("desired %d after the rollback, want %d", after.Desired, before.Desired)
				}
				if st.Rollback == nil || st.Rollback.Drain == nil || !st.Rollback.Drain.Done || len(st.Rollback.Drain.Evicted) == 0 {
					t.Errorf("rollback %+v: want the replacement drained (pods evicted back)", st.Rollback)
				}
			case recycle.OnTimeoutEvict:
				if st.Drain == nil || !st.Drain.TimedOut || st.Drain.ForcedPods != 0 {
					t.Errorf("drain %+v: want timed out, evicted, none forced", st.Drain)
				}
			case recycle.OnTimeoutForce:
				if st.Drain == nil || st.Drain.ForcedPods == 0 {
					t.Errorf("drain %+v: want forced pods", st.Drain)
				}
			}
			if tc.retire == recycle.RetireStop {
				insts, err := w.h.Observer.Instances(ctx, st.Target.InstanceID)
				if err != nil || len(insts) != 1 {
					t.Fatalf("describe retired instance: %v %v", insts, err)
				}
				in := insts[0]
				if in.State != cloud.StateStopped && in.State != cloud.StateStopping {
					t.Errorf("retired instance is %s, want stopped", in.State)
				}
				if in.Group != "" {
					t.Errorf("retired instance still in group %s", in.Group)
				}
				if in.Tags[cloud.TagRetiredAt] == "" || in.Tags[cloud.TagExecution] == "" {
					t.Errorf("retired instance tags %v lack %s/%s", in.Tags, cloud.TagRetiredAt, cloud.TagExecution)
				}
			}
			// The selected pods were not touched before max-wait (6s after the start).
			if !out.Report.OK() {
				t.Errorf("invariants broken:\n%s", out.Report)
			}
		})
	}
}

func TestNoSurgeDrainsFirstAndLetsTheGroupReplace(t *testing.T) {
	w := newWorld(t, 2*time.Second, 3*time.Second)
	ctx := context.Background()
	node := w.longJobNode(t)
	before := w.group(t)
	req := w.request(node, time.Minute)
	req.NoSurge = true
	out, err := w.h.Recycle(ctx, w.eng, req, "no-surge", nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Execution.Status != engine.StatusSucceeded {
		t.Fatalf("status %s (%s: %s)", out.Execution.Status, out.Execution.Error, out.Execution.Cause)
	}
	st := recycle.StateFromHistory(out.History)
	if st.Surge != nil {
		t.Errorf("--no-surge surged: %+v", st.Surge)
	}
	// Desired capacity is kept, so the group launches a replacement for the detached instance.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := w.group(t)
		_, stillIn := g.Instance(st.Target.InstanceID)
		if g.Desired == before.Desired && !stillIn && g.CountLifecycle(cloud.LifecycleInService) == int(before.Desired) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group after --no-surge: desired %d (was %d), %d InService, old instance still in: %v", g.Desired, before.Desired, g.CountLifecycle(cloud.LifecycleInService), stillIn)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The invariant sampler is what every end-to-end test trusts: show that it flags each
// kind of violation when one really happens (no recycle runs here; the test does the damage).
func TestSamplerFlagsViolations(t *testing.T) {
	w := newWorld(t, 2*time.Second, 10*time.Minute)
	ctx := context.Background()
	cs := w.env.Kube.Client
	node := w.longJobNode(t)
	sampler, err := invariant.Start(ctx, cs, w.h.Observer, w.h.Clock, invariant.Watch{
		Group: w.env.Groups[0], OldNode: node, MaxWait: time.Hour,
		Selector: labels.SelectorFromSet(labels.Set{sim.LabelComponent: sim.LongJobComponent}), Namespaces: []string{sim.WorkloadNamespace},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Kill every pod of the "api" Deployment at once (no eviction, PDB minAvailable 2),
	// and the selected long-job pods long before their deadline.
	for _, sel := range []string{"app=api", sim.LabelComponent + "=" + sim.LongJobComponent} {
		if err := cs.CoreV1().Pods(sim.WorkloadNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}); err != nil {
			t.Fatal(err)
		}
	}
	// Leave Recycler's taint behind on the node.
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: kube.TaintKey, Value: "gone", Effect: corev1.TaintEffectNoSchedule})
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // let the disruption controller publish the PDB's new status
	rep := sampler.Stop(ctx)
	t.Logf("\n%s", rep)
	if rep.OK() {
		t.Fatal("the sampler saw no violation")
	}
	failed := map[string]bool{}
	for _, c := range rep.Checks {
		if !c.OK {
			failed[c.Name[:2]] = true
		}
	}
	for _, want := range []string{"1b", "2.", "3.", "4."} {
		if !failed[want] {
			t.Errorf("check %s passed although it was violated", want)
		}
	}
	if failed["1a"] {
		t.Errorf("check 1a failed although no node went away")
	}
}

// A selected pod's deadline runs from the drain's start, not from when the
// sampler (or the recycle) started: with a replacement that boots longer than
// --max-wait, a selected pod killed as the drain begins is still early. Before,
// the sampler measured from its own start and called that kill on time.
func TestSamplerMeasuresDeadlinesFromTheDrainStart(t *testing.T) {
	const boot, maxWait = 10 * time.Second, 8 * time.Second
	w := newWorld(t, boot, 10*time.Minute)
	ctx := context.Background()
	node := w.longJobNode(t)
	killed := make(chan string, 1)
	onEvent := func(ev engine.Event) error {
		var d struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(ev.Details, &d)
		if ev.Type != "TaskStateEntered" || d.Name != "Drain" || len(killed) > 0 {
			return nil
		}
		// Someone deletes a selected pod the moment the drain begins.
		pods, err := w.env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent, FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			killed <- ""
			return err
		}
		if len(pods.Items) == 0 {
			killed <- ""
			return nil
		}
		p := pods.Items[0]
		killed <- p.Namespace + "/" + p.Name
		return w.env.Kube.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
	}
	out, err := w.h.Recycle(ctx, w.eng, w.request(node, maxWait), "sampler-deadline", onEvent)
	if err != nil {
		t.Fatal(err)
	}
	victim := <-killed
	if victim == "" {
		t.Fatal("no selected pod to kill when the drain began")
	}
	t.Logf("killed %s as the drain began; recycle %s\n%s", victim, out.Execution.Status, out.Report)
	for _, c := range out.Report.Checks {
		if strings.HasPrefix(c.Name, "2.") && (c.OK || !strings.Contains(c.Measured, victim)) {
			t.Errorf("check %q = ok %v (%s); want it to flag %s, killed %s before its deadline", c.Name, c.OK, c.Measured, victim, maxWait)
		}
	}
}

// replacementProtectionAtDrain reads, when ev enters the Drain step, the replacement
// node's scale-down-disabled annotation ("node=value"), or what kept it from reading
// it; ok is false for any other event.
func replacementProtectionAtDrain(ctx context.Context, cs kubernetes.Interface, ev engine.Event) (seen string, ok bool) {
	var d struct {
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	}
	if ev.Type != "TaskStateEntered" || json.Unmarshal(ev.Details, &d) != nil || d.Name != "Drain" {
		return "", false
	}
	var st recycle.State
	if json.Unmarshal(d.Input, &st) != nil || st.Replacement == nil || len(st.Replacement.Nodes) == 0 {
		return "no replacement node recorded before Drain", true
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, st.Replacement.Nodes[0], metav1.GetOptions{})
	if err != nil {
		return err.Error(), true
	}
	return n.Name + "=" + n.Annotations[kube.AnnotationScaleDownDisabled], true
}
