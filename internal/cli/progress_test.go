package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
)

// text reads what the view wrote, under the writer's lock (the redraw goroutine writes too).
func text(l *lockedWriter, b *bytes.Buffer) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return b.String()
}

// On a terminal the status line is redrawn every second between events: the step,
// the selected pods still running with their age (from the pod watch, fresher than
// the last check), the budget that blocks, and when the next deadline acts.
func TestLiveLineRedrawnEverySecondFromWatches(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(t0)
	var buf bytes.Buffer
	out := &lockedWriter{w: &buf}
	view := newProgress(out, true)
	watched := make(chan string, 1)
	started := t0.Add(-time.Hour)
	pods := func(ctx context.Context, node string, prev kube.PodSet) (kube.PodSet, bool, error) {
		if prev.ResourceVersion != "" { // one set, then block like a watch with nothing new
			<-ctx.Done()
			return prev, false, nil
		}
		watched <- node
		return kube.PodSet{Node: node, ResourceVersion: "7", Selected: []kube.Pod{{Namespace: "airflow", Name: "worker-1", Class: kube.Selected, Started: started}}}, true, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	view.live(ctx, clk, pods)

	ev := func(at time.Duration, typ string, details any) {
		raw, _ := json.Marshal(details)
		if err := view.event(engine.Event{Type: typ, Timestamp: t0.Add(at), Details: raw}); err != nil {
			t.Fatal(err)
		}
	}
	ev(0, "TaskStateEntered", map[string]any{"name": "Resolve"})
	ev(0, "TaskScheduled", map[string]any{"parameters": map[string]string{"task": recycle.TaskResolve}})
	ev(0, "TaskSucceeded", map[string]any{"output": recycle.Target{Node: "old-node", InstanceID: "i-0123456789abcdef0"}})
	ev(time.Second, "TaskStateEntered", map[string]any{"name": "Drain"})
	if node := <-watched; node != "old-node" {
		t.Fatalf("pod watch on %q, want the old node", node)
	}
	drain := recycle.DrainStatus{Passes: 2, StartedAt: t0, Deadline: t0.Add(2 * time.Hour), End: t0.Add(2*time.Hour + 30*time.Second), OnTimeout: recycle.OnTimeoutForce,
		Remaining: 2, Blocked: map[string]recycle.BlockInfo{"u": {Pod: "shop/web-1", PDBs: []string{"web"}, NotBefore: t0.Add(time.Minute)}}}
	ev(time.Second, "TaskScheduled", map[string]any{"parameters": map[string]string{"task": recycle.TaskDrain}})
	ev(2*time.Second, "TaskSucceeded", map[string]any{"output": drain})
	// Nothing happens for a while; the line keeps moving.
	before := strings.Count(text(out, &buf), "\r\033[K")
	for range 3 {
		clk.Step(time.Second)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(text(out, &buf), "\r\033[K") == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		before = strings.Count(text(out, &buf), "\r\033[K")
	}
	text := text(out, &buf)
	last := text[strings.LastIndex(text, "\r\033[K"):]
	t.Logf("live line: %q", last)
	for _, want := range []string{"Drain (2s)", "waiting for 1 pod(s): airflow/worker-1 (running 1h0m3s)", "shop/web-1 blocked by PDB web", "in 1h59m57s: every pod still there is deleted (max-wait)"} {
		if !strings.Contains(last, want) {
			t.Errorf("live line %q lacks %q", last, want)
		}
	}
}
