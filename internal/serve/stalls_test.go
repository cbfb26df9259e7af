package serve

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

func entered(id, state string, at time.Time) engine.Event {
	d, _ := json.Marshal(map[string]string{"name": state})
	return engine.Event{ExecutionID: id, Type: "TaskStateEntered", Timestamp: at, Details: d}
}

func succeeded(id string, out any, at time.Time) engine.Event {
	o, _ := json.Marshal(out)
	d, _ := json.Marshal(map[string]json.RawMessage{"output": o})
	return engine.Event{ExecutionID: id, Type: "TaskSucceeded", Timestamp: at, Details: d}
}

// A drain held by a budget is notified once, after the threshold, naming the pod
// and the budget; its poll loop does not restart the clock; the next step is a
// visit of its own; an ended execution is forgotten.
func TestStallsNotifyOncePerStepVisit(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	s := newStalls(30 * time.Minute)
	s.observe(entered("e1", "Drain", t0), "node-a")
	blocked := recycle.DrainStatus{Remaining: 1, Blocked: map[string]recycle.BlockInfo{"uid": {Pod: "shop/web-0", PDBs: []string{"web"}, NotBefore: t0.Add(20 * time.Minute)}}}
	for i := range 6 { // the poll loop: Choice, Wait, back to the task
		at := t0.Add(time.Duration(i) * 5 * time.Minute)
		s.observe(entered("e1", "DrainDone?", at), "node-a")
		s.observe(entered("e1", "WaitForDrain", at), "node-a")
		s.observe(entered("e1", "Drain", at), "node-a")
		s.observe(succeeded("e1", blocked, at), "node-a")
	}
	if got := s.due(t0.Add(29 * time.Minute)); len(got) != 0 {
		t.Fatalf("notified before the threshold: %+v", got)
	}
	got := s.due(t0.Add(31 * time.Minute))
	if len(got) != 1 || got[0].Kind != NotifyBlocked || got[0].Execution != "e1" || got[0].Target != "node-a" {
		t.Fatalf("due after 31m = %+v, want one blocked notification for e1/node-a", got)
	}
	for _, want := range []string{"in Drain for 31m0s", "shop/web-0 blocked by PDB web"} {
		if !strings.Contains(got[0].Text, want) {
			t.Errorf("text %q does not say %q", got[0].Text, want)
		}
	}
	if again := s.due(t0.Add(2 * time.Hour)); len(again) != 0 {
		t.Errorf("notified twice for one visit: %+v", again)
	}
	s.observe(entered("e1", "CheckWorkloads", t0.Add(2*time.Hour)), "node-a")
	if got := s.due(t0.Add(2*time.Hour + 31*time.Minute)); len(got) != 1 || !strings.Contains(got[0].Text, "in WaitWorkloads") {
		t.Errorf("the next step's stall = %+v, want one", got)
	}
	s.observe(engine.Event{ExecutionID: "e1", Type: "ExecutionSucceeded", Timestamp: t0.Add(3 * time.Hour)}, "node-a")
	s.observe(entered("e2", "Surge", t0), "")
	if got := s.due(t0.Add(10 * time.Hour)); len(got) != 1 || got[0].Execution != "e2" || !strings.Contains(got[0].Text, "recycle of e2") {
		t.Errorf("after e1 ended: %+v, want only e2 (named by its id)", got)
	}
}
