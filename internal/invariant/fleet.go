package invariant

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/kube"
)

// Fleet watches a rollout from the outside: the invariants of every group (one
// Sampler per group), plus what only a rollout can break — how many recycles are in
// flight at once (per group and per zone: nodes carrying Recycler's taint, from a
// watch, so no moment is missed), whether a pod leaves a node before a replacement
// for it is Ready, and whether any node is fenced by two executions.
type Fleet struct {
	w      FleetWatch
	groups []*Sampler
	cs     kubernetes.Interface
	clk    clock.PassiveClock
	start  time.Time

	mu          sync.Mutex
	initial     map[string]bool
	zoneOf      map[string]string
	fenced      map[string]string   // node → taint value, while it carries our taint
	fencedBy    map[string][]string // node → every taint value it carried
	newReady    map[string]bool     // nodes not there at the start, seen Ready
	drained     map[string]bool     // fenced nodes a pod has left
	peak        int
	peakAt      string
	peakZone    map[string]int
	orderErrors []string

	cancel   context.CancelFunc
	done     sync.WaitGroup
	stopOnce sync.Once
	report   FleetReport
}

// FleetWatch says what to watch: the groups, and the selected pods (as in Watch).
type FleetWatch struct {
	Groups     []string
	Selector   Watch // Selector, Namespaces, MaxWait, ReadyLabels, Interval (Group and OldNode unused)
	ZoneLabel  string
	MaxInZone  int // report a failure when more recycles than this run in one zone at once (0: no limit)
	MaxInGroup int // likewise in flight overall (0: no limit)
}

// StartFleet begins sampling a rollout.
func StartFleet(ctx context.Context, cs kubernetes.Interface, groups Groups, clk clock.PassiveClock, w FleetWatch) (*Fleet, error) {
	f := &Fleet{w: w, cs: cs, clk: clk, start: clk.Now(), initial: map[string]bool{}, zoneOf: map[string]string{}, fenced: map[string]string{},
		fencedBy: map[string][]string{}, newReady: map[string]bool{}, drained: map[string]bool{}, peakZone: map[string]int{}}
	for _, g := range w.Groups {
		gw := w.Selector
		gw.Group, gw.OldNode = g, "\x00none" // no single old node: the fleet checks the order itself
		s, err := Start(ctx, cs, groups, clk, gw)
		if err != nil {
			f.stopGroups(ctx)
			return nil, err
		}
		f.groups = append(f.groups, s)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		f.stopGroups(ctx)
		return nil, fmt.Errorf("fleet sampler: list nodes: %w", err)
	}
	for i := range nodes.Items {
		f.initial[nodes.Items[i].Name] = true
		f.node(&nodes.Items[i], false)
	}
	ctx, f.cancel = context.WithCancel(ctx)
	nodeW, err := retryWatch(ctx, nodes.ResourceVersion, cs.CoreV1().Nodes().Watch)
	if err != nil {
		f.cancel()
		f.stopGroups(ctx)
		return nil, fmt.Errorf("fleet sampler: watch nodes: %w", err)
	}
	podW, err := retryWatch(ctx, nodes.ResourceVersion, cs.CoreV1().Pods("").Watch)
	if err != nil {
		f.cancel()
		f.stopGroups(ctx)
		return nil, fmt.Errorf("fleet sampler: watch pods: %w", err)
	}
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		defer nodeW.Stop()
		for ev := range nodeW.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok {
				f.node(n, ev.Type == watch.Deleted)
			}
		}
	}()
	go func() {
		defer f.done.Done()
		defer podW.Stop()
		for ev := range podW.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && (ev.Type == watch.Deleted || p.DeletionTimestamp != nil) && !daemon(p) {
				f.podLeft(p)
			}
		}
	}()
	return f, nil
}

func (f *Fleet) node(n *corev1.Node, deleted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if z := n.Labels[corev1.LabelTopologyZone]; z != "" {
		f.zoneOf[n.Name] = z
	}
	if !deleted && !f.initial[n.Name] {
		if ready, _ := kube.NodeIsReady(n, nil); ready {
			f.newReady[n.Name] = true
		}
	}
	value, tainted := "", false
	for _, t := range n.Spec.Taints {
		if t.Key == kube.TaintKey {
			value, tainted = t.Value, true
		}
	}
	if deleted || !tainted {
		delete(f.fenced, n.Name)
		return
	}
	f.fenced[n.Name] = value
	if !slices.Contains(f.fencedBy[n.Name], value) {
		f.fencedBy[n.Name] = append(f.fencedBy[n.Name], value)
	}
	if len(f.fenced) > f.peak {
		f.peak = len(f.fenced)
		f.peakAt = fmt.Sprintf("+%s", f.clk.Since(f.start).Truncate(time.Millisecond))
	}
	zones := map[string]int{}
	for name := range f.fenced {
		zones[f.zoneOf[name]]++
	}
	for z, c := range zones {
		f.peakZone[z] = max(f.peakZone[z], c)
	}
}

// podLeft: the first pod to leave a fenced node starts its drain; by then a new
// Ready node must exist for it and for every drain started before.
func (f *Fleet) podLeft(p *corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, fenced := f.fenced[p.Spec.NodeName]; !fenced || f.drained[p.Spec.NodeName] {
		return
	}
	f.drained[p.Spec.NodeName] = true
	if len(f.drained) > len(f.newReady) {
		f.orderErrors = append(f.orderErrors, fmt.Sprintf("pod %s/%s left %s at +%s: %d drains started, %d new nodes Ready",
			p.Namespace, p.Name, p.Spec.NodeName, f.clk.Since(f.start).Truncate(time.Millisecond), len(f.drained), len(f.newReady)))
	}
}

func (f *Fleet) stopGroups(ctx context.Context) []Report {
	var out []Report
	for _, s := range f.groups {
		out = append(out, s.Stop(ctx))
	}
	return out
}

// FleetReport is the outcome of a sampled rollout.
type FleetReport struct {
	Groups map[string]Report `json:"groups"`
	Checks []Check           `json:"checks"`
	// PeakInFlight and PeakPerZone: the most nodes fenced at once, overall and per zone.
	PeakInFlight int            `json:"peakInFlight"`
	PeakPerZone  map[string]int `json:"peakPerZone"`
	Fenced       int            `json:"fenced"` // distinct nodes fenced
}

// OK reports whether every invariant held in every group.
func (r FleetReport) OK() bool {
	for _, g := range r.Groups {
		if !g.OK() {
			return false
		}
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

func (r FleetReport) String() string {
	var b strings.Builder
	names := make([]string, 0, len(r.Groups))
	for n := range r.Groups {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, " group %s:\n%s", n, r.Groups[n])
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  [%s] %s — %s\n", mark, c.Name, c.Measured)
	}
	return b.String()
}

// Stop ends sampling and returns the report; calling it again returns the same report
// (so a test can also stop it in a cleanup, on every path).
func (f *Fleet) Stop(ctx context.Context) FleetReport {
	f.stopOnce.Do(func() { f.report = f.stop(ctx) })
	return f.report
}

func (f *Fleet) stop(ctx context.Context) FleetReport {
	w := f.w
	f.cancel()
	f.done.Wait()
	reports := f.stopGroups(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	r := FleetReport{Groups: map[string]Report{}, PeakInFlight: f.peak, PeakPerZone: f.peakZone, Fenced: len(f.fencedBy)}
	for i, rep := range reports {
		// The per-group "pod leaves the old node" check has no single old node here;
		// the fleet's own order check replaces it.
		rep.Checks = slices.DeleteFunc(rep.Checks, func(c Check) bool { return strings.HasPrefix(c.Name, "1b.") })
		r.Groups[w.Groups[i]] = rep
	}
	r.Checks = append(r.Checks, Check{
		Name: "1b. no pod leaves a node before a replacement for it is Ready", OK: len(f.orderErrors) == 0,
		Measured: fmt.Sprintf("%d drains, %d new Ready nodes; %d early: %v", len(f.drained), len(f.newReady), len(f.orderErrors), first(f.orderErrors, 3)),
	})
	var twice []string
	for n, vals := range f.fencedBy {
		if len(vals) > 1 {
			twice = append(twice, fmt.Sprintf("%s by %v", n, vals))
		}
	}
	r.Checks = append(r.Checks, Check{Name: "no node fenced by two executions", OK: len(twice) == 0,
		Measured: fmt.Sprintf("%d nodes fenced, %d twice %v", len(f.fencedBy), len(twice), twice)})
	inflight := Check{Name: "recycles in flight at once", OK: w.MaxInGroup == 0 || f.peak <= w.MaxInGroup,
		Measured: fmt.Sprintf("peak %d (at %s), limit %d", f.peak, f.peakAt, w.MaxInGroup)}
	r.Checks = append(r.Checks, inflight)
	zoneOK := true
	for _, c := range f.peakZone {
		zoneOK = zoneOK && (w.MaxInZone == 0 || c <= w.MaxInZone)
	}
	r.Checks = append(r.Checks, Check{Name: "recycles in flight per zone", OK: zoneOK, Measured: fmt.Sprintf("peaks %v, limit %d", f.peakZone, w.MaxInZone)})
	return r
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
