package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
)

// engineWorkers: a rollout's Map iterations each hold a worker while their recycle
// runs (the child-execution task waits for it), and the recycles need workers of
// their own; workers are goroutines waiting on a queue, so be generous.
const engineWorkers = 512

// fleetTasks wraps a process's recycle tasks with the rollout's, over the same clients.
func fleetTasks(t *recycle.Tasks) *rollout.Tasks {
	ft := &rollout.Tasks{Recycle: t, Clock: t.Clock}
	ft.Cloud, _ = t.Cloud.(rollout.Cloud)
	// The gate looks at every node of a group before each recycle, and every recycle
	// waits for its replacement's node: both from one cache of the Nodes.
	switch c := t.Cluster.(type) {
	case *kube.NodeCache:
		ft.Cluster = c
	case *kube.Client:
		nc := c.NewNodeCache()
		t.Cluster, ft.Cluster = nc, nc
	}
	return ft
}

func newRolloutCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	f := &fleetFlags{}
	cmd := &cobra.Command{
		Use:   "rollout (--group NAME | --group-tag K=V | --nodes SELECTOR) (--drifted | --older-than AGE | --all)",
		Short: "Replace many nodes: one durable execution, per-group concurrency, budgets, windows",
		Long: `Replace the nodes 'recycler plan' lists with the same flags, as one durable execution: an
ASL Map over the candidates, each one the same recycle as 'recycler recycle' (its options pass
through), at most --max-in-flight per group at once, zones taking turns. Before each recycle
the rollout checks the group's health (nodes NotReady, being deleted, or fenced by anyone else)
and holds while more than --max-unhealthy are; nothing starts outside the --window(s); a failed
recycle pauses the rollout (--on-failure) until 'recycler resume ID' or 'recycler abort ID'.

Runs in the foreground with a line per node and a summary, redrawn in place on a terminal.
When the rollout is paused and nothing is running any more, the command exits (code 3) and
says why; the rollout waits in the state file. Ctrl-C offers to detach or to abort (the
running recycles roll back).

Exit codes: 0 every node replaced (or skipped), 1 a recycle failed or the rollout was aborted,
2 bad input (nothing changed), 3 paused or detached: it needs a person.`,
		Example: `  recycler rollout --group ng-1 --drifted --max-in-flight 3
  recycler rollout --group-tag env=prod --older-than 30d --max-in-flight 10% --window "Mon-Fri 01:00-05:00 Europe/Berlin" --fence-batch
  recycler rollout --nodes app=batch --all --selector app=airflow-worker --max-wait 20h --on-failure continue`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.fromEnv = fromEnvironment(cmd.Flags())
			return runRollout(cmd.Context(), f, stdin, stdout, stderr)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func runRollout(ctx context.Context, f *fleetFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := f.options()
	if err != nil {
		return err
	}
	// The foreground work must survive the first Ctrl-C: it only asks what to do.
	work := context.WithoutCancel(ctx)
	p, tasks, err := f.plan(work, o)
	if err != nil {
		return err
	}
	if p.Candidates() == 0 {
		fmt.Fprintf(stderr, "nothing to replace: no node matches (%d skipped)\n", len(p.Skipped))
		for _, s := range p.Skipped {
			fmt.Fprintf(stderr, "  skipped %s: %s\n", orDash(strings.TrimSpace(s.Node+" "+s.InstanceID)), s.Reason)
		}
		return nil
	}
	eng, err := f.openEngine(work, func() *recycle.Tasks { return tasks }, loggingFrom(ctx).log)
	if err != nil {
		return err
	}
	defer eng.Close()
	// Each node's recycle is named after its instance, after the attempts this state
	// file already holds (a node being recycled right now is skipped).
	if err := p.Attempts(work, eng); err != nil {
		return err
	}
	if p.Candidates() == 0 {
		fmt.Fprintf(stderr, "nothing to replace: every candidate is being recycled already (%d skipped)\n", len(p.Skipped))
		return nil
	}
	in, err := rollout.StartInput(rolloutName(tasks.Clock.Now()), p.Input(o.Request))
	if err != nil {
		return err
	}
	ex, err := eng.Start(work, in)
	if err != nil {
		return fmt.Errorf("start rollout: %w", err)
	}
	fmt.Fprintf(stderr, "rollout %s: replacing %d node(s); estimate %s\n", ex.ID, p.Candidates(), time.Duration(p.Estimate.Duration).Round(time.Second))
	return followRollout(ctx, work, eng, ex.ID, f.output, stdin, stdout, stderr)
}

func rolloutName(now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return "rollout-" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// followRollout shows a running rollout until it ends, pauses with nothing left
// running, or the user interrupts; then it reports and returns the exit code.
func followRollout(ctx, work context.Context, eng *engine.Engine, id, output string, stdin io.Reader, stdout, stderr io.Writer) error {
	view := &rolloutView{w: stderr, tty: isTerminal(stderr)}
	ex, err := eng.Describe(work, id)
	if err != nil {
		return err
	}
	tr, err := rollout.NewTracker(ex)
	if err != nil {
		return err
	}
	// Each history event is read once: the watch feeds the tracker as events commit.
	wctx, stopWatch := context.WithCancel(work)
	defer stopWatch()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		_ = eng.Watch(wctx, id, tr.Event)
	}()
	ended := (<-chan struct{})(watched)
	for {
		began := time.Now()
		p, err := tr.Snapshot(wctx, eng, eng, began)
		if err != nil {
			return err
		}
		if p.Execution.Status.Done() {
			<-watched // every event folded
			if p, err = tr.Snapshot(wctx, eng, eng, time.Now()); err != nil {
				return err
			}
		}
		view.draw(p)
		// Reading a big rollout's history costs CPU the rollout needs: look less often then.
		pause := max(500*time.Millisecond, 10*time.Since(began))
		switch {
		case p.Execution.Status.Done():
			return reportRollout(work, eng, p, output, stdout, stderr)
		case p.Summary.Paused && p.Summary.Running == 0:
			msg := fmt.Sprintf("paused: %s\nnothing is running; the rollout waits (until --pause-timeout). Continue with 'recycler resume %s', or stop it with 'recycler abort %s'", p.Summary.Why, id, id)
			fmt.Fprintln(stderr, msg)
			if err := printRolloutResult(stdout, output, p, "paused", msg); err != nil {
				return err
			}
			return exitError{code: ExitNeedsPerson, msg: msg}
		}
		select {
		case <-ended:
			ended = nil // the watch is over: from now on only the timer paces the view
		case <-time.After(pause):
		case <-ctx.Done():
			return interruptedRollout(work, eng, id, output, stdin, stdout, stderr)
		}
	}
}

// interruptedRollout asks whether to detach or abort after Ctrl-C (without a
// terminal: detach, nothing is undone behind the user's back).
func interruptedRollout(work context.Context, eng *engine.Engine, id, output string, stdin io.Reader, stdout, stderr io.Writer) error {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(stderr, "\ninterrupted: [d]etach (the rollout goes on under 'recycler resume') or [a]bort (the running recycles roll back)? ")
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "a") {
			return abortRollout(work, eng, id, "aborted by the user (Ctrl-C)", output, stdout, stderr)
		}
	}
	msg := fmt.Sprintf("detached: rollout %s stays where it is; continue it with 'recycler resume %s' (or 'recycler abort %s')", id, id, id)
	fmt.Fprintln(stderr, msg)
	return exitError{code: ExitNeedsPerson, msg: msg}
}

// abortRollout stops a rollout and waits until its abort machine stopped its
// recycles and those rolled back.
func abortRollout(ctx context.Context, eng *engine.Engine, id, cause, output string, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, "aborting: stopping the rollout; its running recycles roll back…")
	ex, err := eng.Stop(ctx, id, recycle.ErrAborted, cause)
	if err != nil {
		return fmt.Errorf("abort %s: %w", id, err)
	}
	if ex.RollbackID != "" {
		if _, err := eng.Wait(ctx, ex.RollbackID); err != nil {
			return fmt.Errorf("wait for the abort of %s: %w", id, err)
		}
	}
	p, err := rollout.ReadProgress(ctx, eng, id, time.Now())
	if err != nil {
		return err
	}
	for _, n := range p.Nodes {
		if n.Execution == "" {
			continue
		}
		child, err := eng.Describe(ctx, n.Execution)
		if err != nil {
			return err
		}
		if child.RollbackID != "" {
			if _, err := eng.Wait(ctx, child.RollbackID); err != nil {
				return fmt.Errorf("wait for the rollback of %s: %w", child.Name, err)
			}
		}
	}
	if p, err = rollout.ReadProgress(ctx, eng, id, time.Now()); err != nil {
		return err
	}
	return reportRollout(ctx, eng, p, output, stdout, stderr)
}

// resumeRollout ends a rollout's pauses (a person decided to go on) and follows it.
func resumeRollout(ctx context.Context, eng *engine.Engine, ex engine.Execution, output string, stdin io.Reader, stdout, stderr io.Writer) error {
	p, err := rollout.ReadProgress(ctx, eng, ex.ID, time.Now())
	if err != nil {
		return err
	}
	for _, pe := range p.Pauses {
		fmt.Fprintf(stderr, "resuming rollout %s (was paused: %s)\n", ex.ID, p.Summary.Why)
		if _, err := eng.Stop(ctx, pe.ID, rollout.ErrResumed, "resumed with 'recycler resume'"); err != nil && !errors.Is(err, engine.ErrNotRunning) {
			return fmt.Errorf("resume %s: %w", ex.ID, err)
		}
	}
	return followRollout(ctx, context.WithoutCancel(ctx), eng, ex.ID, output, stdin, stdout, stderr)
}

// reportRollout prints the final result and returns the exit code for it.
func reportRollout(ctx context.Context, eng *engine.Engine, p *rollout.Progress, output string, stdout, stderr io.Writer) error {
	s := p.Summary
	ex := p.Execution
	var code int
	var outcome, msg string
	switch {
	case ex.Status == engine.StatusSucceeded && s.Failed == 0:
		code, outcome = ExitOK, "succeeded"
		msg = fmt.Sprintf("rollout %s done: %d replaced, %d skipped in %s", ex.ID, s.Replaced, s.Skipped, ex.StopTime.Sub(ex.StartTime).Round(time.Second))
	case ex.Status == engine.StatusSucceeded:
		code, outcome = ExitFailed, "failed"
		msg = fmt.Sprintf("rollout %s done with failures: %d replaced, %d failed (rolled back), %d skipped", ex.ID, s.Replaced, s.Failed, s.Skipped)
	case ex.Status == engine.StatusAborted:
		code, outcome = ExitFailed, "aborted"
		msg = fmt.Sprintf("rollout %s aborted (%s: %s): %d replaced, %d failed, %d not started; the recycles that were running rolled back", ex.ID, ex.Error, ex.Cause, s.Replaced, s.Failed, s.Left())
		if ex.RollbackID != "" {
			if rb, err := eng.Describe(ctx, ex.RollbackID); err == nil && rb.Status == engine.StatusFailed {
				code, outcome = ExitNeedsPerson, "needs-person"
				msg += fmt.Sprintf("; but stopping them failed (%s): check 'recycler status'", rb.Cause)
			}
		}
	default:
		code, outcome = ExitFailed, "failed"
		msg = fmt.Sprintf("rollout %s %s (%s: %s): %d replaced, %d failed, %d not started", ex.ID, ex.Status, ex.Error, ex.Cause, s.Replaced, s.Failed, s.Left())
	}
	fmt.Fprintln(stderr, msg)
	if err := printRolloutResult(stdout, output, p, outcome, msg); err != nil {
		return err
	}
	if code != ExitOK {
		return exitError{code: code, msg: msg}
	}
	return nil
}

// rolloutResult is what `-o json` prints for a rollout.
type rolloutResult struct {
	ExecutionID string                 `json:"executionId"`
	Name        string                 `json:"name"`
	Status      engine.Status          `json:"status"`
	Outcome     string                 `json:"outcome"`
	Message     string                 `json:"message"`
	Summary     rolloutSummaryJSON     `json:"summary"`
	Nodes       []rollout.NodeProgress `json:"nodes"`
	Elapsed     float64                `json:"elapsedSeconds"`
}

type rolloutSummaryJSON struct {
	Replaced int    `json:"replaced"`
	Failed   int    `json:"failed"`
	Skipped  int    `json:"skipped"`
	Left     int    `json:"left"`
	Paused   bool   `json:"paused,omitempty"`
	Why      string `json:"why,omitempty"`
}

func printRolloutResult(w io.Writer, output string, p *rollout.Progress, outcome, msg string) error {
	if output != "json" {
		return nil
	}
	ex := p.Execution
	end := ex.StopTime
	if end.IsZero() {
		end = time.Now()
	}
	s := p.Summary
	return writeJSON(w, rolloutResult{ExecutionID: ex.ID, Name: ex.Name, Status: ex.Status, Outcome: outcome, Message: msg,
		Summary: rolloutSummaryJSON{Replaced: s.Replaced, Failed: s.Failed, Skipped: s.Skipped, Left: s.Left(), Paused: s.Paused, Why: s.Why},
		Nodes:   p.Nodes, Elapsed: end.Sub(ex.StartTime).Round(time.Millisecond).Seconds()})
}

// rolloutView renders progress: on a terminal the node lines and the summary are
// redrawn in place; otherwise a line is printed whenever a node's state changes,
// and the summary whenever it changes.
type rolloutView struct {
	w      io.Writer
	tty    bool
	drawn  int               // lines drawn last time (tty)
	last   map[string]string // node → last printed line (non-tty)
	lastSm string
}

// maxNodeLines bounds the redrawn block; the rest is summarised.
const maxNodeLines = 20

func (v *rolloutView) draw(p *rollout.Progress) {
	if v.last == nil {
		v.last = map[string]string{}
	}
	sm := summaryLine(p)
	if !v.tty {
		for _, n := range p.Nodes {
			line := nodeLine(n)
			if n.State != rollout.NodeQueued && v.last[n.InstanceID] != line {
				v.last[n.InstanceID] = line
				fmt.Fprintln(v.w, line)
			}
		}
		if sm != v.lastSm {
			v.lastSm = sm
			fmt.Fprintln(v.w, sm)
		}
		return
	}
	lines := nodeBlock(p.Nodes)
	lines = append(lines, sm)
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA", v.drawn)
	}
	for _, l := range lines {
		b.WriteString("\r\033[K" + l + "\n")
	}
	b.WriteString("\033[J")
	fmt.Fprint(v.w, b.String())
	v.drawn = len(lines)
}

// nodeBlock picks the lines worth a terminal: what is running or held first, then
// the failures, the latest replaced, and a count of the rest.
func nodeBlock(nodes []rollout.NodeProgress) []string {
	rank := map[string]int{rollout.NodeRunning: 0, rollout.NodePaused: 1, rollout.NodeWaiting: 2, rollout.NodeFailed: 3, rollout.NodeReplaced: 4, rollout.NodeSkipped: 5, rollout.NodeQueued: 6}
	sorted := append([]rollout.NodeProgress(nil), nodes...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if rank[sorted[i].State] != rank[sorted[j].State] {
			return rank[sorted[i].State] < rank[sorted[j].State]
		}
		return sorted[i].Ended.After(sorted[j].Ended)
	})
	var out []string
	hidden := map[string]int{}
	for _, n := range sorted {
		if len(out) < maxNodeLines {
			out = append(out, nodeLine(n))
			continue
		}
		hidden[n.State]++
	}
	if len(hidden) > 0 {
		var parts []string
		for _, st := range []string{rollout.NodeRunning, rollout.NodePaused, rollout.NodeWaiting, rollout.NodeFailed, rollout.NodeReplaced, rollout.NodeSkipped, rollout.NodeQueued} {
			if hidden[st] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", hidden[st], st))
			}
		}
		out = append(out, "  … and "+strings.Join(parts, ", "))
	}
	return out
}

func nodeLine(n rollout.NodeProgress) string {
	state := n.State
	if n.State == rollout.NodeRunning && n.Step != "" {
		state += ": " + n.Step
	}
	line := fmt.Sprintf("  %-10s %-44s %s %s", n.Group, n.Node, n.AZ, state)
	if n.Reason != "" && n.State != rollout.NodeRunning && n.State != rollout.NodeReplaced {
		line += " — " + firstLine(n.Reason)
	}
	return line
}

func summaryLine(p *rollout.Progress) string {
	s := p.Summary
	line := fmt.Sprintf("rollout: %d done, %d running, %d left", s.Replaced+s.Failed+s.Skipped, s.Running, s.Left()-s.Running)
	if s.Failed > 0 {
		line += fmt.Sprintf(" (%d failed)", s.Failed)
	}
	if !s.ETA.IsZero() {
		line += ", ETA " + s.ETA.Local().Format(time.TimeOnly)
	}
	switch {
	case s.Paused:
		line += " — PAUSED: " + s.Why
	case s.Why != "":
		line += " — holding: " + s.Why
	}
	return line
}

// topLevel drops the executions a running rollout drives itself (its recycles) and
// pause executions (they end by a resume, an abort or their deadline).
func topLevel(exs []engine.Execution) []engine.Execution {
	driven := map[string]bool{}
	for _, ex := range exs {
		if rollout.IsRollout(ex) {
			for _, name := range rollout.RecycleNames(ex) {
				driven[name] = true
			}
		}
	}
	var out []engine.Execution
	for _, ex := range exs {
		if ex.StateMachine == rollout.PauseStateMachineName || (ex.StateMachine == recycle.StateMachineName && driven[ex.Name]) {
			continue
		}
		out = append(out, ex)
	}
	return out
}

func printRunningRollouts(ctx context.Context, eng *engine.Engine, w io.Writer) error {
	exs, err := eng.List(ctx, engine.ListFilter{StateMachine: rollout.StateMachineName, Status: engine.StatusRunning})
	if err != nil {
		return err
	}
	for _, ex := range exs {
		p, err := rollout.ReadProgress(ctx, eng, ex.ID, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s  %s\n", ex.ID, summaryLine(p))
	}
	return nil
}

// printRolloutStatus shows one rollout: every node's state and the summary.
func printRolloutStatus(ctx context.Context, eng *engine.Engine, w io.Writer, ex engine.Execution) error {
	p, err := rollout.ReadProgress(ctx, eng, ex.ID, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "rollout    %s (%s)\nstatus     %s\nstarted    %s\n", ex.ID, ex.Name, ex.Status, ex.StartTime.Local().Format(time.DateTime))
	if ex.Error != "" {
		fmt.Fprintf(w, "error      %s: %s\n", ex.Error, ex.Cause)
	}
	for _, n := range p.Nodes {
		line := nodeLine(n)
		if n.Execution != "" {
			line += "  (recycle " + n.Execution + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, summaryLine(p))
	if p.Summary.Paused {
		fmt.Fprintf(w, "paused: continue with 'recycler resume %s', or 'recycler abort %s'\n", ex.ID, ex.ID)
	}
	return nil
}

// printRolloutHistory is a rollout's timeline: the gate's decisions and each node's
// outcome, in order. 'recycler history' on a node's recycle shows its steps.
func printRolloutHistory(ctx context.Context, eng *engine.Engine, w io.Writer, ex engine.Execution) error {
	hist, err := eng.History(ctx, ex.ID)
	if err != nil {
		return err
	}
	p, err := rollout.ReadProgress(ctx, eng, ex.ID, time.Now())
	if err != nil {
		return err
	}
	nodes := map[string]rollout.NodeProgress{}
	for _, n := range p.Nodes {
		nodes[n.InstanceID] = n
	}
	last := map[string]string{}
	for _, ev := range hist {
		at := fmt.Sprintf("[%8s]", ev.Timestamp.Sub(ex.StartTime).Truncate(time.Second))
		var d struct {
			Output json.RawMessage `json:"output"`
			Error  string          `json:"error"`
			Cause  string          `json:"cause"`
		}
		_ = json.Unmarshal(ev.Details, &d)
		switch ev.Type {
		case "ExecutionStarted":
			fmt.Fprintf(w, "%s rollout %s started: %d node(s)\n", at, ex.Name, len(p.Nodes))
		case "TaskSucceeded":
			var g rollout.GateResult
			if json.Unmarshal(d.Output, &g) != nil || g.Decision == "" {
				continue
			}
			line := g.Decision + ": " + g.Reason
			if last[g.InstanceID] == line {
				continue // a hold checked again: nothing new
			}
			last[g.InstanceID] = line
			fmt.Fprintf(w, "%s %s %s\n", at, nodes[g.InstanceID].Node, line)
		case "PassStateExited":
			var o struct {
				InstanceID string `json:"instanceId"`
				Outcome    string `json:"outcome"`
				Execution  string `json:"execution"`
			}
			if json.Unmarshal(d.Output, &o) == nil && o.Outcome != "" {
				fmt.Fprintf(w, "%s %s %s %s\n", at, nodes[o.InstanceID].Node, o.Outcome, o.Execution)
			}
		case "ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut":
			fmt.Fprintf(w, "%s rollout %s %s %s\n", at, strings.TrimPrefix(ev.Type, "Execution"), d.Error, firstLine(d.Cause))
		}
	}
	fmt.Fprintln(w, summaryLine(p))
	return nil
}
