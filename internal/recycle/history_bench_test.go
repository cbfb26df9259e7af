package recycle_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
)

// BenchmarkHistoryOfABlockedDrain measures what a 24-hour --max-wait drain stores: the
// real state machine's drain loop (the definition from Drain on) and the real Drain task
// on the embedded engine, with a stepped clock and a selected pod that never finishes (a
// fake Cluster: the only fake). It reports the history events and the bytes stored.
// The goals (issue 9 item 3): < 5,000 events and < 5 MB for the 24 hours.
//
// Sub-benchmarks: the default --check-seconds, and the longest one allowed.
func BenchmarkHistoryOfABlockedDrain(b *testing.B) {
	for _, check := range []int{recycle.DefaultCheckSeconds, 600} {
		b.Run(fmt.Sprintf("check-seconds=%d", check), func(b *testing.B) { benchBlockedDrain(b, check) })
	}
}

func benchBlockedDrain(b *testing.B, checkSeconds int) {
	for range b.N {
		r := runBlockedDrain(b, 24*time.Hour, checkSeconds)
		b.ReportMetric(float64(r.events), "events/24h")
		b.ReportMetric(float64(r.dbBytes)/1e6, "MB-stored/24h")
		b.ReportMetric(float64(r.walMax)/1e6, "MB-WAL-max")
		b.ReportMetric(float64(r.detailBytes)/1e6, "MB-event-details")
		fmt.Printf("blocked drain, --check-seconds %d, %s simulated (state document %d bytes): %d history events (%d loops, %.1f events/loop), "+
			"database %.2f MB, WAL at most %.2f MB, event details %.2f MB, in %s\n",
			checkSeconds, r.simulated, r.stateBytes, r.events, r.loops, float64(r.events)/float64(max(r.loops, 1)),
			float64(r.dbBytes)/1e6, float64(r.walMax)/1e6, float64(r.detailBytes)/1e6, r.elapsed.Round(time.Millisecond))
	}
}

type drainRun struct {
	simulated                    time.Duration
	events, loops                int
	dbBytes, walMax, detailBytes int64
	stateBytes                   int
	elapsed                      time.Duration
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func runBlockedDrain(b *testing.B, span time.Duration, checkSeconds int) drainRun {
	b.Helper()
	began := time.Now()
	clk := newSteppedClock(t0)
	cl := &blockedCluster{clk: clk}
	tasks := &recycle.Tasks{Cluster: cl, Cloud: noCloud{}, Clock: clk}
	dir := b.TempDir()
	path := filepath.Join(dir, "state.db")
	var mu sync.Mutex
	var lastType string
	events, loops := 0, 0
	eng, err := engine.Open(context.Background(), engine.Options{Path: path, Clock: clk, Registry: tasks.Registry(), Logger: slog.New(slog.DiscardHandler),
		OnEvent: func(ev engine.Event) {
			mu.Lock()
			events++
			if ev.Type == "TaskScheduled" {
				loops++
			}
			lastType = ev.Type
			mu.Unlock()
			clk.kick()
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	def := drainLoop(b)
	in := drainState()
	in.Request.CheckSeconds = checkSeconds
	raw, _ := json.Marshal(in)
	ex, err := eng.Start(context.Background(), engine.StartInput{StateMachine: recycle.StateMachineName, Name: in.Target.InstanceID, Definition: def, Input: raw})
	if err != nil {
		b.Fatal(err)
	}
	// The engine arms its timer for the Wait's stored deadline: read it to know when.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=query_only(1)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	walMax := int64(0)
	end := t0.Add(span)
	for clk.Now().Before(end) {
		// Quiescent: the Drain task blocks on its watch, or the machine sits in a Wait
		// whose timer the engine armed after the last event.
		quiet := func() bool {
			mu.Lock()
			defer mu.Unlock()
			if cl.isBlocked() {
				return true
			}
			if lastType != "WaitStateEntered" {
				return false
			}
			var due int64
			if err := db.QueryRow(`SELECT MIN(due_at) FROM timers WHERE kind = 'wake'`).Scan(&due); err != nil || due == 0 {
				return false
			}
			return clk.armed(time.Unix(0, due))
		}
		deadline := time.Now().Add(30 * time.Second)
		for !quiet() {
			if d, _ := eng.Describe(context.Background(), ex.ID); d.Status.Done() {
				b.Fatalf("the drain ended at %s: %s %s %s", clk.Now().Sub(t0), d.Status, d.Error, d.Cause)
			}
			if time.Now().After(deadline) {
				b.Fatalf("not quiescent for 30s at %s (last event %s)", clk.Now().Sub(t0), lastType)
			}
			clk.waitKick(10 * time.Millisecond)
		}
		before := clk.progress()
		if !clk.stepToNext(end) {
			b.Fatalf("nothing to wait for at %s", clk.Now().Sub(t0))
		}
		// What the step woke must have moved before quiescence means anything again.
		for clk.progress() == before && clk.Now().Before(end) {
			if time.Now().After(deadline.Add(30 * time.Second)) {
				b.Fatalf("nothing moved after the step to %s", clk.Now().Sub(t0))
			}
			clk.waitKick(10 * time.Millisecond)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil {
			walMax = max(walMax, fi.Size())
		}
	}
	hist, err := eng.History(context.Background(), ex.ID)
	if err != nil {
		b.Fatal(err)
	}
	var pages []string
	if rows, err := db.Query(`SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 6`); err == nil {
		for rows.Next() {
			var n string
			var sz int64
			if rows.Scan(&n, &sz) == nil {
				pages = append(pages, fmt.Sprintf("%s %.2f MB", n, float64(sz)/1e6))
			}
		}
		rows.Close()
	}
	fmt.Printf("largest tables and indexes: %s\n", strings.Join(pages, ", "))
	r := drainRun{simulated: span, events: len(hist), loops: loops, walMax: walMax, stateBytes: len(raw)}
	for _, ev := range hist {
		r.detailBytes += int64(len(ev.Details))
	}
	db.Close()
	eng.Close() // the last connection: SQLite checkpoints the WAL into the file
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	r.dbBytes = fi.Size()
	if fi, err := os.Stat(path + "-wal"); err == nil {
		r.dbBytes += fi.Size()
	}
	r.elapsed = time.Since(began)
	_ = events
	return r
}

// drainLoop is the recycle definition from Drain on (the states before it dropped, as
// unreachable): the drain loop exactly as a recycle runs it.
func drainLoop(b *testing.B) []byte {
	b.Helper()
	def, err := recycle.Definition("")
	if err != nil {
		b.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(def, &m); err != nil {
		b.Fatal(err)
	}
	states := m["States"].(map[string]any)
	keep := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if keep[n] || states[n] == nil {
			return
		}
		keep[n] = true
		s := states[n].(map[string]any)
		for _, k := range []string{"Next", "Default"} {
			if v, ok := s[k].(string); ok {
				visit(v)
			}
		}
		for _, k := range []string{"Choices", "Catch"} {
			list, _ := s[k].([]any)
			for _, c := range list {
				if v, ok := c.(map[string]any)["Next"].(string); ok {
					visit(v)
				}
			}
		}
	}
	visit("Drain")
	for n := range states {
		if !keep[n] {
			delete(states, n)
		}
	}
	m["StartAt"] = "Drain"
	out, _ := json.Marshal(m)
	return out
}

// drainState is a recycle's state as Drain first sees it, in a group of 20 nodes.
func drainState() recycle.State {
	req := recycle.NewRequest("ip-10-0-1-23.eu-west-1.compute.internal")
	req.Selector, req.Namespaces = "app=airflow-worker", []string{"airflow"}
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("i-0%016x", 0xabc0000+i))
	}
	sort.Strings(ids)
	return recycle.State{
		Request: req,
		Target: &recycle.Target{Node: req.Node, InstanceID: ids[3], AZ: "eu-west-1a", Group: "eks-workers-20260301",
			Desired: 20, MaxSize: 30, Instances: ids, ResolvedAt: t0},
		Fence: &kube.FenceRecord{ExecutionID: "5b3c8d0e-0000-4000-8000-000000000000", TaintAdded: true, Cordoned: true, At: t0},
		Surge: &recycle.SurgeStatus{Record: cloud.SurgeRecord{Group: "eks-workers-20260301", Snapshot: ids, DesiredBefore: 20,
			MaxBefore: 30, MaxAfter: 30, StartedAt: t0}, Deadline: t0.Add(15 * time.Minute)},
		Replacement: &recycle.ReplacementStatus{Done: true, Instances: []string{"i-0ffff00000000001"},
			Nodes: []string{"ip-10-0-2-99.eu-west-1.compute.internal"}, ReadyAt: t0.Add(70 * time.Second)},
	}
}

// blockedCluster: one selected pod that never finishes; watches block until their
// context ends. Only what Drain calls is implemented.
type blockedCluster struct {
	recycle.Cluster // nil: any other call panics (and fails the task)
	clk             *steppedClock
	mu              sync.Mutex
	blocked         bool
}

func (c *blockedCluster) isBlocked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked
}

func (c *blockedCluster) PodsOnNode(_ context.Context, node string, _ kube.PodSelector) (kube.PodSet, error) {
	return kube.PodSet{Node: node, ResourceVersion: "1", Selected: []kube.Pod{{Namespace: "airflow", Name: "airflow-worker-7f9c4",
		UID: "0f0e0d0c-0000-4000-8000-000000000001", Node: node, Class: kube.Selected, GracePeriodSeconds: 30, Started: t0.Add(-3 * time.Hour)}}}, nil
}

func (c *blockedCluster) WaitPodsChange(ctx context.Context, _ string, _ kube.PodSelector, prev kube.PodSet) (kube.PodSet, bool, error) {
	c.mu.Lock()
	c.blocked = true
	c.mu.Unlock()
	c.clk.kick()
	<-ctx.Done()
	c.mu.Lock()
	c.blocked = false
	c.mu.Unlock()
	return prev, false, nil
}

func (c *blockedCluster) Evict(context.Context, kube.Pod, int) error { return nil }

// The drain's first pass records the workloads it moves (none: only a selected pod)
// and labels the node out of the load balancers.
func (c *blockedCluster) WorkloadsOf(context.Context, []kube.Pod) ([]kube.Workload, []string, error) {
	return nil, nil, nil
}

func (c *blockedCluster) ExcludeFromLoadBalancers(context.Context, string, string) error { return nil }

func (c *blockedCluster) NodeReady(context.Context, string, map[string]string) (bool, string, error) {
	return true, "", nil
}

func (c *blockedCluster) ResolveNode(context.Context, string) (*corev1.Node, error) {
	return nil, errors.New("not used by the benchmark")
}

// noCloud: the drain loop calls no cloud API.
type noCloud struct{ recycle.Cloud }

// steppedClock is a fake clock that knows its timers' deadlines, so the benchmark can
// jump straight to the next one.
type steppedClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*steppedTimer]bool
	kicks  chan struct{}
	moved  atomic.Int64 // events, blocked watches, new timers: anything that shows progress
}

func (c *steppedClock) progress() int64 { return c.moved.Load() }

var _ clock.WithTicker = (*steppedClock)(nil)

func newSteppedClock(t time.Time) *steppedClock {
	return &steppedClock{now: t, timers: map[*steppedTimer]bool{}, kicks: make(chan struct{}, 1)}
}

func (c *steppedClock) kick() {
	c.moved.Add(1)
	select {
	case c.kicks <- struct{}{}:
	default:
	}
}

func (c *steppedClock) waitKick(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.kicks:
	case <-t.C:
	}
}

// armed reports whether a timer is set for exactly at.
func (c *steppedClock) armed(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.timers {
		if t.at.Equal(at) {
			return true
		}
	}
	return false
}

func (c *steppedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *steppedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// stepToNext moves the clock to the earliest timer (not past end) and fires what is due.
func (c *steppedClock) stepToNext(end time.Time) bool {
	c.mu.Lock()
	var next time.Time
	for t := range c.timers {
		if next.IsZero() || t.at.Before(next) {
			next = t.at
		}
	}
	if next.IsZero() {
		c.mu.Unlock()
		return false
	}
	if next.After(end) {
		next = end
	}
	if next.After(c.now) {
		c.now = next
	}
	var due []*steppedTimer
	for t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
			delete(c.timers, t)
		}
	}
	now := c.now
	c.mu.Unlock()
	for _, t := range due {
		select {
		case t.ch <- now:
		default:
		}
	}
	return true
}

type steppedTimer struct {
	c  *steppedClock
	at time.Time
	ch chan time.Time
}

func (t *steppedTimer) C() <-chan time.Time { return t.ch }

func (t *steppedTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.c.timers[t]
	delete(t.c.timers, t)
	return was
}

func (t *steppedTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.c.timers[t]
	t.at = t.c.now.Add(d)
	t.c.timers[t] = true
	return was
}

func (c *steppedClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	t := &steppedTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.timers[t] = true
	c.mu.Unlock()
	c.kick()
	return t
}

func (c *steppedClock) After(d time.Duration) <-chan time.Time { return c.NewTimer(d).C() }

func (c *steppedClock) Sleep(d time.Duration) { <-c.After(d) }

func (c *steppedClock) Tick(time.Duration) <-chan time.Time {
	panic("steppedClock: Tick is not used by the engine or the tasks")
}

func (c *steppedClock) NewTicker(time.Duration) clock.Ticker {
	panic("steppedClock: NewTicker is not used by the engine or the tasks")
}
