package rollout

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// groupWithout answers the gate's look at a group: the item's old instance is gone
// from it (replaced). Only what the gate reads is implemented.
type groupWithout struct{ Cloud }

func (groupWithout) GroupMembers(context.Context, string) (cloud.Group, error) {
	return cloud.Group{Name: "ng", Desired: 2, Instances: []cloud.GroupInstance{{ID: "i-0000000b", Lifecycle: cloud.LifecycleInService}}}, nil
}

type noNodes struct{ Cluster }

func (noNodes) Nodes(context.Context, string) ([]corev1.Node, error)   { return nil, nil }
func (noNodes) UncordonForBatch(context.Context, string, string) error { return nil }

// A gate re-run after a crash (its answer was never recorded) finds the recycle it
// started by name, also when that recycle has ended meanwhile, and goes on to attach
// to it; a recycle someone else started under that name since the rollout began is
// not taken for the rollout's: the item is skipped, saying by whom.
func TestGateRerunFindsItsRecycleByName(t *testing.T) {
	ctx := context.Background()
	tasks := &Tasks{Cloud: groupWithout{}, Cluster: noNodes{}, Clock: clock.RealClock{}}
	eng, err := engine.Open(ctx, engine.Options{Path: filepath.Join(t.TempDir(), "db"), Registry: tasks.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	tasks.SetExecutions(eng)
	items := []ItemInput{{InstanceID: "i-0000000a", Node: "n-a"}, {InstanceID: "i-0000000c", Node: "n-c"}}
	in := Input{Rollout: Settings{MaxUnhealthy: Amount{N: 20, Percent: true}, OnFailure: OnFailurePause, PauseTimeout: Duration(time.Hour), CheckSeconds: 1},
		Request: recycle.NewRequest(""), Groups: []GroupInput{{Name: "ng", MaxInFlight: 1, Members: []string{"i-0000000a", "i-0000000c"}, Items: items}}}
	raw, _ := json.Marshal(in)
	// The rollout itself only has to exist (the gate reads its input).
	hold := []byte(`{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"End":true}}}`)
	pass := []byte(`{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}`)
	ro, err := eng.Start(ctx, engine.StartInput{StateMachine: "test-rollout", Name: "r", Input: raw, Definition: hold})
	if err != nil {
		t.Fatal(err)
	}
	state := func(it ItemInput) IterState {
		return IterState{Item: it, Group: "ng", RolloutID: ro.ID, RolloutName: "r"}
	}
	ri, err := tasks.input(ctx, ro.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Ours: started with the gate's own name and input, and already over.
	mine, err := eng.Start(ctx, engine.StartInput{StateMachine: recycle.StateMachineName, Name: items[0].ChildName(),
		Input: tasks.childRef(ri, state(items[0])).Input, Definition: pass})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if ex, err := eng.Wait(wctx, mine.ID); err != nil || ex.Status != engine.StatusSucceeded {
		t.Fatalf("recycle: %v %s", err, ex.Status)
	}
	// Someone else's: `recycler recycle` of the other instance, other options, running.
	theirs, err := eng.Start(ctx, engine.StartInput{StateMachine: recycle.StateMachineName, Name: items[1].ChildName(),
		Input: json.RawMessage(`{"request":{"node":"n-c","retire":"stop"}}`), Definition: hold})
	if err != nil {
		t.Fatal(err)
	}

	res, err := tasks.Gate(ctx, state(items[0]))
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision != DecisionGo || res.Child == nil || res.Child.Name != items[0].ChildName() {
		t.Errorf("re-run gate of a node whose recycle ended: %s (%s), want go with child %s (the Recycle state attaches to it)", res.Decision, res.Reason, items[0].ChildName())
	}
	res, err = tasks.Gate(ctx, state(items[1]))
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision != DecisionSkip || !strings.Contains(res.Reason, "recycled meanwhile by execution "+theirs.ID) {
		t.Errorf("gate of a node someone else recycles under the same name: %s (%s), want skip naming execution %s", res.Decision, res.Reason, theirs.ID)
	}
}
