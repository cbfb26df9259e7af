package recycle

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/engine"
)

// Reading a recycle back from its engine history: what the CLI shows, and what the
// tests compare. The state machine's own states are folded into the steps of
// DESIGN.md §1, the way a person thinks of them.

// Steps in the order a person reads them.
var Steps = []string{"Resolve", "Fence", "Surge", "WaitReplacement", "Drain", "WaitWorkloads", "Retire", "Rollback"}

// StepOf folds a state of the machine (a loop's check, its Choice and its pause)
// into its step.
func StepOf(state string) string {
	switch state {
	case "CheckReplacement", "CheckReplacementDone?", "WaitForReplacement":
		return "WaitReplacement"
	case "Drain", "DrainDone?", "WaitForDrain":
		return "Drain"
	case "CheckWorkloads", "CheckWorkloadsDone?", "WaitForWorkloads":
		return "WaitWorkloads"
	case "Retire", "RetireDone?", "WaitForRetire":
		return "Retire"
	case "Rollback", "RollbackDone?", "WaitForRollback":
		return "Rollback"
	case "SurgeOrNot":
		return "Fence"
	}
	return state
}

// StateFromHistory returns the last State document the execution recorded.
func StateFromHistory(hist []engine.Event) State {
	var st State
	for _, ev := range hist {
		if !strings.HasSuffix(ev.Type, "StateExited") && !strings.HasSuffix(ev.Type, "StateEntered") {
			continue
		}
		var d struct {
			Input  json.RawMessage `json:"input"`
			Output json.RawMessage `json:"output"`
		}
		if json.Unmarshal(ev.Details, &d) != nil {
			continue
		}
		doc := d.Output
		if doc == nil {
			doc = d.Input
		}
		// The rollback machine's documents are the engine's abort record: the
		// recycle's state is its StateInput.
		var abort struct {
			StateInput json.RawMessage `json:"StateInput"`
		}
		if json.Unmarshal(doc, &abort) == nil && abort.StateInput != nil {
			doc = abort.StateInput
		}
		var s State
		if json.Unmarshal(doc, &s) == nil {
			st = s
		}
	}
	return st
}

// TasksSucceeded returns the task names (Parameters.task) that completed at least once.
func TasksSucceeded(hist []engine.Event) map[string]bool {
	done := map[string]bool{}
	var cur string
	for _, ev := range hist {
		switch ev.Type {
		case "TaskScheduled":
			var d struct {
				Params struct {
					Task string `json:"task"`
				} `json:"parameters"`
			}
			_ = json.Unmarshal(ev.Details, &d)
			cur = d.Params.Task
		case "TaskSucceeded":
			done[cur] = true
		}
	}
	return done
}

// StepDurations adds up the time spent in each step (its loop and pauses included).
func StepDurations(hist []engine.Event) map[string]time.Duration {
	out := map[string]time.Duration{}
	var cur string
	var since time.Time
	for _, ev := range hist {
		// Succeed and Fail states end the execution; they take no time of their own.
		if !strings.HasSuffix(ev.Type, "StateEntered") || strings.HasPrefix(ev.Type, "Succeed") || strings.HasPrefix(ev.Type, "Fail") {
			continue
		}
		var d struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(ev.Details, &d)
		step := StepOf(d.Name)
		if step != cur {
			if cur != "" {
				out[cur] += ev.Timestamp.Sub(since)
			}
			cur, since = step, ev.Timestamp
		}
	}
	if cur != "" && len(hist) > 0 {
		out[cur] += hist[len(hist)-1].Timestamp.Sub(since)
	}
	for k, v := range out {
		out[k] = v.Round(time.Millisecond)
	}
	return out
}
