package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// Node states in a rollout's progress.
const (
	NodeQueued   = "queued"
	NodeWaiting  = "waiting" // the gate holds it: window, health budget, surge cap
	NodePaused   = "paused"
	NodeRunning  = "running"
	NodeReplaced = "replaced"
	NodeFailed   = "failed"
	NodeSkipped  = "skipped"
)

// NodeProgress is one candidate of a rollout as it stands.
type NodeProgress struct {
	InstanceID string    `json:"instanceId"`
	Node       string    `json:"node"`
	Group      string    `json:"group"`
	AZ         string    `json:"az"`
	State      string    `json:"state"`
	Step       string    `json:"step,omitempty"` // running: the recycle's current step
	Reason     string    `json:"reason,omitempty"`
	Execution  string    `json:"execution,omitempty"` // the recycle's execution id
	Started    time.Time `json:"started,omitzero"`
	Ended      time.Time `json:"ended,omitzero"`
}

// Summary counts a rollout's nodes.
type Summary struct {
	Replaced, Failed, Skipped, Running, Waiting, Queued int
	Paused                                              bool
	// Why is the reason of the latest hold or pause, when the rollout is held or paused.
	Why string
	// ETA: now + the remaining nodes at the rate measured so far (zero before any ended).
	ETA time.Time
}

// Progress is a rollout read back from the engine: its execution, every node's state
// and the summary. It is what `recycler status`, `history` and the live view print.
type Progress struct {
	Execution engine.Execution `json:"execution"`
	Nodes     []NodeProgress   `json:"nodes"`
	Summary   Summary          `json:"summary"`
	// Pauses are the rollout's pause executions still running.
	Pauses []engine.Execution `json:"pauses,omitempty"`
}

// Left counts the nodes not finished yet.
func (s Summary) Left() int { return s.Running + s.Waiting + s.Queued }

// Reader is what reading progress needs: Executions without the writes.
type Reader interface {
	Describe(ctx context.Context, id string) (engine.Execution, error)
	History(ctx context.Context, id string) ([]engine.Event, error)
	List(ctx context.Context, f engine.ListFilter) ([]engine.Execution, error)
}

// IsRollout reports whether ex is a rollout execution.
func IsRollout(ex engine.Execution) bool { return ex.StateMachine == StateMachineName }

// Watcher streams an execution's events (engine.Engine.Watch).
type Watcher interface {
	Watch(ctx context.Context, id string, fn func(engine.Event) error) error
}

// ReadProgress reads a rollout's progress once: its history (gate decisions, the
// recycles' results, outcomes) and its running recycles (current step). now is for
// the ETA.
func ReadProgress(ctx context.Context, r Reader, id string, now time.Time) (*Progress, error) {
	ex, err := r.Describe(ctx, id)
	if err != nil {
		return nil, err
	}
	tr, err := NewTracker(ex)
	if err != nil {
		return nil, err
	}
	hist, err := r.History(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, ev := range hist {
		_ = tr.Event(ev)
	}
	return tr.Snapshot(ctx, r, nil, now)
}

// Tracker folds a rollout's history events, one at a time, into its progress, so a
// live view reads each event once (Engine.Watch feeding Event) instead of the whole
// history at every refresh.
type Tracker struct {
	mu       sync.Mutex
	ex       engine.Execution
	nodes    []NodeProgress
	index    map[string]int // instance id → node
	byChild  map[string]int // recycle execution name → node
	slots    int
	why      string
	took     []time.Duration
	steps    map[string]string // running recycle id → its current step
	followed map[string]bool
}

// NewTracker starts tracking the rollout ex (its input names the nodes).
func NewTracker(ex engine.Execution) (*Tracker, error) {
	if !IsRollout(ex) {
		return nil, fmt.Errorf("execution %s is a %s, not a rollout", ex.ID, ex.StateMachine)
	}
	var in Input
	if err := json.Unmarshal(ex.Input, &in); err != nil {
		return nil, fmt.Errorf("rollout %s input: %w", ex.ID, err)
	}
	t := &Tracker{ex: ex, index: map[string]int{}, byChild: map[string]int{}, steps: map[string]string{}, followed: map[string]bool{}}
	for _, g := range in.Groups {
		t.slots += g.MaxInFlight
		for _, it := range g.Items {
			t.index[it.InstanceID] = len(t.nodes)
			t.byChild[it.ChildName()] = len(t.nodes)
			t.nodes = append(t.nodes, NodeProgress{InstanceID: it.InstanceID, Node: it.Node, Group: g.Name, AZ: it.AZ, State: NodeQueued})
		}
	}
	if in.Rollout.MaxSurge > 0 {
		t.slots = min(t.slots, in.Rollout.MaxSurge)
	}
	return t, nil
}

// Event folds one event of the rollout's history.
func (t *Tracker) Event(ev engine.Event) error {
	var d struct {
		Output json.RawMessage `json:"output"`
		Cause  string          `json:"cause"`
	}
	if ev.Type != "TaskSucceeded" && ev.Type != "TaskFailed" && ev.Type != "PassStateExited" {
		return nil
	}
	if json.Unmarshal(ev.Details, &d) != nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Type {
	case "TaskSucceeded":
		var g GateResult
		if json.Unmarshal(d.Output, &g) == nil && g.Decision != "" {
			t.gate(g)
			return nil
		}
		var so syncOutput
		if json.Unmarshal(d.Output, &so) == nil {
			t.recycled(so)
		}
	case "TaskFailed":
		// The cause is the child's description (after "States.TaskFailed: " as the
		// engine records it).
		var so syncOutput
		if i := strings.IndexByte(d.Cause, '{'); i >= 0 && json.Unmarshal([]byte(d.Cause[i:]), &so) == nil {
			t.recycled(so)
		}
	case "PassStateExited":
		var o struct {
			InstanceID string `json:"instanceId"`
			Outcome    string `json:"outcome"`
			Reason     string `json:"reason"`
		}
		if json.Unmarshal(d.Output, &o) != nil || o.Outcome == "" {
			return nil
		}
		if i, ok := t.index[o.InstanceID]; ok {
			n := &t.nodes[i]
			if n.State != NodeFailed {
				n.State = o.Outcome
			}
			if n.Ended.IsZero() {
				n.Ended = ev.Timestamp
			}
			if o.Reason != "" && n.State != NodeFailed {
				n.Reason = o.Reason
			}
		}
	}
	return nil
}

func (t *Tracker) gate(g GateResult) {
	i, ok := t.index[g.InstanceID]
	if !ok || final(t.nodes[i].State) {
		return
	}
	n := &t.nodes[i]
	n.Reason = g.Reason
	switch g.Decision {
	case DecisionWait:
		n.State, t.why = NodeWaiting, g.Reason
	case DecisionPaused:
		n.State, t.why = NodePaused, g.Reason
	case DecisionGo:
		n.State = NodeRunning
	}
}

// recycled records a child recycle's end, from the rollout's own Recycle task.
func (t *Tracker) recycled(so syncOutput) {
	i, ok := t.byChild[so.Name]
	if !ok {
		return
	}
	t.ended(&t.nodes[i], so.ExecutionArn, engine.Status(so.Status), so.Error, so.Cause, so.StartDate, so.StopDate)
}

func (t *Tracker) ended(n *NodeProgress, id string, status engine.Status, errName, cause string, start, stop time.Time) {
	n.Execution, n.Started, n.Step = id, start, ""
	delete(t.steps, id)
	if status == engine.StatusSucceeded {
		if n.State != NodeReplaced {
			t.took = append(t.took, stop.Sub(start))
		}
		n.State, n.Ended = NodeReplaced, stop
		return
	}
	n.State, n.Ended = NodeFailed, stop
	n.Reason = fmt.Sprintf("%s %s: %s", status, errName, firstLine(cause))
}

// Snapshot returns the progress now: the folded history plus the rollout's status,
// its running recycles (with their current step: followed through w when given, else
// read from their histories) and its pauses.
func (t *Tracker) Snapshot(ctx context.Context, r Reader, w Watcher, now time.Time) (*Progress, error) {
	ex, err := r.Describe(ctx, t.ex.ID)
	if err != nil {
		return nil, err
	}
	running, err := r.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Status: engine.StatusRunning})
	if err != nil {
		return nil, err
	}
	pauses, err := r.List(ctx, engine.ListFilter{StateMachine: PauseStateMachineName, Status: engine.StatusRunning})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	runningNow := map[int]bool{}
	var unread []string
	for _, c := range running {
		i, ok := t.byChild[c.Name]
		if !ok || final(t.nodes[i].State) {
			continue
		}
		runningNow[i] = true
		n := &t.nodes[i]
		n.State, n.Execution, n.Started = NodeRunning, c.ID, c.StartTime
		switch {
		case w != nil && !t.followed[c.ID]:
			t.followed[c.ID] = true
			go t.follow(ctx, w, c.ID)
		case w == nil:
			unread = append(unread, c.ID)
		}
		n.Step = t.steps[c.ID]
	}
	var stale []string // recycles that ended, or were stopped, before the rollout recorded it
	for name, i := range t.byChild {
		if t.nodes[i].State == NodeRunning && !runningNow[i] {
			stale = append(stale, name)
		}
	}
	t.mu.Unlock()
	for _, id := range unread {
		step := currentStep(ctx, r, id)
		t.mu.Lock()
		t.steps[id] = step
		t.mu.Unlock()
	}
	if len(stale) > 0 {
		if err := t.settle(ctx, r, stale, runningNow); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := &Progress{Execution: ex, Nodes: slices.Clone(t.nodes)}
	for i := range p.Nodes {
		if runningNow[i] {
			p.Nodes[i].Step = t.steps[p.Nodes[i].Execution]
		}
	}
	for _, pe := range pauses {
		if strings.HasPrefix(pe.Name, pausePrefix(ex.Name)) {
			p.Pauses = append(p.Pauses, pe)
		}
	}
	t.summarize(p, now)
	return p, nil
}

// settle reads the end of recycles the rollout's history does not show (stopped by
// an abort, or ended a moment ago).
func (t *Tracker) settle(ctx context.Context, r Reader, names []string, runningNow map[int]bool) error {
	var ended []engine.Execution
	for _, name := range names {
		exs, err := r.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Name: name})
		if err != nil {
			return err
		}
		ended = append(ended, exs...)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range ended {
		i, ok := t.byChild[c.Name]
		if !ok || runningNow[i] || !c.Status.Done() || final(t.nodes[i].State) {
			continue
		}
		t.ended(&t.nodes[i], c.ID, c.Status, c.Error, c.Cause, c.StartTime, c.StopTime)
	}
	return nil
}

// follow keeps a running recycle's current step up to date until it ends.
func (t *Tracker) follow(ctx context.Context, w Watcher, id string) {
	_ = w.Watch(ctx, id, func(ev engine.Event) error {
		if !strings.HasSuffix(ev.Type, "StateEntered") {
			return nil
		}
		var d struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(ev.Details, &d) == nil {
			t.mu.Lock()
			t.steps[id] = recycle.StepOf(d.Name)
			t.mu.Unlock()
		}
		return nil
	})
}

func (t *Tracker) summarize(p *Progress, now time.Time) {
	s := &p.Summary
	for _, n := range p.Nodes {
		switch n.State {
		case NodeReplaced:
			s.Replaced++
		case NodeFailed:
			s.Failed++
		case NodeSkipped:
			s.Skipped++
		case NodeRunning:
			s.Running++
		case NodeWaiting, NodePaused:
			s.Waiting++
		default:
			s.Queued++
		}
	}
	s.Paused = len(p.Pauses) > 0 && p.Execution.Status == engine.StatusRunning
	if s.Paused {
		var pin PauseInput
		_ = json.Unmarshal(p.Pauses[0].Input, &pin)
		s.Why = pin.Reason
	} else if s.Waiting > 0 {
		s.Why = t.why
	}
	if len(t.took) > 0 && s.Left() > 0 && p.Execution.Status == engine.StatusRunning {
		took := slices.Clone(t.took)
		slices.Sort(took)
		rounds := (s.Left() + max(1, t.slots) - 1) / max(1, t.slots)
		s.ETA = now.Add(time.Duration(rounds) * took[len(took)/2])
	}
}

func final(state string) bool {
	return state == NodeReplaced || state == NodeFailed || state == NodeSkipped
}

// currentStep is the step a running recycle is in (DESIGN.md §1 names).
func currentStep(ctx context.Context, r Reader, id string) string {
	hist, err := r.History(ctx, id)
	if err != nil {
		return ""
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if strings.HasSuffix(hist[i].Type, "StateEntered") {
			var d struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(hist[i].Details, &d) == nil {
				return recycle.StepOf(d.Name)
			}
		}
	}
	return ""
}
