package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
)

// progress renders an execution's history events for a person: one line per event
// that says something new; on a terminal the repeated "still waiting" line of a
// loop is redrawn in place instead of scrolling, and (with live) redrawn every
// second between events.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	start    time.Time
	inPlace  bool   // the last line written is a redrawable status line
	lastLine string // to skip identical non-tty status lines
	task     string // the task last scheduled: names what TaskSucceeded's output is
	entered  map[string]bool

	// What the live line shows, fed by the engine's events and one pod watch.
	step          string               // the step being run (recycle.StepOf)
	stepAt        time.Time            // when it began
	node          string               // the old node, once Resolve named it
	drain         *recycle.DrainStatus // the drain's last recorded status
	pods          *kube.PodSet         // the old node's pods, as the watch last saw them
	watching      bool
	startPodWatch func(node string) // set by live
}

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, entered: map[string]bool{}}
}

// podWatch streams the pods of a node: each call returns when the set differs
// from prev or ctx ends (kube.Client.WaitPodsChange with the drain's selector).
type podWatch func(ctx context.Context, node string, prev kube.PodSet) (kube.PodSet, bool, error)

// live keeps one status line redrawn every second of clk on a terminal — step,
// elapsed, the selected pods still running with their age, the budget that
// blocks, when the next deadline acts — until ctx ends. Its data comes from the
// events and, once the drain begins, from at most one watch of the old node's
// pods (pods may be nil): no extra API calls, no polling.
func (p *progress) live(ctx context.Context, clk clock.WithTicker, pods podWatch) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	if pods != nil {
		p.startPodWatch = func(node string) { go p.watchPods(ctx, pods, node) }
	}
	p.mu.Unlock()
	go func() {
		tick := clk.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C():
				p.redraw(clk.Now())
			}
		}
	}()
}

// drainPods is the pod watch of the live line: the cluster's, with the drain's selector.
func drainPods(c recycle.Cluster, req recycle.Request) podWatch {
	pol, err := req.DrainPolicy()
	if c == nil || err != nil {
		return nil
	}
	return func(ctx context.Context, node string, prev kube.PodSet) (kube.PodSet, bool, error) {
		return c.WaitPodsChange(ctx, node, pol.Selector, prev)
	}
}

func (p *progress) watchPods(ctx context.Context, watch podWatch, node string) {
	var prev kube.PodSet
	for ctx.Err() == nil {
		cur, _, err := watch(ctx, node, prev)
		if err != nil || cur.ResourceVersion == "" {
			return // the live line only displays: the recycle does not depend on it
		}
		p.mu.Lock()
		p.pods, prev = &cur, cur
		p.mu.Unlock()
	}
}

// redraw rewrites the status line for now.
func (p *progress) redraw(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() || p.step == "" || p.step == "Done" {
		return
	}
	line := p.liveLine(now)
	if line == "" {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K[%8s] %s", now.Sub(p.start).Truncate(time.Second), line)
	p.inPlace = true
}

// liveLine is what the status line says at now.
func (p *progress) liveLine(now time.Time) string {
	in := fmt.Sprintf("%s (%s)", p.step, now.Sub(p.stepAt).Truncate(time.Second))
	if p.step != "Drain" || p.drain == nil {
		if p.lastLine != "" && strings.HasPrefix(p.lastLine, p.step+":") {
			return in + strings.TrimPrefix(p.lastLine, p.step)
		}
		return in
	}
	d := *p.drain
	var parts []string
	selected := d.Selected
	if p.pods != nil { // fresher than the last pass's record
		selected = nil
		for _, pod := range p.pods.Selected {
			name := pod.String()
			if !pod.Started.IsZero() {
				name += " (running " + now.Sub(pod.Started).Truncate(time.Second).String() + ")"
			}
			selected = append(selected, name)
		}
		d.Remaining = p.pods.Remaining()
	}
	if len(selected) > 0 {
		parts = append(parts, fmt.Sprintf("waiting for %d pod(s): %s", len(selected), strings.Join(recycle.FirstFew(selected, 2), ", ")))
	}
	parts = append(parts, fmt.Sprintf("%d left, %d evicted", d.Remaining, len(d.Evicted)))
	parts = append(parts, recycle.FirstFew(d.BlockedBy(), 1)...)
	if at, what := d.NextDeadline(now); !at.IsZero() {
		parts = append(parts, fmt.Sprintf("in %s: %s", at.Sub(now).Truncate(time.Second), what))
	}
	return in + ": " + strings.Join(parts, "; ")
}

func (p *progress) event(ev engine.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		p.start = ev.Timestamp
	}
	p.follow(ev)
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

// follow keeps what the live line needs from an event.
func (p *progress) follow(ev engine.Event) {
	var d struct {
		Name   string          `json:"name"`
		Output json.RawMessage `json:"output"`
	}
	_ = json.Unmarshal(ev.Details, &d)
	switch ev.Type {
	case "TaskStateEntered", "ChoiceStateEntered", "WaitStateEntered":
		if step := recycle.StepOf(d.Name); step != p.step {
			p.step, p.stepAt = step, ev.Timestamp
		}
		if p.step == "Drain" && !p.watching && p.node != "" && p.startPodWatch != nil {
			p.watching = true
			p.startPodWatch(p.node)
		}
	case "TaskSucceeded":
		switch p.task {
		case recycle.TaskResolve:
			var t recycle.Target
			if json.Unmarshal(d.Output, &t) == nil {
				p.node = t.Node
			}
		case recycle.TaskDrain:
			var s recycle.DrainStatus
			if json.Unmarshal(d.Output, &s) == nil {
				p.drain = &s
			}
		}
	case "ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted":
		p.step = "Done"
	}
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
		return summarize(p.task, d.Output, ev.Timestamp)
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
func summarize(task string, raw json.RawMessage, at time.Time) (string, bool) {
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
		return "WaitReplacement: " + recycle.Waiting(task, raw, at), true
	case recycle.TaskDrain:
		var s recycle.DrainStatus
		_ = json.Unmarshal(raw, &s)
		if s.Done {
			return fmt.Sprintf("Drain: node empty (%d pod(s) evicted, %d forced)", len(s.Evicted), s.ForcedPods), false
		}
		if s.Passes == 1 {
			return fmt.Sprintf("  drain started: %s recorded with their availability, node out of external load balancers; %s",
				plural(len(s.Workloads), "workload"), deadlines(s)), false
		}
		return "Drain: " + s.Line(at), true
	case recycle.TaskCheckWorkloads:
		var s recycle.WorkloadsStatus
		_ = json.Unmarshal(raw, &s)
		if s.Done {
			return "WaitWorkloads: moved workloads available again", false
		}
		return "WaitWorkloads: " + recycle.Waiting(task, raw, at), true
	case recycle.TaskRetire:
		var s recycle.RetireStatus
		_ = json.Unmarshal(raw, &s)
		if !s.Done { // AWS holds the old instance between two states: asked again
			return "Retire: " + orText(s.Reason, "waiting for AWS"), true
		}
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

// deadlines names a drain's deadlines in clock time.
func deadlines(s recycle.DrainStatus) string {
	out := fmt.Sprintf("max-wait at %s, end by %s (on timeout: %s)", s.Deadline.Local().Format(time.DateTime), s.End.Local().Format(time.TimeOnly), orText(string(s.OnTimeout), "fail"))
	if !s.OthersDeadline.IsZero() {
		out = fmt.Sprintf("other pods by %s, ", s.OthersDeadline.Local().Format(time.TimeOnly)) + out
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
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
