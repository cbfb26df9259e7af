package kube_test

// These tests run against the real control plane of internal/testenv
// (etcd, kube-apiserver, controller-manager, scheduler, kwok).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.RunMain(m) }

// instanceID returns a fresh 17-hex-digit EC2 instance ID.
func instanceID(t *testing.T) string {
	b := make([]byte, 9)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "i-" + hex.EncodeToString(b)[:17]
}

// newNode creates a kwok Node named after the test and deletes it afterwards.
func newNode(t *testing.T, env *testenv.Env, suffix string, spec testenv.NodeSpec) *corev1.Node {
	t.Helper()
	if spec.Name == "" {
		spec.Name = strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + "-" + suffix
		if len(spec.Name) > 60 {
			spec.Name = spec.Name[len(spec.Name)-60:]
		}
		spec.Name = strings.Trim(spec.Name, "-")
	}
	ctx := context.Background()
	n, err := env.CreateNode(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.DeleteNode(context.Background(), n.Name) })
	return n
}

// listWatcher is the typed client of one kind (e.g. cs.CoreV1().Nodes()).
type listWatcher[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// until lists and then watches objects of one kind until one satisfies cond,
// and returns it; it fails the test after timeout.
func until[T runtime.Object, L runtime.Object](t *testing.T, timeout time.Duration, c listWatcher[L], opts metav1.ListOptions, what string, cond func(T) bool) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		l, err := c.List(ctx, opts)
		if err != nil {
			break
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range items {
			if v, ok := o.(T); ok && cond(v) {
				return v
			}
		}
		la, _ := meta.ListAccessor(l)
		wopts := opts
		wopts.ResourceVersion = la.GetResourceVersion()
		w, err := c.Watch(ctx, wopts)
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			if v, ok := ev.Object.(T); ok && ev.Type != watch.Deleted && ev.Type != watch.Error && cond(v) {
				w.Stop()
				return v
			}
			if ev.Type == watch.Error {
				break
			}
		}
		w.Stop()
	}
	var zero T
	t.Fatalf("waited %s for %s", timeout, what)
	return zero
}

func byName(name string) metav1.ListOptions {
	return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
}

func nodeReady(t *testing.T, env *testenv.Env, name string) {
	t.Helper()
	until[*corev1.Node](t, 60*time.Second, env.Client.CoreV1().Nodes(), byName(name), "node "+name+" Ready and not-ready taint lifted",
		func(n *corev1.Node) bool {
			ready, _ := kube.NodeIsReady(n, nil)
			return ready && !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
		})
}

func getNode(t *testing.T, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// userView is what an admin sees of a node's scheduling state and metadata.
type userView struct {
	Unschedulable bool
	Taints        []corev1.Taint
	Labels        map[string]string
	Annotations   map[string]string
}

func viewOf(n *corev1.Node) userView {
	taints := append([]corev1.Taint(nil), n.Spec.Taints...)
	for i := range taints {
		taints[i].TimeAdded = nil
	}
	slices.SortFunc(taints, func(a, b corev1.Taint) int { return strings.Compare(a.Key+string(a.Effect), b.Key+string(b.Effect)) })
	nonEmpty := func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	}
	return userView{n.Spec.Unschedulable, taints, nonEmpty(n.Labels), nonEmpty(n.Annotations)}
}

func withoutControllerTaint(v userView) userView {
	v.Taints = slices.DeleteFunc(slices.Clone(v.Taints), func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeUnschedulable })
	return v
}

func nodeEvents(t *testing.T, cs kubernetes.Interface, node, reason string) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Node", "involvedObject.name": node, "reason": reason}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestFenceTwiceThenUnfenceRestoresNode(t *testing.T) {
	env := testenv.Shared(t)
	adminTaint := corev1.Taint{Key: "example.com/maintenance", Value: "disk", Effect: corev1.TaintEffectNoSchedule}
	for _, tc := range []struct {
		name  string
		spec  testenv.NodeSpec
		owned bool // whether Recycler's fence sets the cordon itself
	}{
		{"admin cordon and taint", testenv.NodeSpec{Unschedulable: true, Taints: []corev1.Taint{adminTaint}}, false},
		{"plain node", testenv.NodeSpec{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tc.spec.ProviderID = "aws:///us-east-1a/" + instanceID(t)
			n := newNode(t, env, "n", tc.spec)
			// Settled: Ready, and for a cordoned node the controller's unschedulable taint added.
			nodeReady(t, env, n.Name)
			if tc.spec.Unschedulable {
				until[*corev1.Node](t, 30*time.Second, env.Client.CoreV1().Nodes(), byName(n.Name), "unschedulable taint",
					func(n *corev1.Node) bool {
						return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeUnschedulable })
					})
			}
			before := viewOf(getNode(t, env.Client, n.Name))

			k := kube.New(env.Client)
			rec1, err := k.Fence(ctx, n.Name, "exec-1")
			if err != nil {
				t.Fatal(err)
			}
			if !rec1.TaintAdded || rec1.Cordoned != tc.owned {
				t.Errorf("fence record %+v: want taint added, cordoned-by-us=%v", rec1, tc.owned)
			}
			fenced := getNode(t, env.Client, n.Name)
			if !fenced.Spec.Unschedulable || !slices.Contains(fenced.Spec.Taints, corev1.Taint{Key: kube.TaintKey, Value: "exec-1", Effect: corev1.TaintEffectNoSchedule}) {
				t.Fatalf("after Fence: unschedulable=%v taints=%v", fenced.Spec.Unschedulable, fenced.Spec.Taints)
			}
			if !slices.Contains(fenced.Spec.Taints, adminTaint) && !tc.owned {
				t.Fatalf("admin taint lost on fence: %v", fenced.Spec.Taints)
			}
			rec2, err := k.Fence(ctx, n.Name, "exec-1")
			if err != nil || rec2 != rec1 {
				t.Fatalf("second Fence = %+v, %v; want the same record %+v", rec2, err, rec1)
			}
			again := getNode(t, env.Client, n.Name)
			// The node controller adds its unschedulable taint after a cordon; that is not our write.
			if !reflect.DeepEqual(withoutControllerTaint(viewOf(fenced)), withoutControllerTaint(viewOf(again))) {
				t.Errorf("second Fence changed the node:\n%+v\n%+v", viewOf(fenced), viewOf(again))
			}

			if err := k.Unfence(ctx, n.Name, "exec-1"); err != nil {
				t.Fatal(err)
			}
			if err := k.Unfence(ctx, n.Name, "exec-1"); err != nil {
				t.Fatalf("second Unfence: %v", err)
			}
			// Uncordoning lets the node controller drop its unschedulable taint; wait for that.
			after := viewOf(until[*corev1.Node](t, 30*time.Second, env.Client.CoreV1().Nodes(), byName(n.Name), "node back to its start",
				func(n *corev1.Node) bool { return reflect.DeepEqual(viewOf(n), before) }))
			if !reflect.DeepEqual(after, before) {
				t.Errorf("node after unfence differs:\nbefore %+v\nafter  %+v", before, after)
			}
			if len(nodeEvents(t, env.Client, n.Name, kube.ReasonFenced)) != 1 || len(nodeEvents(t, env.Client, n.Name, kube.ReasonUnfenced)) != 1 {
				t.Errorf("want exactly one %s and one %s event (no-ops record nothing)", kube.ReasonFenced, kube.ReasonUnfenced)
			}
		})
	}
}

// The load-balancer exclusion label is recorded as ours only when we add it, so
// an unfence removes exactly what the recycle set.
func TestExcludeFromLoadBalancersOnlyUndoesOurLabel(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	k := kube.New(env.Client)
	for _, tc := range []struct {
		name string
		had  bool // an admin labelled the node first
	}{{"label added by the recycle", false}, {"label there before", true}} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + instanceID(t)}
			if tc.had {
				spec.Labels = map[string]string{corev1.LabelNodeExcludeBalancers: "admin"}
			}
			n := newNode(t, env, "n", spec)
			if err := k.ExcludeFromLoadBalancers(ctx, n.Name, "exec-lb"); !errors.Is(err, kube.ErrNotFenced) {
				t.Fatalf("on an unfenced node: %v, want ErrNotFenced", err)
			}
			if _, err := k.Fence(ctx, n.Name, "exec-lb"); err != nil {
				t.Fatal(err)
			}
			for range 2 { // idempotent
				if err := k.ExcludeFromLoadBalancers(ctx, n.Name, "exec-lb"); err != nil {
					t.Fatal(err)
				}
			}
			if v, ok := getNode(t, env.Client, n.Name).Labels[corev1.LabelNodeExcludeBalancers]; !ok || (tc.had && v != "admin") {
				t.Fatalf("label after exclusion: %q %v", v, ok)
			}
			if err := k.ExcludeFromLoadBalancers(ctx, n.Name, "other-exec"); !errors.Is(err, kube.ErrNodeHeld) {
				t.Errorf("another execution: %v, want ErrNodeHeld", err)
			}
			if err := k.Unfence(ctx, n.Name, "exec-lb"); err != nil {
				t.Fatal(err)
			}
			v, ok := getNode(t, env.Client, n.Name).Labels[corev1.LabelNodeExcludeBalancers]
			if ok != tc.had || (tc.had && v != "admin") {
				t.Errorf("after unfence the label is %q (present %v); want it present only if the admin had set it", v, ok)
			}
		})
	}
}

func TestConcurrentFenceExactlyOneWins(t *testing.T) {
	env := testenv.Shared(t)
	n := newNode(t, env, "n", testenv.NodeSpec{ProviderID: "aws:///us-east-1b/" + instanceID(t)})
	nodeReady(t, env, n.Name)
	before := viewOf(getNode(t, env.Client, n.Name))

	const contenders = 4
	errs := make([]error, contenders)
	var wg sync.WaitGroup
	for i := range contenders {
		wg.Go(func() {
			_, errs[i] = kube.New(env.Client).Fence(context.Background(), n.Name, fmt.Sprintf("exec-%d", i))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("executions %d and %d both fenced the node", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, kube.ErrNodeHeld):
			t.Fatalf("execution %d: %v, want ErrNodeHeld", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no execution fenced the node")
	}
	winnerID := fmt.Sprintf("exec-%d", winner)
	for i, err := range errs {
		var held *kube.NodeHeldError
		if i != winner && (!errors.As(err, &held) || held.HeldBy != winnerID) {
			t.Errorf("loser %d: %v, want held by %s", i, err, winnerID)
		}
	}
	// A loser cannot unfence the winner's node.
	loser := fmt.Sprintf("exec-%d", (winner+1)%contenders)
	if err := kube.New(env.Client).Unfence(context.Background(), n.Name, loser); !errors.Is(err, kube.ErrNodeHeld) {
		t.Fatalf("Unfence by %s = %v, want ErrNodeHeld", loser, err)
	}
	fenced, err := kube.New(env.Client).FencedNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fenced, func(f kube.FencedNode) bool { return f.Node == n.Name && f.Record.ExecutionID == winnerID }) {
		t.Errorf("FencedNodes %+v does not list %s held by %s", fenced, n.Name, winnerID)
	}
	if err := kube.New(env.Client).Unfence(context.Background(), n.Name, winnerID); err != nil {
		t.Fatal(err)
	}
	until[*corev1.Node](t, 30*time.Second, env.Client.CoreV1().Nodes(), byName(n.Name), "node back to its start",
		func(n *corev1.Node) bool { return reflect.DeepEqual(viewOf(n), before) })
}

func TestBadInputGivesClearErrorAndChangesNothing(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	id := instanceID(t)
	n := newNode(t, env, "n", testenv.NodeSpec{ProviderID: "aws:///eu-central-1a/" + id})
	odd := newNode(t, env, "odd", testenv.NodeSpec{ProviderID: "aws:///eu-central-1a/not-an-instance"})
	nodeReady(t, env, n.Name)
	before := viewOf(getNode(t, env.Client, n.Name))
	k := kube.New(env.Client)

	// The good paths first, so the bad ones are known to fail for the input.
	for _, ref := range []string{n.Name, id, "aws:///eu-central-1a/" + id} {
		got, err := k.ResolveNode(ctx, ref)
		if err != nil || got.Name != n.Name {
			t.Fatalf("ResolveNode(%q) = %v, %v; want node %s", ref, got, err, n.Name)
		}
	}
	if _, err := kube.InstanceID(getNode(t, env.Client, odd.Name)); !errors.Is(err, kube.ErrInvalidProviderID) || !strings.Contains(err.Error(), "not-an-instance") {
		t.Errorf("InstanceID of a node with a malformed providerID = %v, want a clear ErrInvalidProviderID", err)
	}

	cases := []struct {
		what string
		err  error
		want error
		says string
	}{
		{"unknown node", func() error { _, err := k.ResolveNode(ctx, "no-such-node"); return err }(), kube.ErrNodeNotFound, `"no-such-node" not found`},
		{"unknown instance", func() error { _, err := k.ResolveNode(ctx, "i-0123456789abcdef0"); return err }(), kube.ErrNodeNotFound, "i-0123456789abcdef0"},
		{"malformed providerID", func() error { _, err := k.ResolveNode(ctx, "aws:///eu-central-1a/"+id+"x"); return err }(), kube.ErrInvalidProviderID, "8 or 17"},
		{"malformed instance id", func() error { _, err := k.NodeByInstanceID(ctx, "i-12345"); return err }(), kube.ErrInvalidInstanceID, "i-12345"},
		{"fence unknown node", func() error { _, err := k.Fence(ctx, "no-such-node", "e1"); return err }(), kube.ErrNodeNotFound, "no-such-node"},
		{"invalid node name", func() error { _, err := k.Fence(ctx, "Bad Name", "e1"); return err }(), kube.ErrInvalidNodeName, "Bad Name"},
		{"invalid selector", func() error { _, err := kube.NewPodSelector("app in (web", nil); return err }(), kube.ErrInvalidSelector, "app in (web"},
		{"invalid namespace", func() error { _, err := kube.NewPodSelector("", []string{"Not_A_Namespace"}); return err }(), kube.ErrInvalidSelector, "Not_A_Namespace"},
		{"unfence unknown node", k.Unfence(ctx, "no-such-node", "e1"), kube.ErrNodeNotFound, "no-such-node"},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) || !strings.Contains(c.err.Error(), c.says) {
			t.Errorf("%s: %v; want %v mentioning %q", c.what, c.err, c.want, c.says)
		}
	}
	if after := viewOf(getNode(t, env.Client, n.Name)); !reflect.DeepEqual(after, before) {
		t.Errorf("bad input changed node %s:\nbefore %+v\nafter  %+v", n.Name, before, after)
	}
	if _, err := env.Client.CoreV1().Nodes().Get(ctx, "no-such-node", metav1.GetOptions{}); err == nil {
		t.Error("a node no-such-node exists after the calls")
	}
	if evs := nodeEvents(t, env.Client, n.Name, kube.ReasonFenced); len(evs) != 0 {
		t.Errorf("bad input recorded events: %v", evs)
	}
}

func TestNodeReadiness(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	k := kube.New(env.Client)
	id := instanceID(t)

	// Wait for a node that has not registered yet, by instance ID.
	type result struct {
		ready bool
		why   string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		r, why, err := k.WaitNodeReady(wctx, id, map[string]string{"pool": "blue"})
		done <- result{r, why, err}
	}()
	n := newNode(t, env, "late", testenv.NodeSpec{ProviderID: "aws:///us-west-2a/" + id, ReadyAfter: 2 * time.Second, Labels: map[string]string{"pool": "blue"}})
	if ready, why, err := k.NodeReady(ctx, n.Name, nil); err != nil || ready {
		t.Errorf("NodeReady of a node that turns Ready after 2s = %v %q %v, want not ready yet", ready, why, err)
	}
	r := <-done
	if r.err != nil || !r.ready {
		t.Fatalf("WaitNodeReady(%s) = %+v, want ready", id, r)
	}
	if ready, _, err := k.NodeReady(ctx, n.Name, map[string]string{"pool": "blue"}); err != nil || !ready {
		t.Errorf("NodeReady after the wait = %v %v", ready, err)
	}

	// A required label the node lacks: the bounded wait ends and says why.
	bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ready, why, err := k.WaitNodeReady(bctx, n.Name, map[string]string{"recycler.io/ready": "true"})
	if err != nil || ready || !strings.Contains(why, "recycler.io/ready=true") {
		t.Errorf("WaitNodeReady with a missing label = %v %q %v; want not ready naming the label", ready, why, err)
	}
	// A node that never gets Ready.
	never := newNode(t, env, "never", testenv.NodeSpec{NotReady: true})
	bctx2, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if ready, why, err := k.WaitNodeReady(bctx2, never.Name, nil); err != nil || ready || !strings.Contains(why, "Ready=False") {
		t.Errorf("WaitNodeReady of a never-ready node = %v %q %v", ready, why, err)
	}
	if ready, why, err := k.NodeReady(ctx, "i-0000000000000000f", nil); err != nil || ready || !strings.Contains(why, "i-0000000000000000f") {
		t.Errorf("NodeReady of an unknown instance = %v %q %v; want not ready, no error", ready, why, err)
	}
}

func bareUID(t *testing.T, cs kubernetes.Interface, ns, name string) types.UID {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.UID
}

// A selected pod finishing on its own ends the wait at once.
func TestWaitPodsChangeSeesSelectedPodFinish(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	n := newNode(t, env, "n", testenv.NodeSpec{})
	nodeReady(t, env, n.Name)
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Labels: map[string]string{"role": "job"},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: "3s"}},
		Spec: corev1.PodSpec{NodeName: n.Name, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := kube.New(env.Client)
	sel, err := kube.NewPodSelector("role=job", nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := k.PodsOnNode(ctx, n.Name, sel)
	if err != nil || len(set.Selected) != 1 {
		t.Fatalf("PodsOnNode = %+v, %v; want the job selected", set, err)
	}
	const bound = 60 * time.Second
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	cur, changed, err := k.WaitPodsChange(wctx, n.Name, sel, set)
	if err != nil || !changed || cur.Remaining() != 0 || len(cur.Ignored) != 1 || cur.Ignored[0].Why != "Succeeded" {
		t.Fatalf("WaitPodsChange = %+v changed=%v err=%v; want the job finished", cur, changed, err)
	}
	if time.Since(start) > bound/2 {
		t.Errorf("WaitPodsChange took %v: it should return when the pod finishes, not at the bound", time.Since(start))
	}
}

// The drain of issue 2 §4: a Deployment guarded by a PDB with minAvailable =
// replicas cannot be evicted (and the refusal names the PDB); once the PDB is
// relaxed, its pods move to the replacement node and become Ready. Selected pods
// are never evicted, DaemonSet pods are ignored, completed pods do not block.
func TestDrainHonoursPDBAndMovesPods(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Client
	ns := env.Namespace(t)
	pool := map[string]string{"recycler-test/pool": ns}
	oldNode := newNode(t, env, "old", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + instanceID(t), Labels: pool})
	nodeReady(t, env, oldNode.Name)

	web := webDeployment(t, cs, ns, pool)
	container := []corev1.Container{{Name: "c", Image: "nginx"}}
	_, err := cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec:       corev1.PodSpec{NodeSelector: pool, Containers: container},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bare := func(name string, labels, ann map[string]string) {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann},
			Spec:       corev1.PodSpec{NodeName: oldNode.Name, RestartPolicy: corev1.RestartPolicyNever, Containers: container},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	bare("long-job", map[string]string{"role": "job"}, nil)
	bare("done", nil, map[string]string{testenv.PodCompleteDelayAnnotation: "0s"})

	until[*appsv1.Deployment](t, 60*time.Second, cs.AppsV1().Deployments(ns), byName("web"), "web available",
		func(d *appsv1.Deployment) bool { return d.Status.AvailableReplicas == 3 })
	until[*corev1.Pod](t, 60*time.Second, cs.CoreV1().Pods(ns), byName("done"), "pod done Succeeded",
		func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	until[*corev1.Pod](t, 60*time.Second, cs.CoreV1().Pods(ns), metav1.ListOptions{}, "DaemonSet pod on the old node",
		func(p *corev1.Pod) bool { return p.Labels["app"] == "agent" && p.Spec.NodeName == oldNode.Name })

	_, err = cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web-pdb"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3)), Selector: &metav1.LabelSelector{MatchLabels: web}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until[*policyv1.PodDisruptionBudget](t, 30*time.Second, cs.PolicyV1().PodDisruptionBudgets(ns), byName("web-pdb"), "PDB observed",
		func(p *policyv1.PodDisruptionBudget) bool {
			return p.Status.ObservedGeneration == p.Generation && p.Status.ExpectedPods == 3 && p.Status.CurrentHealthy == 3
		})

	// Fence the old node, then bring up its replacement.
	k := kube.New(cs, kube.WithBackoff(kube.Backoff{Initial: 200 * time.Millisecond, Max: 2 * time.Second}))
	if _, err := k.Fence(ctx, oldNode.Name, "exec-drain"); err != nil {
		t.Fatal(err)
	}
	newID := instanceID(t)
	newNodeObj := newNode(t, env, "new", testenv.NodeSpec{ProviderID: "aws:///us-east-1b/" + newID, Labels: pool})
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if ready, why, err := k.WaitNodeReady(wctx, newID, nil); err != nil || !ready {
		t.Fatalf("replacement not ready: %s %v", why, err)
	}

	sel, err := kube.NewPodSelector("role=job", []string{ns})
	if err != nil {
		t.Fatal(err)
	}
	set, err := k.PodsOnNode(ctx, oldNode.Name, sel)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ps []kube.Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names(set.Selected); !slices.Equal(got, []string{"long-job"}) {
		t.Errorf("selected = %v, want [long-job]", got)
	}
	if len(set.Evictable) != 3 || set.Remaining() != 4 {
		t.Errorf("evictable = %v, remaining %d; want the 3 web pods, 4 remaining (the completed pod does not count)", names(set.Evictable), set.Remaining())
	}
	ignored := map[string]string{}
	for _, p := range set.Ignored {
		ignored[p.Name] = p.Why
	}
	if ignored["done"] != "Succeeded" || !slices.Contains(mapsValues(ignored), "DaemonSet") {
		t.Errorf("ignored = %v, want the completed pod and the DaemonSet pod", ignored)
	}

	before, _, err := k.WorkloadsOf(ctx, set.Evictable)
	if err != nil || len(before) != 1 || before[0].String() != "Deployment "+ns+"/web" || before[0].Available != 3 {
		t.Fatalf("WorkloadsOf the web pods = %+v, %v; want Deployment web with 3 available", before, err)
	}

	// minAvailable = replicas: every eviction is refused, naming the PDB, and nothing is evicted.
	for _, p := range set.Evictable {
		err := k.Evict(ctx, p, 0)
		var blocked *kube.EvictionBlockedError
		if !errors.As(err, &blocked) || !slices.Equal(blocked.PDBs, []string{"web-pdb"}) || blocked.RetryAfter <= 0 {
			t.Fatalf("evict %s under minAvailable=3: %v; want blocked by web-pdb with a retry delay", p, err)
		}
	}
	if again, err := k.PodsOnNode(ctx, oldNode.Name, sel); err != nil || len(again.Evictable) != 3 || len(again.Terminating()) != 0 {
		t.Fatalf("after refused evictions: %+v %v; want the 3 web pods untouched", again, err)
	}
	evs := nodeEvents(t, cs, oldNode.Name, kube.ReasonEvictionBlocked)
	if len(evs) == 0 || !strings.Contains(evs[0].Message, "web-pdb") {
		t.Errorf("no %s event naming web-pdb on the node: %v", kube.ReasonEvictionBlocked, evs)
	}

	// Relax the PDB: one pod at a time may go.
	pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web-pdb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(2))
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Update(ctx, pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Until the disruption controller has seen the change the server answers
	// "still being processed" with a 10 s Retry-After; wait for it to keep the test short.
	until[*policyv1.PodDisruptionBudget](t, 30*time.Second, cs.PolicyV1().PodDisruptionBudgets(ns), byName("web-pdb"), "relaxed PDB observed",
		func(p *policyv1.PodDisruptionBudget) bool {
			return p.Status.ObservedGeneration == p.Generation && p.Status.DisruptionsAllowed == 1
		})

	// The drain loop a caller runs: evict what may go, then wait (bounded) for a change.
	evicted := map[types.UID]kube.Pod{}
	attempts := map[types.UID]int{}
	notBefore := map[types.UID]time.Time{}
	deadline := time.Now().Add(120 * time.Second)
	jobUID := bareUID(t, cs, ns, "long-job")
	for len(set.Evictable) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("drain did not finish: %+v", set)
		}
		wait := 5 * time.Second
		for _, p := range set.Evictable {
			if p.Terminating || time.Now().Before(notBefore[p.UID]) {
				continue
			}
			err := k.Evict(ctx, p, attempts[p.UID])
			var blocked *kube.EvictionBlockedError
			switch {
			case errors.As(err, &blocked):
				attempts[p.UID]++
				notBefore[p.UID] = blocked.NotBefore
				wait = min(wait, blocked.RetryAfter)
			case err != nil:
				t.Fatal(err)
			default:
				evicted[p.UID] = p
			}
		}
		for _, p := range set.Selected {
			if p.Terminating {
				t.Fatalf("selected pod %s is terminating", p)
			}
		}
		bctx, cancel := context.WithTimeout(ctx, wait)
		set, _, err = k.WaitPodsChange(bctx, oldNode.Name, sel, set)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(evicted) != 3 {
		t.Errorf("evicted %d pods, want 3", len(evicted))
	}
	if names(set.Selected)[0] != "long-job" || set.Selected[0].UID != jobUID || set.Selected[0].Terminating {
		t.Errorf("the selected pod was touched: %+v", set.Selected)
	}
	evictedNames := map[string]bool{}
	for _, ev := range nodeEvents(t, cs, oldNode.Name, kube.ReasonEvicted) {
		if ev.Related != nil {
			evictedNames[ev.Related.Name] = true
		}
	}
	if len(evictedNames) != 3 {
		t.Errorf("%s events on the old node name pods %v, want the 3 web pods", kube.ReasonEvicted, evictedNames)
	}

	// The pods come back on the replacement node and become Ready: the wait sees it.
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	st, err := k.WaitWorkloadsReady(wctx, before)
	if err != nil || !st.Ready {
		t.Errorf("WaitWorkloadsReady = %+v, %v; want ready", st, err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		ready := slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		})
		if p.Spec.NodeName != newNodeObj.Name || !ready {
			t.Errorf("pod %s on %s ready=%v; want Ready on %s", p.Name, p.Spec.NodeName, ready, newNodeObj.Name)
		}
	}
	if live != 3 {
		t.Errorf("%d live web pods, want 3", live)
	}
}

// webDeployment creates Deployment web (3 replicas, 5 s grace) on the pool's
// nodes and returns its pod labels.
func webDeployment(t *testing.T, cs kubernetes.Interface, ns string, pool map[string]string) map[string]string {
	t.Helper()
	web := map[string]string{"app": "web"}
	_, err := cs.AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: web},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: web},
				Spec: corev1.PodSpec{NodeSelector: pool, Containers: []corev1.Container{{Name: "c", Image: "nginx"}},
					TerminationGracePeriodSeconds: ptr.To[int64](5)},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return web
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// WorkloadsReady names what is not back yet.
func TestWorkloadsReadyNamesWhatIsNotAvailable(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	// No node can run it: the Deployment stays unavailable.
	_, err := env.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "stuck"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "stuck"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "stuck"}},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"recycler-test/none": ns},
					Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := until[*appsv1.ReplicaSet](t, 30*time.Second, env.Client.AppsV1().ReplicaSets(ns), metav1.ListOptions{}, "a ReplicaSet for stuck",
		func(*appsv1.ReplicaSet) bool { return true })
	k := kube.New(env.Client)
	until[*appsv1.Deployment](t, 30*time.Second, env.Client.AppsV1().Deployments(ns), byName("stuck"), "stuck observed",
		func(d *appsv1.Deployment) bool { return d.Status.ObservedGeneration == d.Generation })
	// Recorded while it was healthy (as a drain records it): 2 of 2 available.
	before := []kube.Workload{{Kind: "Deployment", Namespace: ns, Name: "stuck", Desired: 2, Available: 2}}
	ws, unchecked, err := k.WorkloadsOf(ctx, []kube.Pod{
		{Namespace: ns, Name: "stuck-x", Class: kube.Evictable, Owner: &kube.Owner{Kind: "ReplicaSet", Name: rs.Name}},
		{Namespace: ns, Name: "bare", Class: kube.Evictable},
	})
	if err != nil || len(ws) != 1 || ws[0].String() != before[0].String() || len(unchecked) != 1 {
		t.Fatalf("WorkloadsOf = %+v, %q, %v; want Deployment stuck and the bare pod unchecked", ws, unchecked, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := k.WaitWorkloadsReady(wctx, before)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || len(st.NotReady) != 1 || !strings.Contains(st.NotReady[0], "Deployment "+ns+"/stuck: 0 of 2 replicas available (2 before the drain)") {
		t.Errorf("WaitWorkloadsReady = %+v; want Deployment stuck not ready", st)
	}
}

// BenchmarkWaitPodsChangeLatency measures how soon WaitPodsChange returns after
// a pod leaves the node (the watch's reaction time), over a fixed number of
// rounds so that -benchtime 1x gives a meaningful figure.
func BenchmarkWaitPodsChangeLatency(b *testing.B) {
	env := testenv.Shared(b)
	ctx := context.Background()
	ns := env.Namespace(b)
	n, err := env.CreateNode(ctx, testenv.NodeSpec{Name: "bench-" + ns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.DeleteNode(context.Background(), n.Name) })
	k := kube.New(env.Client)
	const rounds = 10
	var total, worst time.Duration
	for b.Loop() {
		total, worst = 0, 0
		for i := range rounds {
			name := fmt.Sprintf("p-%d", i)
			_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			set, err := k.PodsOnNode(ctx, n.Name, kube.PodSelector{})
			if err != nil || set.Remaining() != 1 {
				b.Fatalf("PodsOnNode = %+v, %v", set, err)
			}
			type res struct {
				at      time.Time
				changed bool
				err     error
			}
			done := make(chan res, 1)
			go func() {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				_, changed, err := k.WaitPodsChange(wctx, n.Name, kube.PodSelector{}, set)
				done <- res{time.Now(), changed, err}
			}()
			start := time.Now()
			if err := env.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
				b.Fatal(err)
			}
			r := <-done
			if r.err != nil || !r.changed {
				b.Fatalf("WaitPodsChange: changed=%v err=%v", r.changed, r.err)
			}
			d := r.at.Sub(start)
			total += d
			worst = max(worst, d)
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/rounds, "ms/change")
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
}

// ForceDelete keeps a grace period (capped, at least 1 s), never touches a
// replacement with the same name, and is idempotent.
func TestForceDeleteCapsGraceAndSparesReplacement(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	ns := env.Namespace(t)
	n := newNode(t, env, "n", testenv.NodeSpec{})
	nodeReady(t, env, n.Name)
	create := func(name string) *corev1.Pod {
		p, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{testenv.PodDeleteDelayAnnotation: "20s"}},
			Spec: corev1.PodSpec{NodeName: n.Name, TerminationGracePeriodSeconds: ptr.To[int64](300),
				Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	k := kube.New(env.Client)
	stale := kube.Classify(create("stale"), kube.PodSelector{})
	stale.UID = "00000000-0000-0000-0000-000000000000" // a pod that was replaced
	if err := k.ForceDelete(ctx, stale, 5*time.Second); err != nil {
		t.Fatalf("ForceDelete of a replaced pod = %v, want nil (done)", err)
	}
	if p, err := env.Client.CoreV1().Pods(ns).Get(ctx, "stale", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("the pod with the same name but another UID was deleted: %v %v", p.DeletionTimestamp, err)
	}

	victim := kube.Classify(create("victim"), kube.PodSelector{})
	if err := k.ForceDelete(ctx, victim, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p, err := env.Client.CoreV1().Pods(ns).Get(ctx, "victim", metav1.GetOptions{})
	if err != nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 5 {
		t.Fatalf("victim after ForceDelete: grace %v err %v; want deleting with grace 5 (capped from 300)", p.DeletionGracePeriodSeconds, err)
	}
	if err := k.ForceDelete(ctx, victim, 5*time.Second); err != nil {
		t.Fatalf("second ForceDelete = %v, want nil", err)
	}
	if evs := nodeEvents(t, env.Client, n.Name, kube.ReasonForceDeleted); len(evs) == 0 || !strings.Contains(evs[0].Message, "victim") {
		t.Errorf("no %s event naming the pod: %v", kube.ReasonForceDeleted, evs)
	}
}

// DeleteNode deletes only a node Recycler fenced, and is idempotent.
func TestDeleteNodeOnlyFencedNodes(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	n := newNode(t, env, "n", testenv.NodeSpec{})
	k := kube.New(env.Client)
	if err := k.DeleteNode(ctx, n.Name); !errors.Is(err, kube.ErrNotFenced) {
		t.Fatalf("DeleteNode of an unfenced node = %v, want ErrNotFenced", err)
	}
	if _, err := env.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("unfenced node was deleted: %v", err)
	}
	if _, err := k.Fence(ctx, n.Name, "exec-retire"); err != nil {
		t.Fatal(err)
	}
	if err := k.DeleteNode(ctx, n.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err == nil {
		t.Fatal("fenced node still exists after DeleteNode")
	}
	if err := k.DeleteNode(ctx, n.Name); err != nil {
		t.Fatalf("second DeleteNode = %v, want nil", err)
	}
}

// An eviction the API server granted but never carried out: it decrements the
// budget and records the pod in status.disruptedPods before it deletes the pod,
// and the delete can fail after that — when the evicting process dies mid-request
// (the crash test's SIGKILL mid-Drain), or, reproducibly, when the delete's UID
// precondition does not match. The disruption controller then counts the pod as
// gone for 2 minutes, so every eviction of it is refused: a resumed drain sat
// blocked by the budget for minutes. Evict completes such a granted eviction,
// unless the budget no longer allows it.
func TestEvictCompletesAnEvictionTheBudgetAlreadyGranted(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Client
	ns := env.Namespace(t)
	pool := map[string]string{"recycler-test/pool": ns}
	node := newNode(t, env, "old", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + instanceID(t), Labels: pool})
	nodeReady(t, env, node.Name)
	web := webDeployment(t, cs, ns, pool)
	until[*appsv1.Deployment](t, 60*time.Second, cs.AppsV1().Deployments(ns), byName("web"), "web available",
		func(d *appsv1.Deployment) bool { return d.Status.AvailableReplicas == 3 })
	_, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: web}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	observed := func(what string, cond func(*policyv1.PodDisruptionBudget) bool) *policyv1.PodDisruptionBudget {
		return until[*policyv1.PodDisruptionBudget](t, 30*time.Second, cs.PolicyV1().PodDisruptionBudgets(ns), byName("web"), what,
			func(p *policyv1.PodDisruptionBudget) bool {
				return p.Status.ObservedGeneration == p.Generation && cond(p)
			})
	}
	observed("budget allows one disruption", func(p *policyv1.PodDisruptionBudget) bool { return p.Status.DisruptionsAllowed == 1 })
	sel, err := kube.NewPodSelector("", nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kube.New(cs)
	set, err := k.PodsOnNode(ctx, node.Name, sel)
	if err != nil || len(set.Evictable) != 3 {
		t.Fatalf("pods on %s: %+v %v; want the 3 web pods", node.Name, set, err)
	}
	victim, other := set.Evictable[0], set.Evictable[1]

	// The server grants the disruption, then its delete fails (409): the pod stays.
	wrong := types.UID("not-" + string(victim.UID))
	err = cs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Namespace: ns, Name: victim.Name},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrong}},
	})
	if !apierrors.IsConflict(err) {
		t.Fatalf("eviction with a stale UID: %v; want 409 Conflict after the budget was decremented", err)
	}
	held := observed("budget holding the victim", func(p *policyv1.PodDisruptionBudget) bool {
		_, ok := p.Status.DisruptedPods[victim.Name]
		return ok && p.Status.DisruptionsAllowed == 0
	})
	// Judge the grant's age on a clock stopped at the grant, so a slow machine cannot age it.
	k = kube.New(cs, kube.WithClock(testingclock.NewFakeClock(held.Status.DisruptedPods[victim.Name].Time)))

	// Not for another pod: the budget has no disruption left for it.
	var blocked *kube.EvictionBlockedError
	if err := k.Evict(ctx, other, 0); !errors.As(err, &blocked) {
		t.Fatalf("evict %s while the budget holds %s: %v; want blocked", other, victim, err)
	}
	// Not when the budget, counting the victim as gone already, is short meanwhile.
	tighten := func(n int32) {
		t.Helper()
		p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Spec.MinAvailable = ptr.To(intstr.FromInt32(n))
		if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		observed(fmt.Sprintf("minAvailable %d", n), func(p *policyv1.PodDisruptionBudget) bool {
			_, ok := p.Status.DisruptedPods[victim.Name]
			return ok && p.Status.DesiredHealthy == n
		})
	}
	tighten(3)
	if err := k.Evict(ctx, victim, 0); !errors.As(err, &blocked) {
		t.Fatalf("evict %s under minAvailable 3 with 2 healthy: %v; want blocked", victim, err)
	}
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("victim after a refused completion: %v, deleting %v; want untouched", err, p.DeletionTimestamp)
	}
	// The budget allows it again: the granted eviction is carried out now, not 2 minutes later.
	tighten(2)
	if err := k.Evict(ctx, victim, 0); err != nil {
		t.Fatalf("evict %s, whose disruption the budget granted: %v; want it evicted", victim, err)
	}
	p, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
	if err == nil && p.DeletionTimestamp == nil {
		t.Fatalf("victim %s not deleted after Evict returned nil", victim)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if evs := nodeEvents(t, cs, node.Name, kube.ReasonEvicted); len(evs) == 0 {
		t.Errorf("no %s event for the completed eviction", kube.ReasonEvicted)
	}
}
