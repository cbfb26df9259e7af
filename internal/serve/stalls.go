package serve

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// stalls notices recycles that stay in one step longer than after (the "blocked
// for more than N minutes" notification): once per visit of a step, naming what
// the step's last check said it waits for. It reads the engine's events, so a
// step is timed from its StateEntered event whichever process entered it.
type stalls struct {
	after time.Duration
	mu    sync.Mutex
	execs map[string]*stall // execution id → its current step
}

type stall struct {
	target   string
	step     string // as status names it (recycle.StepOf)
	state    string // the state last entered, whose task's output is read
	entered  time.Time
	task     string          // the task whose output last said what the step waits for
	output   json.RawMessage // its output
	notified bool
}

func newStalls(after time.Duration) *stalls {
	return &stalls{after: after, execs: map[string]*stall{}}
}

// observe follows one event of a recycle execution whose target is target.
func (s *stalls) observe(ev engine.Event, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.HasPrefix(ev.Type, "Execution") && ev.Type != "ExecutionStarted":
		delete(s.execs, ev.ExecutionID)
	case strings.HasSuffix(ev.Type, "StateEntered"):
		var d struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(ev.Details, &d) != nil || d.Name == "" {
			return
		}
		// A poll loop's task, Choice and Wait are one step (the names status shows).
		step := recycle.StepOf(d.Name)
		if strings.HasSuffix(step, "?") {
			return // a Choice of no step (HookOnly?)
		}
		st := s.execs[ev.ExecutionID]
		if st != nil && st.step == step {
			st.state = d.Name // the loop came back: the same visit
			return
		}
		if target == "" {
			target = ev.ExecutionID
		}
		s.execs[ev.ExecutionID] = &stall{target: target, step: step, state: d.Name, entered: ev.Timestamp}
	case ev.Type == "TaskSucceeded":
		st := s.execs[ev.ExecutionID]
		if st == nil {
			return
		}
		var d struct {
			Output json.RawMessage `json:"output"`
		}
		if json.Unmarshal(ev.Details, &d) == nil {
			st.task, st.output = st.state, d.Output
		}
	}
}

// due returns a notification for each step entered more than after before now
// that has not had one, and marks them.
func (s *stalls) due(now time.Time) []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Notification
	for id, st := range s.execs {
		if st.notified || now.Sub(st.entered) < s.after {
			continue
		}
		st.notified = true
		text := fmt.Sprintf("recycle of %s has been in %s for %s (since %s, execution %s)",
			st.target, st.step, now.Sub(st.entered).Truncate(time.Second), st.entered.UTC().Format(time.RFC3339), id)
		if w := recycle.Waiting(st.task, st.output, now); w != "" {
			text += ": " + w
		}
		out = append(out, Notification{Kind: NotifyBlocked, Execution: id, Target: st.target, Text: text})
	}
	return out
}
