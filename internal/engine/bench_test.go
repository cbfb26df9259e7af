package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/asl"
)

// Benchmarks run a fixed workload per b.N iteration (so -benchtime 1x gives real
// numbers) on a real file with the real clock, and report their figures as metrics.

func benchEngine(b *testing.B, onEvent func(Event)) *Engine {
	return benchEngineOpts(b, Options{OnEvent: onEvent})
}

func benchEngineOpts(b *testing.B, o Options) *Engine {
	b.Helper()
	o.Path = filepath.Join(b.TempDir(), "bench.db")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := Open(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// passChainDef is a machine of n Pass states: one transition (one transaction) each.
func passChainDef(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"StartAt":"S0","States":{`)
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		if i == n-1 {
			fmt.Fprintf(&sb, `"S%d":{"Type":"Pass","End":true}`, i)
		} else {
			fmt.Fprintf(&sb, `"S%d":{"Type":"Pass","Next":"S%d"}`, i, i+1)
		}
	}
	sb.WriteString(`}}`)
	return []byte(sb.String())
}

// taskChainDef is a machine of n Task states calling a no-op task: every Task is
// committed before it runs and again with its result, so each transition pays a
// commit — the shape of the recycle workflow.
func taskChainDef(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"StartAt":"S0","States":{`)
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		next := fmt.Sprintf(`"Next":"S%d"`, i+1)
		if i == n-1 {
			next = `"End":true`
		}
		fmt.Fprintf(&sb, `"S%d":{"Type":"Task","Resource":"noop",%s}`, i, next)
	}
	sb.WriteString(`}}`)
	return []byte(sb.String())
}

func BenchmarkTransitions(b *testing.B) {
	cases := []struct {
		kind         string
		execs, steps int
		syncFull     bool
	}{
		{"pass", 1, 2000, false},
		{"pass", 1000, 20, false},
		{"task", 1, 500, false},
		{"task", 1000, 5, false},
		{"task", 1, 200, true},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/executions=%d", c.kind, c.execs)
		sync := "NORMAL"
		if c.syncFull {
			name += "/sync=FULL"
			sync = "FULL"
		}
		b.Run(name, func(b *testing.B) {
			def := passChainDef(c.steps)
			if c.kind == "task" {
				def = taskChainDef(c.steps)
			}
			var rate, commits float64
			for range b.N {
				rate, commits = runTransitions(b, def, c.execs, c.syncFull)
			}
			b.ReportMetric(rate, "transitions/s")
			b.ReportMetric(commits, "commits/s")
			b.Logf("| durable transitions/s, %s states, %4d concurrent executions, synchronous=%s | %7.0f | (%5.0f commits/s) |",
				c.kind, c.execs, sync, rate, commits)
		})
	}
}

// runTransitions returns state transitions and transactions committed per second.
func runTransitions(b *testing.B, def []byte, execs int, syncFull bool) (float64, float64) {
	noop := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }
	e := benchEngineOpts(b, Options{SyncFull: syncFull, Registry: asl.Registry{"noop": noop}})
	ctx := context.Background()
	before, beforeT := e.commits.Load(), e.transitions.Load()
	begin := time.Now()
	ids := make([]string, execs)
	for i := range execs {
		ex, err := e.Start(ctx, StartInput{StateMachine: "bench", Definition: def, Input: json.RawMessage(`{"payload":"some state input"}`)})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = ex.ID
	}
	for _, id := range ids {
		if ex, err := e.Wait(ctx, id); err != nil || ex.Status != StatusSucceeded {
			b.Fatalf("execution %s: %v %v", id, ex.Status, err)
		}
	}
	elapsed := time.Since(begin)
	return float64(e.transitions.Load()-beforeT) / elapsed.Seconds(), float64(e.commits.Load()-before) / elapsed.Seconds()
}

const waitBenchDef = `{"StartAt":"W","States":{"W":{"Type":"Wait","TimestampPath":"$.until","Next":"Next"},"Next":{"Type":"Pass","End":true}}}`

// BenchmarkWaitLatency measures from a Wait's deadline to the commit of the next
// state's entry (the moment it has durably started).
func BenchmarkWaitLatency(b *testing.B) {
	cases := []struct {
		name   string
		execs  int
		spread time.Duration // deadlines spread evenly over this window
	}{
		{"executions=1", 1, 0},
		{"executions=1000/spread=1s", 1000, time.Second},
		{"executions=1000/same-instant", 1000, 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var lat []time.Duration
			for range b.N {
				if c.execs == 1 {
					lat = append(lat, sequentialWaits(b, 200)...)
				} else {
					lat = append(lat, concurrentWaits(b, c.execs, c.spread)...)
				}
			}
			slices.Sort(lat)
			p50, p99, pmax := pct(lat, 50), pct(lat, 99), lat[len(lat)-1]
			b.ReportMetric(ms(p50), "p50-ms")
			b.ReportMetric(ms(p99), "p99-ms")
			b.ReportMetric(ms(pmax), "max-ms")
			b.Logf("| Wait deadline → next state, %-28s | p50 %6.2f ms | p99 %6.2f ms | max %6.2f ms | n=%d |",
				c.name, ms(p50), ms(p99), ms(pmax), len(lat))
		})
	}
}

const debugLatency = false // true lists the late wake-ups

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(0, min(len(sorted)-1, i-1))]
}

// latencyProbe records, for each execution, when its "Next" state's entry committed.
type latencyProbe struct {
	mu      sync.Mutex
	entered map[string]time.Time
	waiting map[string]time.Time // WaitStateEntered commit
}

func newProbe() *latencyProbe {
	return &latencyProbe{entered: map[string]time.Time{}, waiting: map[string]time.Time{}}
}

func (p *latencyProbe) onEvent(ev Event) {
	now := time.Now()
	switch ev.Type {
	case "PassStateEntered":
		p.mu.Lock()
		p.entered[ev.ExecutionID] = now
		p.mu.Unlock()
	case "WaitStateEntered":
		p.mu.Lock()
		p.waiting[ev.ExecutionID] = now
		p.mu.Unlock()
	}
}

func untilInput(t time.Time) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"until":%q}`, t.UTC().Format(time.RFC3339Nano)))
}

func sequentialWaits(b *testing.B, n int) []time.Duration {
	p := newProbe()
	e := benchEngine(b, p.onEvent)
	ctx := context.Background()
	var out []time.Duration
	for range n {
		until := time.Now().Add(20 * time.Millisecond)
		ex, err := e.Start(ctx, StartInput{StateMachine: "wait", Definition: []byte(waitBenchDef), Input: untilInput(until)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Wait(ctx, ex.ID); err != nil {
			b.Fatal(err)
		}
		p.mu.Lock()
		out = append(out, p.entered[ex.ID].Sub(until))
		p.mu.Unlock()
	}
	return out
}

func concurrentWaits(b *testing.B, n int, spread time.Duration) []time.Duration {
	p := newProbe()
	e := benchEngine(b, p.onEvent)
	ctx := context.Background()
	// Deadlines start after all executions are started and parked in their Wait.
	base := time.Now().Add(3 * time.Second)
	ids := make([]string, n)
	untils := make([]time.Time, n)
	for i := range n {
		untils[i] = base
		if spread > 0 {
			untils[i] = base.Add(spread * time.Duration(i) / time.Duration(n))
		}
		ex, err := e.Start(ctx, StartInput{StateMachine: "wait", Definition: []byte(waitBenchDef), Input: untilInput(untils[i])})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = ex.ID
	}
	var out []time.Duration
	for i, id := range ids {
		if _, err := e.Wait(ctx, id); err != nil {
			b.Fatal(err)
		}
		p.mu.Lock()
		if w := p.waiting[id]; w.After(untils[i]) {
			b.Logf("execution %d reached its Wait %s after its deadline: start-up too slow for this window", i, w.Sub(untils[i]))
		}
		out = append(out, p.entered[id].Sub(untils[i]))
		if d := out[len(out)-1]; d > 30*time.Millisecond && debugLatency {
			b.Logf("execution %d: %s late", i, d)
		}
		p.mu.Unlock()
	}
	return out
}
