// Package invariant watches a recycle from the outside and measures the zero-downtime
// invariants of DESIGN.md §6 continuously, not only at the end: the demo prints its
// report and the end-to-end tests assert it.
package invariant

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// Groups is what the sampler reads from the cloud (a Describer of its own, so its
// calls are not counted with the recycle's).
type Groups interface {
	Group(ctx context.Context, name string) (cloud.Group, error)
}

// Watch describes what to watch: the group, the node being recycled and the pods a
// user asked to wait for (with their deadline).
type Watch struct {
	Group       string
	OldNode     string
	Selector    labels.Selector // selected pods; nil = none
	Namespaces  []string        // of selected pods; empty = all
	MaxWait     time.Duration   // deadline for selected pods, from the drain's start (see DrainStarted)
	Interval    time.Duration   // group sampling interval; default 200ms
	ReadyLabels map[string]string
}

// Sampler records observations until Stop.
type Sampler struct {
	cs    kubernetes.Interface
	cloud Groups
	clk   clock.PassiveClock
	w     Watch

	mu          sync.Mutex
	start       time.Time
	samples     int
	minReadyGap int    // min over samples of (Ready group nodes − desired at start)
	minGapWhen  string // what the group looked like then
	desired0    int32
	firstLeave  time.Time // first non-DaemonSet pod on the old node deleted
	firstLeaveP string
	replReady   time.Time // first Ready node of the group that was not there at Start
	kills       []kill    // selected pods deleted while running, judged against the deadline at Stop
	drainStart  time.Time // when the drain began (DrainStarted); zero: it never did
	pdbBreaches []string
	initialNode map[string]bool
	errs        []string       // distinct sampling errors, in order
	errCount    map[string]int // how often each occurred

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// kill is a selected pod deleted or evicted while it still ran.
type kill struct {
	pod string
	at  time.Time
}

// Start begins sampling; call Stop to end it and get the report.
func Start(ctx context.Context, cs kubernetes.Interface, groups Groups, clk clock.PassiveClock, w Watch) (*Sampler, error) {
	if w.Interval <= 0 {
		w.Interval = 200 * time.Millisecond
	}
	s := &Sampler{cs: cs, cloud: groups, clk: clk, w: w, start: clk.Now(), minReadyGap: 1 << 30, initialNode: map[string]bool{}, errCount: map[string]int{}}
	g, err := groups.Group(ctx, w.Group)
	if err != nil {
		return nil, fmt.Errorf("sampler: describe group %s: %w", w.Group, err)
	}
	s.desired0 = g.Desired
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("sampler: list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		s.initialNode[n.Name] = true
	}
	pdbs, err := cs.PolicyV1().PodDisruptionBudgets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("sampler: list PDBs: %w", err)
	}
	for i := range pdbs.Items {
		s.checkPDB(&pdbs.Items[i])
	}
	ctx, s.cancel = context.WithCancel(ctx)
	// Retry watchers resume from the last version seen when a stream ends or the
	// apiserver is briefly gone (a restart), so the sampler never goes blind.
	podW, err := retryWatch(ctx, nodes.ResourceVersion, cs.CoreV1().Pods("").Watch)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("sampler: watch pods: %w", err)
	}
	pdbW, err := retryWatch(ctx, pdbs.ResourceVersion, cs.PolicyV1().PodDisruptionBudgets("").Watch)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("sampler: watch PDBs: %w", err)
	}
	nodeW, err := retryWatch(ctx, nodes.ResourceVersion, cs.CoreV1().Nodes().Watch)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("sampler: watch nodes: %w", err)
	}
	s.done.Add(4)
	go s.pods(podW)
	go s.pdbs(pdbW)
	go s.nodes(nodeW)
	go s.group(ctx)
	return s, nil
}

func retryWatch(ctx context.Context, rv string, w cache.WatchFuncWithContext) (watch.Interface, error) {
	return watchtools.NewRetryWatcherWithContext(ctx, rv, &cache.ListWatch{WatchFuncWithContext: w})
}

// events yields the watch's object events until it ends, noting an error event (a
// retry watcher gives up only on one, e.g. 410 Gone or 403) so a blind sampler is seen.
func (s *Sampler) events(what string, w watch.Interface) func(yield func(watch.Event) bool) {
	return func(yield func(watch.Event) bool) {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				s.note("watch %s: %v", what, apierrors.FromObject(ev.Object))
				continue
			}
			if !yield(ev) {
				return
			}
		}
	}
}

func (s *Sampler) pods(w watch.Interface) {
	defer s.done.Done()
	for ev := range s.events("pods", w) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || (ev.Type != watch.Deleted && p.DeletionTimestamp == nil) {
			continue
		}
		s.mu.Lock()
		now := s.clk.Now()
		if p.Spec.NodeName == s.w.OldNode && !daemon(p) && s.firstLeave.IsZero() {
			s.firstLeave, s.firstLeaveP = now, p.Namespace+"/"+p.Name
		}
		finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		name := p.Namespace + "/" + p.Name
		if s.selected(p) && !finished && !slices.ContainsFunc(s.kills, func(k kill) bool { return k.pod == name }) {
			s.kills = append(s.kills, kill{name, now})
		}
		s.mu.Unlock()
	}
}

// nodes notes, to the millisecond, when the first new node turns Ready (sampling the
// group every Interval would see it up to Interval late).
func (s *Sampler) nodes(w watch.Interface) {
	defer s.done.Done()
	for ev := range s.events("nodes", w) {
		n, ok := ev.Object.(*corev1.Node)
		if !ok || ev.Type == watch.Deleted || s.initialNode[n.Name] {
			continue
		}
		if ready, _ := kube.NodeIsReady(n, s.w.ReadyLabels); ready {
			s.mu.Lock()
			if s.replReady.IsZero() {
				s.replReady = s.clk.Now()
			}
			s.mu.Unlock()
		}
	}
}

// DrainStarted tells the sampler when the drain began (the recycle records it in
// its state, drain.startedAt): a selected pod's deadline is MaxWait from then.
// Without it, no deadline has begun, and every selected pod killed is early.
func (s *Sampler) DrainStarted(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainStart = at
}

// earlyKills names the selected pods killed before their deadline.
func (s *Sampler) earlyKills() []string {
	var out []string
	for _, k := range s.kills {
		switch {
		case s.drainStart.IsZero():
			out = append(out, k.pod+" (before the drain started)")
		case k.at.Before(s.drainStart.Add(s.w.MaxWait)):
			out = append(out, fmt.Sprintf("%s at +%s of the drain", k.pod, k.at.Sub(s.drainStart).Truncate(time.Millisecond)))
		}
	}
	return out
}

func (s *Sampler) selected(p *corev1.Pod) bool {
	if s.w.Selector == nil || daemon(p) {
		return false
	}
	if len(s.w.Namespaces) > 0 && !slices.Contains(s.w.Namespaces, p.Namespace) {
		return false
	}
	return s.w.Selector.Matches(labels.Set(p.Labels))
}

func daemon(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}

func (s *Sampler) pdbs(w watch.Interface) {
	defer s.done.Done()
	for ev := range s.events("PDBs", w) {
		if pdb, ok := ev.Object.(*policyv1.PodDisruptionBudget); ok {
			s.checkPDB(pdb)
		}
	}
}

func (s *Sampler) checkPDB(pdb *policyv1.PodDisruptionBudget) {
	if pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.ExpectedPods == 0 {
		return
	}
	if pdb.Status.CurrentHealthy < pdb.Status.DesiredHealthy {
		s.mu.Lock()
		s.pdbBreaches = append(s.pdbBreaches, fmt.Sprintf("%s/%s healthy %d < %d at +%s", pdb.Namespace, pdb.Name,
			pdb.Status.CurrentHealthy, pdb.Status.DesiredHealthy, s.clk.Since(s.start).Truncate(time.Millisecond)))
		s.mu.Unlock()
	}
}

// group samples the group's Ready nodes against the desired count at the start.
func (s *Sampler) group(ctx context.Context) {
	defer s.done.Done()
	t := time.NewTicker(s.w.Interval)
	defer t.Stop()
	for {
		s.sampleGroup(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sampleGroup(ctx context.Context) {
	g, err := s.cloud.Group(ctx, s.w.Group)
	if err != nil {
		if ctx.Err() == nil {
			s.note("describe group: %v", err)
		}
		return
	}
	nodes, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		if ctx.Err() == nil {
			s.note("list nodes: %v", err)
		}
		return
	}
	members := map[string]bool{}
	for _, in := range g.Instances {
		members[in.ID] = true
	}
	ready := 0
	for i := range nodes.Items {
		n := &nodes.Items[i]
		id, err := kube.InstanceID(n)
		if err != nil || !members[id] {
			continue
		}
		if ok, _ := kube.NodeIsReady(n, nil); ok {
			ready++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	if gap := ready - int(s.desired0); gap < s.minReadyGap {
		s.minReadyGap = gap
		s.minGapWhen = fmt.Sprintf("%d Ready of desired %d at +%s", ready, s.desired0, s.clk.Since(s.start).Truncate(time.Millisecond))
	}
}

func (s *Sampler) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if s.errCount[msg] == 0 && len(s.errs) < 10 {
		s.errs = append(s.errs, msg)
	}
	s.errCount[msg]++
}

// Check is one invariant with its measured value.
type Check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Measured string `json:"measured"`
}

// Report is the outcome of a sampled recycle.
type Report struct {
	Checks  []Check  `json:"checks"`
	Samples int      `json:"samples"`
	Errors  []string `json:"errors,omitempty"`
}

// OK reports whether every invariant held.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

func (r Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  [%s] %s — %s\n", mark, c.Name, c.Measured)
	}
	fmt.Fprintf(&b, "  (%d samples of the group", r.Samples)
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "; sampling errors: %s", strings.Join(r.Errors, "; "))
	}
	b.WriteString(")\n")
	return b.String()
}

// Stop ends sampling, checks the end state (no taint or cordon of ours left, no
// instance in Standby) and returns the report.
func (s *Sampler) Stop(ctx context.Context) Report {
	s.sampleGroup(ctx)
	s.cancel()
	s.done.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Report
	r.Samples = s.samples
	for _, e := range s.errs {
		if n := s.errCount[e]; n > 1 {
			e += fmt.Sprintf(" (%d times)", n)
		}
		r.Errors = append(r.Errors, e)
	}
	r.Checks = append(r.Checks, Check{
		Name:     "1a. Ready nodes of the group never below desired",
		OK:       s.samples > 0 && s.minReadyGap >= 0,
		Measured: "lowest: " + s.minGapWhen,
	})
	order := Check{Name: "1b. no pod leaves the old node before the replacement is Ready", OK: true}
	switch {
	case s.firstLeave.IsZero():
		order.Measured = "no pod left the old node (it had none to move)"
	case s.replReady.IsZero():
		order.OK, order.Measured = false, fmt.Sprintf("%s left at +%s and no replacement was ever Ready", s.firstLeaveP, s.firstLeave.Sub(s.start).Truncate(time.Millisecond))
	default:
		gap := s.firstLeave.Sub(s.replReady)
		order.OK = gap >= 0
		order.Measured = fmt.Sprintf("first pod (%s) left %s after the replacement was Ready", s.firstLeaveP, gap.Truncate(time.Millisecond))
	}
	r.Checks = append(r.Checks, order)
	early := s.earlyKills()
	r.Checks = append(r.Checks, Check{
		Name: "2. no selected pod deleted or evicted before its deadline", OK: len(early) == 0,
		Measured: fmt.Sprintf("%d early (deadline: %s from the drain's start): %v", len(early), s.w.MaxWait, early),
	})
	r.Checks = append(r.Checks, Check{
		Name: "3. no eviction past a PodDisruptionBudget", OK: len(s.pdbBreaches) == 0,
		Measured: fmt.Sprintf("%d breaches %v", len(s.pdbBreaches), s.pdbBreaches),
	})
	r.Checks = append(r.Checks, s.endState(ctx))
	return r
}

func (s *Sampler) endState(ctx context.Context) Check {
	c := Check{Name: "4. no taint, cordon or Standby instance left behind"}
	var left []string
	nodes, err := s.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		c.Measured = "list nodes: " + err.Error()
		return c
	}
	for _, n := range nodes.Items {
		for _, t := range n.Spec.Taints {
			if t.Key == kube.TaintKey {
				left = append(left, "taint on "+n.Name)
			}
		}
		if _, ok := n.Annotations[kube.AnnotationFenced]; ok {
			left = append(left, "fence annotation (cordon ours) on "+n.Name)
		}
	}
	g, err := s.cloud.Group(ctx, s.w.Group)
	if err != nil {
		c.Measured = "describe group: " + err.Error()
		return c
	}
	for _, in := range g.Instances {
		if in.Lifecycle == cloud.LifecycleStandby {
			left = append(left, in.ID+" in Standby")
		}
	}
	c.OK = len(left) == 0
	c.Measured = fmt.Sprintf("%d left %v; group desired %d (was %d)", len(left), left, g.Desired, s.desired0)
	return c
}
