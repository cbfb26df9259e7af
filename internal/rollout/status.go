package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
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

// ReadProgress reads a rollout's progress: its history (gate decisions, outcomes)
// and its children (status, current step). now is for the ETA.
func ReadProgress(ctx context.Context, r Reader, id string, now time.Time) (*Progress, error) {
	ex, err := r.Describe(ctx, id)
	if err != nil {
		return nil, err
	}
	if !IsRollout(ex) {
		return nil, fmt.Errorf("execution %s is a %s, not a rollout", id, ex.StateMachine)
	}
	var in Input
	if err := json.Unmarshal(ex.Input, &in); err != nil {
		return nil, fmt.Errorf("rollout %s input: %w", id, err)
	}
	p := &Progress{Execution: ex}
	index := map[string]int{}
	slots := 0
	for _, g := range in.Groups {
		slots += g.MaxInFlight
		for _, it := range g.Items {
			index[it.InstanceID] = len(p.Nodes)
			p.Nodes = append(p.Nodes, NodeProgress{InstanceID: it.InstanceID, Node: it.Node, Group: g.Name, AZ: it.AZ, State: NodeQueued})
		}
	}
	if in.Rollout.MaxSurge > 0 {
		slots = min(slots, in.Rollout.MaxSurge)
	}
	hist, err := r.History(ctx, id)
	if err != nil {
		return nil, err
	}
	var why string
	for _, ev := range hist {
		var d struct {
			Name   string          `json:"name"`
			Output json.RawMessage `json:"output"`
		}
		if json.Unmarshal(ev.Details, &d) != nil || len(d.Output) == 0 {
			continue
		}
		switch ev.Type {
		case "TaskSucceeded":
			var g GateResult
			if json.Unmarshal(d.Output, &g) != nil || g.Decision == "" {
				continue
			}
			i, ok := index[g.InstanceID]
			if !ok || final(p.Nodes[i].State) {
				continue
			}
			n := &p.Nodes[i]
			n.Reason = g.Reason
			switch g.Decision {
			case DecisionWait:
				n.State, why = NodeWaiting, g.Reason
			case DecisionPaused:
				n.State, why = NodePaused, g.Reason
			case DecisionGo:
				n.State = NodeRunning
			}
		case "PassStateExited":
			var o struct {
				InstanceID string `json:"instanceId"`
				Outcome    string `json:"outcome"`
				Reason     string `json:"reason"`
			}
			if json.Unmarshal(d.Output, &o) != nil || o.Outcome == "" {
				continue
			}
			if i, ok := index[o.InstanceID]; ok {
				p.Nodes[i].State, p.Nodes[i].Ended = o.Outcome, ev.Timestamp
				if o.Reason != "" {
					p.Nodes[i].Reason = o.Reason
				}
			}
		}
	}
	children, err := r.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName})
	if err != nil {
		return nil, err
	}
	var took []time.Duration
	for _, c := range children {
		i, ok := index[strings.TrimPrefix(c.Name, ex.Name+"-")]
		if !ok || !strings.HasPrefix(c.Name, childPrefix(ex.Name)) {
			continue
		}
		n := &p.Nodes[i]
		n.Execution, n.Started = c.ID, c.StartTime
		switch {
		case c.Status == engine.StatusRunning:
			n.State, n.Step = NodeRunning, currentStep(ctx, r, c.ID)
		case c.Status == engine.StatusSucceeded:
			n.State, n.Ended = NodeReplaced, c.StopTime
			took = append(took, c.StopTime.Sub(c.StartTime))
		case !final(n.State) || n.State == NodeRunning:
			n.State, n.Ended = NodeFailed, c.StopTime
			n.Reason = fmt.Sprintf("%s %s: %s", c.Status, c.Error, firstLine(c.Cause))
		}
	}
	pauses, err := r.List(ctx, engine.ListFilter{StateMachine: PauseStateMachineName, Status: engine.StatusRunning})
	if err != nil {
		return nil, err
	}
	for _, pe := range pauses {
		if strings.HasPrefix(pe.Name, pausePrefix(ex.Name)) {
			p.Pauses = append(p.Pauses, pe)
		}
	}
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
	s.Paused = len(p.Pauses) > 0 && ex.Status == engine.StatusRunning
	if s.Paused {
		var pin PauseInput
		_ = json.Unmarshal(p.Pauses[0].Input, &pin)
		s.Why = pin.Reason
	} else if s.Waiting > 0 {
		s.Why = why
	}
	if len(took) > 0 && s.Left() > 0 && ex.Status == engine.StatusRunning {
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		per := took[len(took)/2]
		rounds := (s.Left() + max(1, slots) - 1) / max(1, slots)
		s.ETA = now.Add(time.Duration(rounds) * per)
	}
	return p, nil
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
