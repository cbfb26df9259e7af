package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/engine"
)

// listed answers List with the executions whose names start with the prefix.
type listed []engine.Execution

func (l listed) List(_ context.Context, f engine.ListFilter) ([]engine.Execution, error) {
	var out []engine.Execution
	for _, ex := range l {
		if strings.HasPrefix(ex.Name, f.NamePrefix) {
			out = append(out, ex)
		}
	}
	return out, nil
}

// Plan.Attempts numbers each candidate after its earlier recycles and skips one that
// a recycle holds now — also one that only a hook-answering execution shows running
// (recycle.Attempts), as `recycler recycle` and the server see it.
func TestPlanAttemptsNumbersAndSkipsHeldInstances(t *testing.T) {
	l := listed{
		{ID: "1", Name: "i-a", Status: engine.StatusFailed},
		{ID: "2", Name: "i-a-2", Status: engine.StatusAborted},
		{ID: "3", Name: "i-b-hook-0a1b2c3d", Status: engine.StatusRunning},
		{ID: "4", Name: "i-c-2", Status: engine.StatusRunning},
	}
	p := &Plan{CreatedAt: time.Unix(0, 0), Groups: []GroupPlan{{Name: "ng", MaxInFlight: 1, Items: []Item{
		{Candidate: Candidate{Node: "a", InstanceID: "i-a"}},
		{Candidate: Candidate{Node: "b", InstanceID: "i-b"}},
		{Candidate: Candidate{Node: "c", InstanceID: "i-c"}},
		{Candidate: Candidate{Node: "d", InstanceID: "i-d"}},
	}}}}
	if err := p.Attempts(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	items := p.Groups[0].Items
	if len(items) != 2 || items[0].InstanceID != "i-a" || items[0].Attempt != 3 || items[1].InstanceID != "i-d" || items[1].Attempt != 1 {
		t.Fatalf("items = %+v, want i-a attempt 3 and i-d attempt 1", items)
	}
	if items[1].Order != 1 || items[1].Batch != 1 || p.Groups[0].Batches != 2 {
		t.Fatalf("order/batches not renumbered: %+v, batches %d", items, p.Groups[0].Batches)
	}
	var skipped []string
	for _, s := range p.Skipped {
		skipped = append(skipped, s.InstanceID+": "+s.Reason)
	}
	if got := strings.Join(skipped, "; "); got != "i-b: already being recycled by execution 3; i-c: already being recycled by execution 4" {
		t.Fatalf("skipped = %q", got)
	}
}
