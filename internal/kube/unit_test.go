package kube

// Edge cases that the real control plane cannot produce on demand (a 410 on a
// watch, a budget refusal with a given Retry-After) run against the fake
// clientset here; everything else is tested on the real control plane in
// kube_test.go.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func TestParseProviderID(t *testing.T) {
	good := map[string]ProviderID{
		"aws:///us-east-1a/i-0123456789abcdef0":       {"us-east-1a", "i-0123456789abcdef0"},
		"aws:///ap-southeast-1b/i-01234567":           {"ap-southeast-1b", "i-01234567"},
		"aws:///us-west-2-lax-1a/i-0123456789abcdef0": {"us-west-2-lax-1a", "i-0123456789abcdef0"},
	}
	for in, want := range good {
		got, err := ParseProviderID(in)
		if err != nil || got != want {
			t.Errorf("ParseProviderID(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("String() = %q, want %q", got.String(), in)
		}
	}
	bad := []string{
		"", "i-0123456789abcdef0", "aws://us-east-1a/i-0123456789abcdef0", "aws:////i-0123456789abcdef0",
		"aws:///us-east-1a/i-0123456789ABCDEF0", "aws:///us-east-1a/i-012345678", "aws:///us-east-1a/i-0123456789abcdef",
		"aws:///us-east-1a/i-0123456789abcdef0/", "aws:///US-EAST-1A/i-0123456789abcdef0", "gce:///us-east-1a/i-01234567",
		" aws:///us-east-1a/i-01234567", "aws:///us-east-1a/x-01234567", "aws:///us-east-1a/extra/i-01234567",
	}
	for _, in := range bad {
		_, err := ParseProviderID(in)
		var pe *ProviderIDError
		if !errors.Is(err, ErrInvalidProviderID) || !errors.As(err, &pe) || pe.Value != in {
			t.Errorf("ParseProviderID(%q) = %v; want a *ProviderIDError", in, err)
		}
		if err != nil && !strings.Contains(err.Error(), "aws:///<availability-zone>/<instance-id>") {
			t.Errorf("error %q does not show the expected format", err)
		}
	}
}

func TestBackoffDelayGrowsIsCappedAndNeverZero(t *testing.T) {
	b := Backoff{Initial: 5 * time.Second, Max: time.Minute}
	wantCeil := []time.Duration{5, 10, 20, 40, 60, 60, 60}
	for attempt, ceil := range wantCeil {
		ceil *= time.Second
		lo, hi := b.Delay(attempt, 0), b.Delay(attempt, 0.999999)
		if lo != ceil/2 || hi >= ceil || hi < lo {
			t.Errorf("attempt %d: delay in [%v, %v], want [%v, %v)", attempt, lo, hi, ceil/2, ceil)
		}
	}
	if d := (Backoff{}).Delay(0, 0); d <= 0 {
		t.Errorf("zero Backoff gives delay %v; a zero delay would busy-loop", d)
	}
	if d := b.Delay(1000, 0.5); d != 45*time.Second {
		t.Errorf("huge attempt: %v, want 45s (capped, no overflow)", d)
	}
}

func TestPodSelectorSemantics(t *testing.T) {
	pod := func(ns string, l map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: l}}
	}
	web := pod("apps", map[string]string{"app": "web"})
	job := pod("batch", map[string]string{"app": "job"})
	cases := []struct {
		sel     string
		ns      []string
		web, jb bool
	}{
		{"", nil, false, false},
		{"", []string{"batch"}, false, true},
		{"app=web", nil, true, false},
		{"app in (web,job)", []string{"batch"}, false, true},
		{"app", nil, true, true},
	}
	for _, c := range cases {
		s, err := NewPodSelector(c.sel, c.ns)
		if err != nil {
			t.Fatalf("NewPodSelector(%q, %v): %v", c.sel, c.ns, err)
		}
		if s.Matches(web) != c.web || s.Matches(job) != c.jb {
			t.Errorf("selector %q ns %v: web %v job %v, want %v %v", c.sel, c.ns, s.Matches(web), s.Matches(job), c.web, c.jb)
		}
	}
	for _, in := range []struct {
		sel string
		ns  []string
	}{{"app=a b", nil}, {"app in (", nil}, {"", []string{"Bad_NS"}}, {"", []string{""}}} {
		_, err := NewPodSelector(in.sel, in.ns)
		if !errors.Is(err, ErrInvalidSelector) {
			t.Errorf("NewPodSelector(%q, %q) = %v, want ErrInvalidSelector", in.sel, in.ns, err)
		}
	}
}

func TestClassify(t *testing.T) {
	sel, _ := NewPodSelector("app=job", nil)
	ctl := func(kind string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "x", UID: "u", Controller: ptr.To(true)}}
	}
	now := metav1.Now()
	cases := []struct {
		name  string
		pod   corev1.Pod
		class Class
		why   string
		term  bool
	}{
		{"daemonset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: ctl("DaemonSet"), Labels: map[string]string{"app": "job"}}}, Ignored, "DaemonSet", false},
		{"mirror", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}}}, Ignored, "mirror", false},
		{"succeeded selected", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "job"}}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, Ignored, "Succeeded", false},
		{"failed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, Ignored, "Failed", false},
		{"selected", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "job"}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, Selected, "", false},
		{"replicaset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: ctl("ReplicaSet")}}, Evictable, "", false},
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, Evictable, "", true},
		// Other tools' "leave this pod alone" annotations make a pod waited for, like a selected one.
		{"karpenter do-not-disrupt", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: ctl("ReplicaSet"), Annotations: map[string]string{AnnotationDoNotDisrupt: "true"}}},
			Selected, "karpenter.sh/do-not-disrupt=true", false},
		{"autoscaler safe-to-evict false", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationSafeToEvict: "false"}}},
			Selected, "cluster-autoscaler.kubernetes.io/safe-to-evict=false", false},
		{"autoscaler safe-to-evict true", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationSafeToEvict: "true"}}}, Evictable, "", false},
		{"do-not-disrupt daemonset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: ctl("DaemonSet"), Annotations: map[string]string{AnnotationDoNotDisrupt: "true"}}}, Ignored, "DaemonSet", false},
	}
	for _, c := range cases {
		got := Classify(&c.pod, sel)
		if got.Class != c.class || got.Why != c.why || got.Terminating != c.term {
			t.Errorf("%s: got %s/%q terminating=%v, want %s/%q %v", c.name, got.Class, got.Why, got.Terminating, c.class, c.why, c.term)
		}
	}
}

type fakeRecorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *fakeRecorder) Record(_ context.Context, e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func runningPod(ns, name string, l map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: l},
		Spec:       corev1.PodSpec{NodeName: "n1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func TestEvictBlockedNamesBudgetAndBacksOff(t *testing.T) {
	pod := runningPod("shop", "web-1", map[string]string{"app": "web"})
	pdb := func(name string, l map[string]string) *policyv1.PodDisruptionBudget {
		return &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt(3)), Selector: &metav1.LabelSelector{MatchLabels: l}},
		}
	}
	cs := fake.NewClientset(pod, pdb("web-pdb", map[string]string{"app": "web"}), pdb("db-pdb", map[string]string{"app": "db"}))
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget web-pdb needs 3 healthy pods and has 3 currently"}}
		return true, nil, err
	})
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	rec := &fakeRecorder{}
	c := New(cs, WithClock(clk), WithRand(func() float64 { return 0.5 }), WithRecorder(rec),
		WithBackoff(Backoff{Initial: 4 * time.Second, Max: time.Minute}))
	p := Classify(pod, PodSelector{})

	for attempt, want := range []time.Duration{3 * time.Second, 6 * time.Second, 12 * time.Second} {
		err := c.Evict(context.Background(), p, attempt)
		var blocked *EvictionBlockedError
		if !errors.As(err, &blocked) || !errors.Is(err, ErrEvictionBlocked) {
			t.Fatalf("attempt %d: Evict = %v, want *EvictionBlockedError", attempt, err)
		}
		if len(blocked.PDBs) != 1 || blocked.PDBs[0] != "web-pdb" {
			t.Errorf("blocking PDBs = %v, want [web-pdb]", blocked.PDBs)
		}
		if blocked.RetryAfter != want || !blocked.NotBefore.Equal(clk.Now().Add(want)) {
			t.Errorf("attempt %d: retry after %v at %v, want %v", attempt, blocked.RetryAfter, blocked.NotBefore, want)
		}
		if !strings.Contains(err.Error(), "web-pdb") || !strings.Contains(err.Error(), "shop/web-1") {
			t.Errorf("error does not name pod and budget: %v", err)
		}
	}
	if len(rec.events) != 3 || rec.events[0].Reason != ReasonEvictionBlocked || !strings.Contains(rec.events[0].Note, "web-pdb") {
		t.Errorf("events = %+v, want 3 EvictionBlocked naming web-pdb", rec.events)
	}
}

func TestEvictServerRetryAfterIsAFloor(t *testing.T) {
	pod := runningPod("shop", "web-1", nil)
	cs := fake.NewClientset(pod)
	cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
		err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget web-pdb is still being processed by the server."}}
		return true, nil, err
	})
	c := New(cs, WithRand(func() float64 { return 0 }), WithRecorder(&fakeRecorder{}), WithBackoff(Backoff{Initial: time.Second, Max: time.Minute}))
	var blocked *EvictionBlockedError
	if err := c.Evict(context.Background(), Classify(pod, PodSelector{}), 0); !errors.As(err, &blocked) || blocked.RetryAfter != 10*time.Second {
		t.Fatalf("Evict = %v; want blocked with the server's 10s", err)
	}
	if !slices.Equal(blocked.PDBs, []string{"web-pdb"}) {
		t.Errorf("PDBs = %v, want web-pdb from the server's message", blocked.PDBs)
	}
}

// API throttling (429 without a budget cause) is not reported as a PDB block.
func TestEvictThrottlingIsNotABudget(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewTooManyRequests("Too many requests, please try again later.", 1)
	})
	err := New(cs, WithRecorder(&fakeRecorder{})).Evict(context.Background(), Pod{Namespace: "a", Name: "b", UID: "u"}, 0)
	if err == nil || errors.Is(err, ErrEvictionBlocked) {
		t.Fatalf("Evict under throttling = %v; want a plain error", err)
	}
}

func TestEvictGoneOrReplacedIsDone(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	for _, apiErr := range []error{apierrors.NewNotFound(gr, "web-1"), apierrors.NewConflict(gr, "web-1", errors.New("precondition failed: UID"))} {
		cs := fake.NewClientset()
		cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, apiErr })
		rec := &fakeRecorder{}
		c := New(cs, WithRecorder(rec))
		if err := c.Evict(context.Background(), Pod{Namespace: "shop", Name: "web-1", UID: "u"}, 0); err != nil {
			t.Errorf("Evict with %v = %v, want nil (done)", apiErr, err)
		}
	}
}

func TestEvictSendsUIDPrecondition(t *testing.T) {
	cs := fake.NewClientset()
	var got *policyv1.Eviction
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		got = a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		return true, nil, nil
	})
	c := New(cs, WithRecorder(&fakeRecorder{}))
	if err := c.Evict(context.Background(), Pod{Namespace: "shop", Name: "web-1", UID: "the-uid"}, 0); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.DeleteOptions.Preconditions == nil || *got.DeleteOptions.Preconditions.UID != "the-uid" {
		t.Fatalf("eviction sent %+v, want UID precondition the-uid", got)
	}
}

func TestForceDeleteGraceIsCappedAndAtLeastOneSecond(t *testing.T) {
	cases := []struct {
		podGrace int64
		limit    time.Duration
		want     int64
	}{{30, 10 * time.Second, 10}, {5, 10 * time.Second, 5}, {0, 10 * time.Second, 1}, {30, 0, 1}, {30, 500 * time.Millisecond, 1}}
	for _, c := range cases {
		cs := fake.NewClientset()
		var grace int64 = -1
		cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			opts := a.(k8stesting.DeleteAction).GetDeleteOptions()
			grace = *opts.GracePeriodSeconds
			if opts.Preconditions == nil || *opts.Preconditions.UID != "u" {
				t.Errorf("delete without UID precondition: %+v", opts)
			}
			return true, nil, nil
		})
		k := New(cs, WithRecorder(&fakeRecorder{}))
		if err := k.ForceDelete(context.Background(), Pod{Namespace: "a", Name: "b", UID: "u", GracePeriodSeconds: c.podGrace}, c.limit); err != nil {
			t.Fatal(err)
		}
		if grace != c.want {
			t.Errorf("pod grace %d, cap %v: deleted with grace %d, want %d", c.podGrace, c.limit, grace, c.want)
		}
	}
}

// A watch whose resourceVersion has expired (410 Gone, as an error event or
// as the Watch call's error) is recovered by re-listing, not reported.
func TestWaitPodsChangeRelistsAfterGone(t *testing.T) {
	for _, mode := range []string{"error event", "watch call"} {
		t.Run(mode, func(t *testing.T) {
			a, b := runningPod("x", "a", nil), runningPod("x", "b", nil)
			cs := fake.NewClientset(a, b)
			c := New(cs, WithRecorder(&fakeRecorder{}))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			first, changed, err := c.WaitPodsChange(ctx, "n1", PodSelector{}, PodSet{})
			if err != nil || !changed || first.Remaining() != 2 {
				t.Fatalf("first call: %+v %v %v; want the 2 pods at once", first, changed, err)
			}
			first.ResourceVersion = "1" // pretend an old list
			watches := 0
			cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
				watches++
				gone := apierrors.NewResourceExpired("too old resource version")
				if mode == "watch call" && watches == 1 {
					return true, nil, gone
				}
				w := watch.NewFakeWithChanSize(1, false)
				if watches == 1 {
					w.Error(&gone.ErrStatus)
				}
				return true, w, nil
			})
			// Meanwhile pod b went away: only a re-list can tell.
			if err := cs.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), "x", "b"); err != nil {
				t.Fatal(err)
			}
			cur, changed, err := c.WaitPodsChange(ctx, "n1", PodSelector{}, first)
			if err != nil || !changed || cur.Remaining() != 1 || cur.Evictable[0].Name != "a" {
				t.Fatalf("after 410: %+v changed=%v err=%v; want only pod a", cur, changed, err)
			}
		})
	}
}

func TestWaitPodsChangeReturnsNotYetWhenBoundEnds(t *testing.T) {
	cs := fake.NewClientset(runningPod("x", "a", nil))
	c := New(cs, WithRecorder(&fakeRecorder{}))
	set, err := c.PodsOnNode(context.Background(), "n1", PodSelector{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cur, changed, err := c.WaitPodsChange(ctx, "n1", PodSelector{}, set)
	if err != nil || changed || cur.Remaining() != 1 {
		t.Fatalf("got %+v changed=%v err=%v; want not yet, same pod", cur, changed, err)
	}
}

func TestWorkloadsComparedWithTheirAvailabilityBefore(t *testing.T) {
	ctl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: "u", Controller: ptr.To(true)}}
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "db", Generation: 2},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)}, Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, AvailableReplicas: 3}}
	degraded := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "cache", Generation: 1},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)}, Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, AvailableReplicas: 1}}
	objs := []runtime.Object{sts, degraded,
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "solo", Generation: 1},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](2)}, Status: appsv1.ReplicaSetStatus{ObservedGeneration: 1, AvailableReplicas: 2}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-1", OwnerReferences: ctl("Deployment", "web")},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](1)}, Status: appsv1.ReplicaSetStatus{AvailableReplicas: 1}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", Generation: 5},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)}, Status: appsv1.DeploymentStatus{ObservedGeneration: 5, AvailableReplicas: 1}},
	}
	cs := fake.NewClientset(objs...)
	c := New(cs, WithRecorder(&fakeRecorder{}))
	ctx := context.Background()
	pod := func(kind, name string) Pod {
		return Pod{Namespace: "a", Name: name + "-x", Class: Evictable, Owner: &Owner{Kind: kind, Name: name}}
	}
	before, unchecked, err := c.WorkloadsOf(ctx, []Pod{
		pod("StatefulSet", "db"), pod("StatefulSet", "db"), pod("StatefulSet", "cache"), pod("ReplicaSet", "solo"), pod("ReplicaSet", "web-1"),
		pod("Job", "batch"), pod("ReplicaSet", "gone"), {Namespace: "a", Name: "bare", Class: Evictable},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range before {
		got = append(got, fmt.Sprintf("%s %d/%d", w, w.Available, w.Desired))
	}
	want := []string{"Deployment a/web 1/1", "ReplicaSet a/solo 2/2", "StatefulSet a/cache 1/3", "StatefulSet a/db 3/3"}
	if !slices.Equal(got, want) || !slices.Equal(unchecked, []string{"Job a/batch", "pod a/bare has no controller"}) {
		t.Fatalf("WorkloadsOf = %q, unchecked %q; want %q and the Job and bare pod unchecked", got, unchecked, want)
	}
	// During the drain: db loses a replica, cache stays as degraded as it was, web gets a new generation.
	sts.Status.AvailableReplicas = 2
	if _, err := cs.AppsV1().StatefulSets("a").UpdateStatus(ctx, sts, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dep, _ := cs.AppsV1().Deployments("a").Get(ctx, "web", metav1.GetOptions{})
	dep.Generation = 6
	if _, err := cs.AppsV1().Deployments("a").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := c.WorkloadsReady(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	wantNot := []string{
		"Deployment a/web: controller has not yet observed generation 6",
		"StatefulSet a/db: 2 of 3 replicas available (3 before the drain)",
	}
	if st.Ready || !slices.Equal(st.NotReady, wantNot) {
		t.Errorf("WorkloadsReady = %+v\nwant not ready %q (cache was degraded before: not held against the drain)", st, wantNot)
	}
}
