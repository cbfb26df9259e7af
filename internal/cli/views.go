package cli

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// execView is one execution as `list`, `status` and `history` print it with -o json.
type execView struct {
	ID               string         `json:"id"`
	Name             string         `json:"name"`
	StateMachine     string         `json:"stateMachine"`
	Node             string         `json:"node,omitempty"`
	Instance         string         `json:"instance,omitempty"`
	Status           engine.Status  `json:"status"`
	Step             string         `json:"step,omitempty"` // the step it is in, or ended in (recycle.Steps)
	Outcome          string         `json:"outcome"`        // as `recycle -o json` reports it; running, aborting, rolling-back while it lasts
	StartTime        time.Time      `json:"startTime"`
	StopTime         time.Time      `json:"stopTime,omitzero"`
	Error            string         `json:"error,omitempty"`
	Cause            string         `json:"cause,omitempty"`
	RollbackOf       string         `json:"rollbackOf,omitempty"`
	RollbackID       string         `json:"rollbackId,omitempty"`
	Driver           *engine.Driver `json:"driver,omitempty"` // the live process driving it (running only)
	AbortRequestedAt *time.Time     `json:"abortRequestedAt,omitempty"`
}

// recentEvents is enough history to find the current state of a loop (≤ 9 events a round).
const recentEvents = 24

func viewOf(ctx context.Context, eng executions, ex engine.Execution) (execView, error) {
	var recent []engine.Event
	var err error
	if local, ok := eng.(*engine.Engine); ok {
		recent, err = local.RecentHistory(ctx, ex.ID, recentEvents)
	} else {
		recent, err = eng.History(ctx, ex.ID)
	}
	if err != nil {
		return execView{}, err
	}
	return viewFrom(ctx, eng, ex, recent)
}

// viewFrom is viewOf with the execution's history (its recent events at least)
// already read.
func viewFrom(ctx context.Context, eng executions, ex engine.Execution, recent []engine.Event) (execView, error) {
	v := execView{ID: ex.ID, Name: ex.Name, StateMachine: ex.StateMachine, Status: ex.Status,
		StartTime: ex.StartTime, StopTime: ex.StopTime, Error: ex.Error, Cause: ex.Cause,
		RollbackOf: ex.RollbackOf, RollbackID: ex.RollbackID}
	var err error
	local, isLocal := eng.(*engine.Engine)
	last := lastStateEntered(recent)
	v.Step = recycle.StepOf(last)
	st := recycle.StateFromHistory(recent)
	v.Node, v.Instance = targetOf(ex, st)
	if isLocal && !ex.Status.Done() {
		if d, ok := local.DriverOf(ex.ID); ok {
			v.Driver = &d
		}
		if v.AbortRequestedAt, err = local.AbortRequested(ctx, ex.ID); err != nil {
			return v, err
		}
	}
	v.Outcome = outcomeOf(ctx, eng, ex, last, v.AbortRequestedAt != nil)
	return v, nil
}

// targetOf is the node and instance a recycle (or its rollback) is about: as resolved,
// else as requested.
func targetOf(ex engine.Execution, st recycle.State) (node, instance string) {
	if st.Target != nil {
		return st.Target.Node, st.Target.InstanceID
	}
	var in struct {
		recycle.State
		Execution struct {
			Input recycle.State `json:"Input"` // a rollback's input names the aborted recycle
		} `json:"Execution"`
	}
	_ = json.Unmarshal(ex.Input, &in)
	req := in.Request
	if req.Target() == "" {
		req = in.Execution.Input.Request
	}
	return req.Node, req.InstanceID
}

// nodeOf names an execution's node (or instance) for log lines.
func nodeOf(ex engine.Execution) string {
	node, inst := targetOf(ex, recycle.State{})
	return orText(node, inst)
}

func lastStateEntered(evs []engine.Event) string {
	for i := len(evs) - 1; i >= 0; i-- {
		if strings.HasSuffix(evs[i].Type, "StateEntered") {
			var d struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(evs[i].Details, &d)
			return d.Name
		}
	}
	return ""
}

// outcomeOf says how an execution ended (the words of `recycle -o json`) from its
// status, the last state it entered, and its rollback.
func outcomeOf(ctx context.Context, eng executions, ex engine.Execution, last string, abortRequested bool) string {
	switch ex.Status {
	case engine.StatusRunning:
		if abortRequested {
			return "aborting"
		}
		return "running"
	case engine.StatusSucceeded:
		return "succeeded"
	case engine.StatusAborted, engine.StatusTimedOut:
		if ex.RollbackID == "" {
			return "needs-person"
		}
		rb, err := eng.Describe(ctx, ex.RollbackID)
		switch {
		case err != nil:
			return "needs-person"
		case rb.Status == engine.StatusRunning:
			return "rolling-back"
		case rb.Status == engine.StatusSucceeded:
			return "aborted"
		}
		return "needs-person"
	}
	switch {
	case last == "Refused" || ex.Error == recycle.ErrBadInput || ex.Error == recycle.ErrPrecondition:
		return "refused"
	case last == "RolledBack":
		return "rolled-back"
	case last == "Resolve":
		return "failed"
	}
	return "needs-person"
}

func printViews(ctx context.Context, eng executions, w io.Writer, exs []engine.Execution) error {
	views := make([]execView, 0, len(exs))
	for _, ex := range exs {
		v, err := viewOf(ctx, eng, ex)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	return printJSON(w, views)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
