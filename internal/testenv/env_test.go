package testenv_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/recycler/recycler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.RunMain(m) }

// eventually polls cond every 100ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, err)
	}
}

func readyNode(t *testing.T, env *testenv.Env, spec testenv.NodeSpec) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	if spec.Name == "" {
		spec.Name = "node-" + rand.String(6)
	}
	if _, err := env.CreateNode(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.DeleteNode(context.Background(), spec.Name); err != nil {
			t.Error(err)
		}
	})
	var node *corev1.Node
	eventually(t, 30*time.Second, "node "+spec.Name+" Ready and schedulable", func(ctx context.Context) (bool, error) {
		n, err := env.Client.CoreV1().Nodes().Get(ctx, spec.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = n
		return isReady(n) && !notReadyTainted(n), nil
	})
	return node
}

func isReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// notReadyTainted: node-lifecycle has not lifted the not-ready taint yet.
func notReadyTainted(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func pod(name, node string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{corev1.LabelHostname: node},
			Containers:   []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func TestDeploymentPodsRunAndBecomeReadyOnKwokNode(t *testing.T) {
	env := testenv.Shared(t)
	ns := env.Namespace(t)
	node := readyNode(t, env, testenv.NodeSpec{ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"})
	if node.Spec.ProviderID != "aws:///us-east-1a/i-0123456789abcdef0" {
		t.Fatalf("providerID = %q", node.Spec.ProviderID)
	}
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	replicas := int32(3)
	_, err := env.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       pod("", node.Name, nil).Spec,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "deployment web has 3 ready replicas", func(ctx context.Context) (bool, error) {
		d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == replicas, err
	})
	pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("got %d pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != node.Name || p.Status.Phase != corev1.PodRunning || !podReady(&p) || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %s ready %v ip %q; want Running and Ready on %s with an IP",
				p.Name, p.Spec.NodeName, p.Status.Phase, podReady(&p), p.Status.PodIP, node.Name)
		}
	}
}

func TestPodWithCompletionDelaySucceedsAfterIt(t *testing.T) {
	env := testenv.Shared(t)
	ns := env.Namespace(t)
	node := readyNode(t, env, testenv.NodeSpec{})
	ctx := context.Background()
	const delay = 3 * time.Second
	p := pod("batch", node.Name, map[string]string{testenv.PodCompleteDelayAnnotation: delay.String()})
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var runningAt time.Time
	eventually(t, 20*time.Second, "pod batch Running", func(ctx context.Context) (bool, error) {
		got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "batch", metav1.GetOptions{})
		if err != nil || got.Status.Phase != corev1.PodRunning {
			return false, err
		}
		runningAt = time.Now()
		return true, nil
	})
	var done *corev1.Pod
	eventually(t, delay+20*time.Second, "pod batch Succeeded", func(ctx context.Context) (bool, error) {
		got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "batch", metav1.GetOptions{})
		done = got
		return err == nil && got.Status.Phase == corev1.PodSucceeded, err
	})
	// It ran for about the delay: not at once, not never.
	if ran := time.Since(runningAt); ran < delay-time.Second {
		t.Errorf("pod succeeded %s after Running, want about %s", ran, delay)
	}
	if podReady(done) {
		t.Errorf("succeeded pod still Ready")
	}
	if cs := done.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 0 {
		t.Errorf("container statuses %+v, want one terminated with exit code 0", cs)
	}
	// A pod without the annotation keeps running.
	long := pod("server", node.Name, nil)
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, long, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pod server Running", func(ctx context.Context) (bool, error) {
		got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning, err
	})
	time.Sleep(delay) // observe for as long as the annotated pod needed
	got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.PodRunning {
		t.Errorf("pod server without annotation: phase %v err %v, want still Running", got.Status.Phase, err)
	}
}

func TestDeletedPodGoesAwayLongBeforeItsGracePeriod(t *testing.T) {
	env := testenv.Shared(t)
	ns := env.Namespace(t)
	node := readyNode(t, env, testenv.NodeSpec{})
	ctx := context.Background()
	grace := int64(60)
	p := pod("victim", node.Name, nil)
	p.Spec.TerminationGracePeriodSeconds = &grace
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pod victim Ready", func(ctx context.Context) (bool, error) {
		got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
		return err == nil && podReady(got), err
	})
	if err := env.Client.CoreV1().Pods(ns).Delete(ctx, "victim", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Graceful: first terminating (deletionTimestamp set), then gone.
	got, err := env.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
	if err == nil && got.DeletionTimestamp == nil {
		t.Errorf("deleted pod has no deletionTimestamp")
	}
	eventually(t, 15*time.Second, "pod victim gone", func(ctx context.Context) (bool, error) {
		_, err := env.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

func TestNodeTurnsReadyAfterItsDelayAndNeverReadyStaysNotReady(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	slow, never := "slow-"+rand.String(5), "never-"+rand.String(5)
	created := time.Now()
	for _, spec := range []testenv.NodeSpec{{Name: slow, ReadyAfter: 3 * time.Second}, {Name: never, NotReady: true}} {
		n, err := env.CreateNode(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if isReady(n) || !notReadyTainted(n) {
			t.Fatalf("new node %s: ready %v taints %v; want NotReady with the not-ready taint", n.Name, isReady(n), n.Spec.Taints)
		}
		t.Cleanup(func() { _ = env.DeleteNode(context.Background(), spec.Name) })
	}
	eventually(t, 30*time.Second, "node "+slow+" Ready without the not-ready taint", func(ctx context.Context) (bool, error) {
		n, err := env.Client.CoreV1().Nodes().Get(ctx, slow, metav1.GetOptions{})
		return err == nil && isReady(n) && !notReadyTainted(n), err
	})
	if took := time.Since(created); took < 2500*time.Millisecond {
		t.Errorf("node %s Ready after %s, want ≥ 3s", slow, took)
	}
	n, err := env.Client.CoreV1().Nodes().Get(ctx, never, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if isReady(n) || !notReadyTainted(n) {
		t.Errorf("node %s: ready %v taints %v; want NotReady and tainted", never, isReady(n), n.Spec.Taints)
	}
}

func TestDaemonSetPodRunsOnTaintedNodeAndOthersStayAway(t *testing.T) {
	env := testenv.Shared(t)
	ns := env.Namespace(t)
	ctx := context.Background()
	taint := corev1.Taint{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}
	node := readyNode(t, env, testenv.NodeSpec{Labels: map[string]string{"pool": ns}, Taints: []corev1.Taint{taint}})
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"pool": ns},
					Tolerations:  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers:   []corev1.Container{{Name: "agent", Image: "registry.k8s.io/pause:3.10"}},
				},
			},
		},
	}
	if _, err := env.Client.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod("plain", node.Name, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "daemonset pod Running and Ready on "+node.Name, func(ctx context.Context) (bool, error) {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 1 && pods.Items[0].Spec.NodeName == node.Name && podReady(&pods.Items[0]), nil
	})
	// The scheduler keeps a pod without toleration off the tainted node.
	eventually(t, 30*time.Second, "pod plain reported Unschedulable", func(ctx context.Context) (bool, error) {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, "plain", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != "" {
			return false, fmt.Errorf("pod without toleration scheduled onto tainted node %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestStopLeavesNoProcessAndNoDirectory(t *testing.T) {
	shared := testenv.Shared(t) // its components are our children too
	env, err := testenv.Start(context.Background(), testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pids := env.Pids()
	if len(pids) != 5 {
		t.Errorf("got %d component processes, want 5", len(pids))
	}
	// The new control plane works on its own.
	if _, err := kubernetes.NewForConfigOrDie(env.Config).CoreV1().Namespaces().Get(context.Background(), "kube-system", metav1.GetOptions{}); err != nil {
		t.Errorf("second control plane: %v", err)
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			t.Errorf("process %d still exists after Stop", pid)
		}
	}
	if kids := childrenOf(t, os.Getpid(), shared.Pids()); len(kids) > 0 {
		t.Errorf("children of the test left after Stop: %v", kids)
	}
	if _, err := os.Stat(env.Dir); !os.IsNotExist(err) {
		t.Errorf("dir %s still there after Stop (err %v)", env.Dir, err)
	}
	if err := env.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// childrenOf lists the processes whose parent is ppid, except those in skip.
func childrenOf(t *testing.T, ppid int, skip []int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(skip, pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces, so cut at the last ')'.
		s := string(b)
		end := strings.LastIndex(s, ")")
		fields := strings.Fields(s[end+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(ppid) {
			out = append(out, s[:end+1])
		}
	}
	return out
}

// TestComponentsDieWithAPanickingTestBinary runs this test binary again; the
// child starts a control plane and panics without Stop. Every component must
// die with it.
func TestComponentsDieWithAPanickingTestBinary(t *testing.T) {
	if os.Getenv("TESTENV_PANIC_CHILD") == "1" {
		env, err := testenv.Start(context.Background(), testenv.Options{})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("PIDS", strings.Trim(fmt.Sprint(env.Pids()), "[]"))
		panic("test panics with a running control plane")
	}
	testenv.Shared(t) // skip like the others without a control plane
	cmd := exec.Command(os.Args[0], "-test.run", "^TestComponentsDieWithAPanickingTestBinary$", "-test.count", "1")
	cmd.Env = append(os.Environ(), "TESTENV_PANIC_CHILD=1", testenv.SkipEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child did not fail:\n%s", out)
	}
	var pids []int
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "PIDS "); ok {
			for _, f := range strings.Fields(rest) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) != 5 {
		t.Fatalf("child reported pids %v, want 5; output:\n%s", pids, out)
	}
	t.Cleanup(func() { // should this test fail, leave nothing behind
		for _, pid := range pids {
			if alive(pid) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	eventually(t, 10*time.Second, "components of the dead child exit", func(context.Context) (bool, error) {
		for _, pid := range pids {
			if alive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
}

// alive reports whether pid runs; a zombie waiting for init to reap it is dead.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// TestAPIServerRestartKeepsAddressDataAndClients: StopAPIServer makes clients see
// what they see when a control plane goes away (connection refused, watches end);
// StartAPIServer brings it back on the same address with the same etcd, so the same
// clients, objects and components carry on.
func TestAPIServerRestartKeepsAddressDataAndClients(t *testing.T) {
	ctx := context.Background()
	env, err := testenv.Start(ctx, testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	node := readyNode(t, env, testenv.NodeSpec{})
	cms := env.Client.CoreV1().ConfigMaps(metav1.NamespaceDefault)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "before"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	before := env.Pids()

	if err := env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "before", metav1.GetOptions{}); !utilnet.IsConnectionRefused(err) {
		t.Errorf("Get while stopped: %v, want connection refused", err)
	}
	timeout := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-w.ResultChan():
		case <-timeout:
			t.Fatal("the watch did not end when the apiserver stopped")
		}
	}

	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "before", metav1.GetOptions{}); err != nil {
		t.Errorf("object created before the restart, with the same client: %v", err)
	}
	after := env.Pids()
	if len(after) != len(before) || slices.Equal(after, before) {
		t.Errorf("pids before %v, after %v: want the same count with a new apiserver", before, after)
	}
	// Scheduler, controllers and kwok reconnected: a pod is scheduled and runs.
	pods := env.Client.CoreV1().Pods(metav1.NamespaceDefault)
	if _, err := pods.Create(ctx, pod("after-restart", node.Name, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "pod after-restart Running and Ready", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "after-restart", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && podReady(p), nil
	})
	if err := env.StartAPIServer(ctx); err == nil {
		t.Error("StartAPIServer on a running apiserver did not refuse")
	}
}
