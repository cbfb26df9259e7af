package recycle_test

// Table tests of the task functions' edge paths, against the real control plane
// of internal/testenv (kube-apiserver, controllers, kwok) with the time rules on a
// clock the test steps. The state machine's loop is played by the test: it calls
// the task through Tasks.Invoke (the dispatcher both engines use), keeps the
// result in the State, and calls again.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.RunMain(m) }

// world is one test's corner of the shared control plane: a namespace, the old
// node (fenced by the test's execution, as Fence leaves it) and a spare node the
// moved pods can go to, all labelled with the test's pool.
type world struct {
	t     *testing.T
	env   *testenv.Env
	cs    kubernetes.Interface // the admin's client, not counted
	ns    string
	pool  map[string]string
	old   string
	spare string
	exec  string
	clk   *clocktesting.FakeClock
	tasks *recycle.Tasks
	kube  *kube.Client
	// reqs counts the HTTP requests of the tasks' Kubernetes client; waits counts
	// calls to the Cluster port's WaitPodsChange (a spinning drain shows there).
	reqs   atomic.Int64
	waits  atomic.Int64
	faults *faultRT
}

func newWorld(t *testing.T, spare bool) *world {
	t.Helper()
	env := testenv.Shared(t)
	w := &world{t: t, env: env, cs: env.Client, ns: env.Namespace(t), exec: "exec-" + randHex(t, 4)}
	w.pool = map[string]string{"recycler-test/pool": w.ns}
	w.clk = clocktesting.NewFakeClock(time.Now())
	w.old = w.node("old")
	if spare {
		w.spare = w.node("spare")
	}
	rc := rest.CopyConfig(env.Config)
	rc.QPS, rc.Burst = 1000, 1000
	w.faults = &faultRT{}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		w.faults.rt = rt
		return scenario.Counting(w.faults, &w.reqs)
	})
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	// Jitter 0: the n-th refusal waits exactly 2.5 s · 2ⁿ (up to 150 s).
	w.kube = kube.New(cs, kube.WithClock(w.clk), kube.WithRand(func() float64 { return 0 }))
	w.tasks = &recycle.Tasks{Cluster: countingCluster{w.kube, &w.waits}, Clock: w.clk}
	return w
}

// fence fences the old node as the Fence step does; pods are placed before.
func (w *world) fence() {
	w.t.Helper()
	if _, err := w.kube.Fence(context.Background(), w.old, w.exec); err != nil {
		w.t.Fatal(err)
	}
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// node creates a Ready kwok node in the test's pool.
func (w *world) node(suffix string) string {
	w.t.Helper()
	name := w.ns + "-" + suffix
	_, err := w.env.CreateNode(context.Background(), testenv.NodeSpec{Name: name, ProviderID: "aws:///us-east-1a/i-" + randHex(w.t, 9)[:17], Labels: w.pool})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = w.env.DeleteNode(context.Background(), name) })
	w.waitFor("node "+name+" Ready", func(ctx context.Context) (bool, error) {
		n, err := w.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil // not yet visible
		}
		if err != nil {
			return false, err
		}
		ready, _ := kube.NodeIsReady(n, nil)
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady {
				ready = false
			}
		}
		return ready, nil
	})
	return name
}

// waitFor polls cond (test set-up only; the code under test watches) for up to a minute.
func (w *world) waitFor(what string, cond func(context.Context) (bool, error)) {
	w.t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, cond); err != nil {
		w.t.Fatalf("waited a minute for %s: %v", what, err)
	}
}

// pod runs a bare pod (no controller) on the old node.
func (w *world) pod(name string, labels, ann map[string]string, grace int64) *corev1.Pod {
	w.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns, Labels: labels, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: w.old, RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To(grace),
			Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}
	p, err := w.cs.CoreV1().Pods(w.ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.waitFor("pod "+name+" running", func(ctx context.Context) (bool, error) {
		got, err := w.cs.CoreV1().Pods(w.ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning, nil
	})
	return p
}

// deployment runs replicas pods of app on the old node (the spare, if any, is
// cordoned meanwhile) and guards them with a PDB of minAvailable (nil: none).
func (w *world) deployment(app string, replicas int32, minAvailable *int32, podAnn map[string]string, minReady int32) {
	w.t.Helper()
	ctx := context.Background()
	if w.spare != "" {
		w.cordon(w.spare, true)
		defer w.cordon(w.spare, false)
	}
	labels := map[string]string{"app": app}
	_, err := w.cs.AppsV1().Deployments(w.ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas), MinReadySeconds: minReady, ProgressDeadlineSeconds: ptr.To(max(600, 2*minReady)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: podAnn},
				Spec: corev1.PodSpec{NodeSelector: w.pool, TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.waitFor(app+" pods running on the old node", func(ctx context.Context) (bool, error) {
		pods, err := w.cs.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName == w.old && p.Status.Phase == corev1.PodRunning {
				n++
			}
		}
		return n == int(replicas), nil
	})
	if minAvailable == nil {
		return
	}
	_, err = w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: app},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(*minAvailable)), Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}, metav1.CreateOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.waitFor("PDB "+app+" observed", func(ctx context.Context) (bool, error) {
		p, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Get(ctx, app, metav1.GetOptions{})
		return err == nil && p.Status.ObservedGeneration == p.Generation && p.Status.ExpectedPods == replicas, nil
	})
}

func (w *world) cordon(node string, on bool) {
	w.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%v}}`, on)
	if _, err := w.cs.CoreV1().Nodes().Patch(context.Background(), node, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// request is a valid request for the old node with the test's selector.
func (w *world) request(maxWait time.Duration) recycle.Request {
	r := recycle.NewRequest(w.old)
	r.Selector, r.Namespaces = "role=job", []string{w.ns}
	r.MaxWait = recycle.Duration(maxWait)
	r.ForceGrace = recycle.Duration(5 * time.Second)
	return r
}

// state is what Resolve and Fence leave for the drain.
func (w *world) state(req recycle.Request) recycle.State {
	return recycle.State{Request: req, Target: &recycle.Target{Node: w.old, InstanceID: "i-0123456789abcdef0", Group: "g"}}
}

// invoke runs one task through the dispatcher and stores its result in st.
func (w *world) invoke(ctx context.Context, task string, st *recycle.State) error {
	raw, err := json.Marshal(recycle.Payload{Task: task, Execution: w.exec, State: *st})
	if err != nil {
		return err
	}
	out, err := w.tasks.Invoke(ctx, raw)
	if err != nil {
		return err
	}
	switch task {
	case recycle.TaskDrain:
		st.Drain = nil
		return json.Unmarshal(out, &st.Drain)
	case recycle.TaskCheckWorkloads:
		st.Workloads = nil
		return json.Unmarshal(out, &st.Workloads)
	}
	return fmt.Errorf("invoke: no field for task %s", task)
}

// loop plays the state machine's loop for task: call, and while not done, step
// the clock while the call blocks, pause 1 s, call again — until done, an error,
// or the clock has moved by limit. It returns the task's error, if any.
func (w *world) loop(task string, st *recycle.State, limit time.Duration, done func(recycle.State) bool) error {
	w.t.Helper()
	start := w.clk.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		res := make(chan error, 1)
		go func() { res <- w.invoke(ctx, task, st) }()
		err := w.stepUntil(res, start.Add(limit))
		cancel()
		if err != nil || done(*st) {
			return err
		}
		if !w.clk.Now().Before(start.Add(limit)) {
			w.t.Fatalf("%s not done %s after the loop started (fake clock): %+v", task, limit, st.Drain)
		}
		w.clk.Step(time.Second) // the state machine's Wait
	}
}

// stepUntil moves the fake clock on by one second at a time while a call is
// blocked on it, until the call returns (or the clock reaches limit, where the
// call must return: every pass is bounded).
func (w *world) stepUntil(res <-chan error, limit time.Time) error {
	w.t.Helper()
	wall := time.After(2 * time.Minute)
	for {
		select {
		case err := <-res:
			return err
		case <-wall:
			w.t.Fatalf("a call blocked 2 minutes of wall time (fake clock at +%s)", w.clk.Since(limit))
		case <-time.After(5 * time.Millisecond):
			if w.clk.HasWaiters() && w.clk.Now().Before(limit.Add(time.Hour)) {
				w.clk.Step(time.Second)
			}
		}
	}
}

func (w *world) podGone(name string) bool {
	p, err := w.cs.CoreV1().Pods(w.ns).Get(context.Background(), name, metav1.GetOptions{})
	return err != nil || p.DeletionTimestamp != nil
}

func (w *world) podNames(sel string) []string {
	pods, err := w.cs.CoreV1().Pods(w.ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", w.old).String()})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p.Name)
		}
	}
	return out
}

// countingCluster counts the drain's blocking waits; the rest is the real client.
type countingCluster struct {
	recycle.Cluster
	n *atomic.Int64
}

func (c countingCluster) WaitPodsChange(ctx context.Context, node string, sel kube.PodSelector, prev kube.PodSet) (kube.PodSet, bool, error) {
	c.n.Add(1)
	return c.Cluster.WaitPodsChange(ctx, node, sel, prev)
}

// faultRT answers the next n requests that match with a scripted status, as a
// throttling API server does, and forwards everything else.
type faultRT struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	match func(*http.Request) bool
	n     int
	code  int
}

func (f *faultRT) script(n, code int, match func(*http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n, f.code, f.match = n, code, match
}

func (f *faultRT) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	hit := f.n > 0 && f.match(r)
	if hit {
		f.n--
	}
	code := f.code
	f.mu.Unlock()
	if !hit {
		return f.rt.RoundTrip(r)
	}
	body := fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too many requests (scripted)","reason":"TooManyRequests","code":%d}`, code)
	return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {"application/json"}},
		Body: ioNopCloser{strings.NewReader(body)}, Request: r, ProtoMajor: 1, ProtoMinor: 1}, nil
}

type ioNopCloser struct{ *strings.Reader }

func (ioNopCloser) Close() error { return nil }

func isEviction(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/eviction")
}
