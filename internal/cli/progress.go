package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// progress renders an execution's history events for a person: one line per event
// that says something new; on a terminal the repeated "still waiting" line of a
// loop is redrawn in place instead of scrolling.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	start    time.Time
	inPlace  bool   // the last line written is a redrawable status line
	lastLine string // to skip identical non-tty status lines
	task     string // the task last scheduled: names what TaskSucceeded's output is
	entered  map[string]bool
}

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, entered: map[string]bool{}}
}

func (p *progress) event(ev engine.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		p.start = ev.Timestamp
	}
	line, status := p.describe(ev)
	if line == "" {
		return nil
	}
	elapsed := ev.Timestamp.Sub(p.start).Truncate(time.Second)
	text := fmt.Sprintf("[%8s] %s", elapsed, line)
	switch {
	case p.tty && status:
		fmt.Fprintf(p.w, "\r\033[K%s", text)
		p.inPlace = true
	case status && line == p.lastLine:
		// the same "not yet" again: say nothing new
	default:
		if p.inPlace {
			fmt.Fprintln(p.w)
			p.inPlace = false
		}
		fmt.Fprintln(p.w, text)
	}
	if status {
		p.lastLine = line
	}
	return nil
}

// describe turns one event into a sentence; status is true for the repeated
// "still waiting" results of a loop.
func (p *progress) describe(ev engine.Event) (line string, status bool) {
	var d struct {
		Name   string          `json:"name"`
		Output json.RawMessage `json:"output"`
		Error  string          `json:"error"`
		Cause  string          `json:"cause"`
		Params struct {
			Task string `json:"task"`
		} `json:"parameters"`
	}
	_ = json.Unmarshal(ev.Details, &d)
	switch ev.Type {
	case "TaskStateEntered":
		// A loop's check is entered again and again: introduce it once.
		if msg := stepIntro[d.Name]; msg != "" && !p.entered[d.Name] {
			p.entered[d.Name] = true
			return msg, false
		}
	case "TaskScheduled":
		p.task = d.Params.Task
		return "", false
	case "TaskFailed", "TaskTimedOut":
		return fmt.Sprintf("  %s: %s (the state machine retries or rolls back)", d.Error, firstLine(d.Cause)), false
	case "TaskSucceeded":
		return summarize(p.task, d.Output)
	case "ExecutionSucceeded":
		return "done", false
	case "ExecutionFailed":
		return fmt.Sprintf("failed: %s: %s", d.Error, firstLine(d.Cause)), false
	case "ExecutionAborted":
		return "aborted", false
	}
	return "", false
}

var stepIntro = map[string]string{
	"Resolve":          "Resolve: node ↔ instance ↔ group, preconditions",
	"Fence":            "Fence: taint NoSchedule + cordon the old node",
	"Surge":            "Surge: enter standby (no decrement) so the group launches a replacement",
	"CheckReplacement": "WaitReplacement: watching for a new InService instance with a Ready node",
	"Drain":            "Drain: evicting other pods (PDBs honoured), waiting for the selected pods to finish",
	"CheckWorkloads":   "WaitWorkloads: checking that moved workloads are available again",
	"Retire":           "Retire: detach the old instance, retire it, delete its node",
	"Rollback":         "Rollback: undoing what this recycle did",
}

// summarize reads a task's output (its field of the State) and says what it means.
func summarize(task string, raw json.RawMessage) (string, bool) {
	switch task {
	case recycle.TaskResolve:
		var t recycle.Target
		_ = json.Unmarshal(raw, &t)
		return fmt.Sprintf("  node %s = instance %s (%s) in group %s (desired %d, max %d)", t.Node, t.InstanceID, t.AZ, t.Group, t.Desired, t.MaxSize), false
	case recycle.TaskFence:
		return "  fenced: no new pod lands on the old node", false
	case recycle.TaskSurge:
		var s recycle.SurgeStatus
		_ = json.Unmarshal(raw, &s)
		return fmt.Sprintf("  surged group %s (desired stays %d); replacement due by %s", s.Record.Group, s.Record.DesiredBefore, s.Deadline.Local().Format(time.TimeOnly)), false
	case recycle.TaskCheckReplacement:
		var r recycle.ReplacementStatus
		_ = json.Unmarshal(raw, &r)
		if r.Done {
			return fmt.Sprintf("WaitReplacement: replacement %s InService, node Ready", strings.Join(r.Instances, ",")), false
		}
		return "WaitReplacement: " + orText(r.Reason, "waiting for the group to launch a replacement"), true
	case recycle.TaskDrain:
		var s recycle.DrainStatus
		_ = json.Unmarshal(raw, &s)
		if s.Done {
			return fmt.Sprintf("Drain: node empty (%d pod(s) evicted, %d forced)", len(s.Evicted), s.ForcedPods), false
		}
		return "Drain: " + drainLine(s), true
	case recycle.TaskCheckWorkloads:
		var s recycle.WorkloadsStatus
		_ = json.Unmarshal(raw, &s)
		if s.Done {
			return "WaitWorkloads: moved workloads available again", false
		}
		return "WaitWorkloads: " + strings.Join(s.NotReady, "; "), true
	case recycle.TaskRetire:
		var s recycle.RetireStatus
		_ = json.Unmarshal(raw, &s)
		what := "terminated"
		if s.Stopped {
			what = "stopped and tagged"
		}
		return fmt.Sprintf("  old instance detached and %s, node object deleted", what), false
	case recycle.TaskRollback:
		return "  rolled back: node unfenced, surge undone", false
	}
	return "", false
}

func drainLine(s recycle.DrainStatus) string {
	var parts []string
	if len(s.Selected) > 0 {
		parts = append(parts, fmt.Sprintf("waiting for %d selected pod(s) %s (max-wait until %s)",
			len(s.Selected), strings.Join(first(s.Selected, 3), ", "), s.Deadline.Local().Format(time.TimeOnly)))
	}
	parts = append(parts, fmt.Sprintf("%d pod(s) left, %d evicted", s.Remaining, len(s.Evicted)))
	var blocked []string
	for _, b := range s.Blocked {
		blocked = append(blocked, fmt.Sprintf("%s blocked by PDB %s (retry %s)", b.Pod, strings.Join(b.PDBs, ","), b.NotBefore.Local().Format(time.TimeOnly)))
	}
	sort.Strings(blocked)
	parts = append(parts, first(blocked, 2)...)
	return strings.Join(parts, "; ")
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(append([]string(nil), s[:n]...), fmt.Sprintf("+%d more", len(s)-n))
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// lockedWriter serialises writes from several goroutines to one stream.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
