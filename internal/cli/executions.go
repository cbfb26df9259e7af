package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/stepfn"
)

// newExecutionCmds returns status, list, history, abort and resume: the commands that
// look at or act on executions stored in the embedded engine's state file. Each names
// an execution by its id or its name (a recycle's name is the old instance's id; an
// instance id finds its latest attempt).
func newExecutionCmds(stdin io.Reader, stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{
		newStatusCmd(stdout),
		newListCmd(stdout),
		newHistoryCmd(stdout),
		newAbortExecCmd(stdout, stderr),
		newResumeCmd(stdin, stdout, stderr),
	}
}

func newStatusCmd(stdout io.Writer) *cobra.Command {
	var out string
	status := execCmd("status [ID|NAME]", "Show one execution, or every running one and the orphans (what recycles no execution here runs left changed)", usageArgs(cobra.MaximumNArgs(1)), false,
		func(ctx context.Context, eng executions, f *stateFlags, args []string) error {
			if len(args) == 1 {
				return showExecution(ctx, eng, stdout, args[0], out)
			}
			return showRunning(ctx, eng, f, stdout, out)
		}, func(ctx context.Context, f *stateFlags, args []string) (bool, error) {
			if len(args) > 0 || out == "json" {
				return false, noStateAnswer(stdout, f, args, out)
			}
			fmt.Fprintf(stdout, "no recycle recorded in %s\n", f.statePath)
			return false, printOrphans(ctx, nil, f, stdout)
		})
	outputFlag(status, &out)
	return status
}

// showExecution prints one execution (by id or name) as status does.
func showExecution(ctx context.Context, eng executions, stdout io.Writer, idOrName, out string) error {
	ex, err := findExec(ctx, eng, idOrName)
	if err != nil {
		return err
	}
	if out == "json" {
		v, err := viewOf(ctx, eng, ex)
		if err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	if rollout.IsRollout(ex) {
		return printRolloutStatus(ctx, eng.(*engine.Engine), stdout, ex)
	}
	return printStatus(ctx, eng, stdout, ex)
}

// showRunning prints what status without an argument shows: the running rollouts and
// recycles, then the orphans.
func showRunning(ctx context.Context, eng executions, f *stateFlags, stdout io.Writer, out string) error {
	exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Status: engine.StatusRunning})
	if err != nil {
		return err
	}
	if out == "json" {
		return printViews(ctx, eng, stdout, exs)
	}
	if local, ok := eng.(*engine.Engine); ok {
		if err := printRunningRollouts(ctx, local, stdout); err != nil {
			return err
		}
	}
	if len(exs) == 0 {
		fmt.Fprintln(stdout, "no recycle is running")
	}
	if err := printList(ctx, eng, stdout, exs); err != nil {
		return err
	}
	return printOrphans(ctx, eng, f, stdout)
}

func newListCmd(stdout io.Writer) *cobra.Command {
	var out string
	list := execCmd("list", "List recycles, newest first", usageArgs(cobra.NoArgs), false,
		func(ctx context.Context, eng executions, _ *stateFlags, _ []string) error {
			exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Limit: 100})
			if err != nil {
				return err
			}
			if out == "json" {
				return printViews(ctx, eng, stdout, exs)
			}
			return printList(ctx, eng, stdout, exs)
		})
	outputFlag(list, &out)
	return list
}

func newHistoryCmd(stdout io.Writer) *cobra.Command {
	var out string
	history := execCmd("history ID|NAME", "Show an execution's timeline", usageArgs(cobra.ExactArgs(1)), false,
		func(ctx context.Context, eng executions, _ *stateFlags, args []string) error {
			ex, err := findExec(ctx, eng, args[0])
			if err != nil {
				return err
			}
			if out == "json" {
				return printHistoryJSON(ctx, eng, stdout, ex)
			}
			if rollout.IsRollout(ex) {
				return printRolloutHistory(ctx, eng.(*engine.Engine), stdout, ex)
			}
			hist, err := eng.History(ctx, ex.ID)
			if err != nil {
				return err
			}
			view := newProgress(stdout, false)
			for _, ev := range hist {
				_ = view.event(ev)
			}
			return nil
		})
	outputFlag(history, &out)
	return history
}

// printHistoryJSON prints history -o json: the execution and its events.
func printHistoryJSON(ctx context.Context, eng executions, stdout io.Writer, ex engine.Execution) error {
	hist, err := eng.History(ctx, ex.ID)
	if err != nil {
		return err
	}
	v, err := viewFrom(ctx, eng, ex, hist) // the whole history: read once
	if err != nil {
		return err
	}
	return printJSON(stdout, struct {
		Execution execView       `json:"execution"`
		Events    []engine.Event `json:"events"`
	}{v, hist})
}

func newAbortExecCmd(stdout, stderr io.Writer) *cobra.Command {
	return abortCmd(stdout, stderr, func(ctx context.Context, eng executions, _ *stateFlags, args []string) error {
		ex, err := findExec(ctx, eng, args[0])
		if err != nil {
			return err
		}
		if ex.Status.Done() {
			return usageError{fmt.Errorf("execution %s already ended (%s): nothing to abort", ex.ID, ex.Status)}
		}
		if rollout.IsRollout(ex) {
			return abortRollout(ctx, eng.(*engine.Engine), ex.ID, "aborted with 'recycler abort'", "text", stdout, stderr)
		}
		return abortRecycle(ctx, eng, ex, "aborted with 'recycler abort'", stderr)
	})
}

func newResumeCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	return execCmd("resume [ROLLOUT-ID]", "Continue every unfinished recycle no other process drives, in the foreground until it ends; with a paused rollout's ID, resume it", usageArgs(cobra.MaximumNArgs(1)), true,
		func(ctx context.Context, execs executions, _ *stateFlags, args []string) error {
			eng, ok := execs.(*engine.Engine)
			if !ok {
				return usageError{errors.New("on Step Functions nothing needs resuming: AWS runs the executions ('recycler status --engine stepfunctions' shows them)")}
			}
			if len(args) == 1 {
				return resumeOneRollout(ctx, eng, args[0], stdin, stdout, stderr)
			}
			return resumeAll(ctx, eng, stdin, stdout, stderr)
		})
}

// resumeOneRollout resumes the paused rollout named by idOrName.
func resumeOneRollout(ctx context.Context, eng *engine.Engine, idOrName string, stdin io.Reader, stdout, stderr io.Writer) error {
	ex, err := findExec(ctx, eng, idOrName)
	if err != nil {
		return err
	}
	if !rollout.IsRollout(ex) || ex.Status.Done() {
		return usageError{fmt.Errorf("execution %s is not a running rollout (%s %s): 'recycler resume' without an ID continues every unfinished recycle", ex.ID, ex.StateMachine, ex.Status)}
	}
	if _, err := adoptRunning(ctx, eng, ex.Name, stderr); err != nil {
		return err
	}
	return resumeRollout(ctx, eng, ex, "text", stdin, stdout, stderr)
}

// resumeAll adopts every unfinished execution no other process drives and follows
// each top-level one to its end; the exit code is the worst of them.
func resumeAll(ctx context.Context, eng *engine.Engine, stdin io.Reader, stdout, stderr io.Writer) error {
	exs, err := adoptRunning(ctx, eng, "", stderr)
	if err != nil {
		return err
	}
	exs = topLevel(exs)
	if len(exs) == 0 {
		fmt.Fprintln(stderr, "nothing to resume")
		return nil
	}
	worst := ExitOK
	for _, ex := range exs {
		fmt.Fprintf(stderr, "resuming %s (%s)\n", ex.ID, ex.StateMachine)
		if rollout.IsRollout(ex) {
			err := followRollout(ctx, context.WithoutCancel(ctx), eng, ex.ID, "text", stdin, stdout, stderr)
			var ec exitCoder
			if errors.As(err, &ec) {
				worst = max(worst, ec.ExitCode())
				continue
			}
			if err != nil {
				return err
			}
			continue
		}
		res, err := waitAndFinish(ctx, eng, ex.ID, stderr)
		if err != nil {
			return err
		}
		worst = max(worst, res.code)
	}
	if worst != ExitOK {
		return exitError{code: worst, msg: "not every resumed recycle succeeded"}
	}
	return nil
}

// adoptRunning makes this process drive every running execution (whose name starts
// with prefix) that no live process drives, and returns those; the ones another
// process drives are named and left to it.
func adoptRunning(ctx context.Context, eng *engine.Engine, prefix string, stderr io.Writer) ([]engine.Execution, error) {
	exs, err := eng.List(ctx, engine.ListFilter{Status: engine.StatusRunning, NamePrefix: prefix})
	if err != nil {
		return nil, err
	}
	var mine []engine.Execution
	for _, ex := range exs {
		got, err := eng.Adopt(ctx, ex.ID)
		var driven *engine.DrivenError
		switch {
		case errors.As(err, &driven):
			fmt.Fprintf(stderr, "%s (%s) is driven by another recycler process (%s): left to it; follow it with 'recycler status %s'\n",
				ex.ID, ex.Name, driven.Driver, ex.ID)
			continue
		case err != nil:
			return nil, err
		case got.Status.Done():
			continue
		}
		loggingFrom(ctx).nodes.set(ex.ID, nodeOf(got))
		mine = append(mine, got)
	}
	return mine, nil
}

// abortRecycle aborts a running recycle wherever it is driven: here, by another live
// process (which carries out the request recorded in the state file), or by nobody
// (then the rollback runs here). It waits for the rollback and reports it.
func abortRecycle(ctx context.Context, eng executions, ex engine.Execution, cause string, stderr io.Writer) error {
	logs := loggingFrom(ctx)
	logs.nodes.set(ex.ID, nodeOf(ex))
	if local, ok := eng.(*engine.Engine); ok {
		if d, ok := local.DriverOf(ex.ID); ok && !d.Self {
			fmt.Fprintf(stderr, "abort requested: execution %s is driven by another recycler process (%s); it stops the running step, waits for it to return, then rolls back…\n", ex.ID, d)
		} else {
			fmt.Fprintf(stderr, "aborting execution %s: no process drives it, so the rollback runs here…\n", ex.ID)
		}
	}
	logs.log.Info("abort requested", logKeyExecution, ex.ID)
	stopped, err := eng.Stop(ctx, ex.ID, recycle.ErrAborted, cause)
	if ctx.Err() != nil {
		msg := fmt.Sprintf("interrupted: the abort of %s is recorded in the state file; whoever drives the execution (or the next 'recycler resume') rolls it back", ex.ID)
		fmt.Fprintln(stderr, msg)
		return exitError{code: ExitNeedsPerson, msg: msg}
	}
	if err != nil {
		return fmt.Errorf("abort %s: %w", ex.ID, err)
	}
	logs.nodes.set(stopped.RollbackID, nodeOf(ex))
	res, err := finish(ctx, eng, stopped, stderr)
	if err != nil {
		return err
	}
	return exitIfNot(res)
}

// execCmd builds one execution command. Commands that only look (run=false) open the
// engine passively: they never drive an execution nor change the file as a side
// effect. Commands that act (run=true) drive only what they adopt or start.
//
// noState, if given, answers for a state file that does not exist: proceed=true
// goes on and creates it (abort --node), false ends the command with err.
func execCmd(use, short string, args cobra.PositionalArgs, run bool, fn func(context.Context, executions, *stateFlags, []string) error,
	noState ...func(context.Context, *stateFlags, []string) (proceed bool, err error)) *cobra.Command {
	f := &stateFlags{}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if err := f.validate(); err != nil {
				return err
			}
			if f.onStepFunctions() {
				c, err := f.stepFunctions(ctx)
				if err != nil {
					return err
				}
				return fn(ctx, c, f, a)
			}
			// A state file that does not exist holds nothing: say so, and create nothing.
			if _, err := os.Stat(f.statePath); errors.Is(err, os.ErrNotExist) {
				if len(noState) == 0 {
					out := ""
					if o := cmd.Flags().Lookup("output"); o != nil {
						out = o.Value.String()
					}
					return noStateAnswer(cmd.OutOrStdout(), f, a, out)
				}
				if proceed, err := noState[0](ctx, f, a); !proceed {
					return err
				}
			}
			var tasks func() *recycle.Tasks
			if run {
				t, err := f.buildTasks(ctx)
				if err != nil {
					return err
				}
				tasks = func() *recycle.Tasks { return t }
			}
			eng, err := f.openEngine(ctx, tasks, loggingFrom(ctx).log)
			if err != nil {
				return err
			}
			defer eng.Close()
			return fn(ctx, eng, f, a)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// noStateAnswer is what a command says about a state file that does not exist.
func noStateAnswer(w io.Writer, f *stateFlags, args []string, output string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("no execution %q: no recycle has been recorded in %s yet (see --state and 'recycler list')", args[0], f.statePath)}
	}
	if output == "json" {
		return printJSON(w, []execView{})
	}
	fmt.Fprintf(w, "no recycle recorded in %s\n", f.statePath)
	return nil
}

// outputFlag adds -o text|json to a command that reads executions, validated before
// anything else runs.
func outputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "text", "output format on stdout: text or json")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if *out != "text" && *out != "json" {
			return badInput("-o %q: use text or json", *out)
		}
		return nil
	}
}

// findExec finds an execution by id, by name, or (an instance id) the latest attempt
// at recycling that instance.
func findExec(ctx context.Context, eng executions, ref string) (engine.Execution, error) {
	ex, err := eng.Describe(ctx, ref) // Step Functions also finds a name this way
	if !errors.Is(err, engine.ErrNotFound) {
		return ex, err
	}
	all, err := eng.List(ctx, engine.ListFilter{Name: ref})
	if err != nil {
		return engine.Execution{}, err
	}
	// A recycle and its rollback share the name: the recycle is meant.
	var named *engine.Execution
	for i, ex := range all {
		if ex.Name != ref {
			continue
		}
		if ex.StateMachine == recycle.StateMachineName {
			return ex, nil
		}
		if named == nil {
			named = &all[i]
		}
	}
	if named != nil {
		return *named, nil
	}
	if cloud.IsInstanceID(ref) {
		if ex, ok, err := latestAttempt(ctx, eng, ref); err != nil || ok {
			return ex, err
		}
	}
	where := "in this state file"
	if c, ok := eng.(*stepfn.Client); ok {
		where = "of state machine " + c.StateMachine()
	}
	return engine.Execution{}, usageError{fmt.Errorf("no execution %q %s (by id or name): see 'recycler list'", ref, where)}
}

// latestAttempt returns the newest recycle execution of instance (by name).
func latestAttempt(ctx context.Context, eng executions, instance string) (engine.Execution, bool, error) {
	exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, NamePrefix: instance})
	if err != nil {
		return engine.Execution{}, false, err
	}
	best, found := engine.Execution{}, 0
	for _, ex := range exs {
		if n, ok := recycle.AttemptOf(ex.Name, instance); ok && n > found && ex.StateMachine == recycle.StateMachineName {
			best, found = ex, n
		}
	}
	return best, found > 0, nil
}

func printList(ctx context.Context, eng executions, w io.Writer, exs []engine.Execution) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXECUTION\tNAME\tNODE\tSTATUS\tSTEP\tOUTCOME\tSTARTED\tELAPSED\tERROR")
	for _, ex := range exs {
		v, err := viewOf(ctx, eng, ex)
		if err != nil {
			return err
		}
		end := ex.StopTime
		if end.IsZero() {
			end = time.Now()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ex.ID, ex.Name, orDash(v.Node), ex.Status, orDash(v.Step), v.Outcome,
			ex.StartTime.Local().Format(time.DateTime), end.Sub(ex.StartTime).Truncate(time.Second), ex.Error)
	}
	return tw.Flush()
}

func printStatus(ctx context.Context, eng executions, w io.Writer, ex engine.Execution) error {
	hist, err := eng.History(ctx, ex.ID)
	if err != nil {
		return err
	}
	st := recycle.StateFromHistory(hist)
	fmt.Fprintf(w, "execution  %s\nname       %s\nstatus     %s\nstarted    %s\n", ex.ID, ex.Name, ex.Status, ex.StartTime.Local().Format(time.DateTime))
	if local, ok := eng.(*engine.Engine); ok && !ex.Status.Done() {
		if d, ok := local.DriverOf(ex.ID); ok {
			fmt.Fprintf(w, "driven by  %s\n", d)
		} else {
			fmt.Fprintf(w, "driven by  nobody: continue it with 'recycler resume'\n")
		}
		if at, err := local.AbortRequested(ctx, ex.ID); err == nil && at != nil {
			fmt.Fprintf(w, "abort      requested at %s; the running step returns first, then the rollback starts\n", at.Local().Format(time.DateTime))
		}
	}
	if st.Target != nil {
		fmt.Fprintf(w, "node       %s (instance %s, group %s)\n", st.Target.Node, st.Target.InstanceID, st.Target.Group)
	}
	if st.Replacement != nil && len(st.Replacement.Instances) > 0 {
		fmt.Fprintf(w, "replacement %v ready=%v\n", st.Replacement.Instances, st.Replacement.Done)
	}
	if st.Drain != nil {
		fmt.Fprintf(w, "drain      %s\n", st.Drain.Line(time.Now()))
	}
	if ex.Error != "" {
		fmt.Fprintf(w, "error      %s: %s\n", ex.Error, ex.Cause)
	}
	steps := recycle.StepDurations(hist)
	for _, step := range recycle.Steps {
		if d, ok := steps[step]; ok {
			fmt.Fprintf(w, "  %-16s %s\n", step, d)
		}
	}
	return nil
}

// waitAndFinish waits for an execution to end and reports its outcome.
func waitAndFinish(ctx context.Context, eng executions, id string, stderr io.Writer) (result, error) {
	fin, err := eng.Wait(ctx, id)
	if err != nil {
		return result{}, fmt.Errorf("wait for execution %s: %w", id, err)
	}
	return finish(ctx, eng, fin, stderr)
}

func exitIfNot(res result) error {
	if res.code != ExitOK {
		return exitError{code: res.code, msg: res.Message}
	}
	return nil
}
