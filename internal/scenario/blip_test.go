package scenario_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// TestRecycleRidesOutAnAPIServerRestartMidDrain: kube-apiserver goes away for 10 s
// while the drain waits for a selected pod (as in an EKS control-plane upgrade) and
// comes back on the same address with the same etcd. The recycle is delayed, not
// failed or rolled back, and every invariant holds (DESIGN.md §6, invariant 8).
func TestRecycleRidesOutAnAPIServerRestartMidDrain(t *testing.T) {
	const (
		job    = 40 * time.Second
		outage = 10 * time.Second
	)
	w := newWorld(t, 2*time.Second, job)
	ctx := context.Background()
	node := w.longJobNode(t)

	var (
		mu        sync.Mutex
		drains    int
		transient []string // causes of the Recycler.Transient failures the retries absorbed
		restarted = make(chan error, 1)
	)
	blip := func() {
		if err := w.env.Kube.StopAPIServer(); err != nil {
			restarted <- err
			return
		}
		time.Sleep(outage) // the outage itself, not a wait for something to happen
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		restarted <- w.env.Kube.StartAPIServer(startCtx)
	}
	onEvent := func(ev engine.Event) error {
		var d struct {
			Name  string `json:"name"`
			Error string `json:"error"`
			Cause string `json:"cause"`
		}
		if json.Unmarshal(ev.Details, &d) != nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Type == "TaskStateEntered" && d.Name == "Drain":
			// The second pass: the other pods are evicted, the drain waits for the job.
			if drains++; drains == 2 {
				go blip()
			}
		case ev.Type == "TaskFailed" && d.Error == recycle.ErrTransient:
			transient = append(transient, d.Cause)
		}
		return nil
	}
	out, err := w.h.Recycle(ctx, w.eng, w.request(node, 10*time.Minute), "blip", onEvent)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("apiserver restart: %v", err)
		}
	default:
		t.Fatal("the recycle ended before the apiserver was stopped: the test did not test the outage")
	}
	if out.Execution.Status != engine.StatusSucceeded {
		t.Fatalf("recycle %s: %s %s", out.Execution.Status, out.Execution.Error, out.Execution.Cause)
	}
	t.Logf("recycled in %s across a %s apiserver outage; retried %d transient errors:\n  %s\n%s",
		out.Elapsed, outage, len(transient), strings.Join(transient, "\n  "), out.Report)
	if len(transient) == 0 {
		t.Error("no task met the outage (no Recycler.Transient failure was retried)")
	}
	if !out.Report.OK() {
		t.Errorf("invariants broken:\n%s", out.Report)
	}
	st := recycle.StateFromHistory(out.History)
	if st.Drain == nil || !st.Drain.Done || st.Retire == nil {
		t.Fatalf("the drain or retire did not finish: %+v", st)
	}
}
