package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/stepfn"
)

// newExecutionCmds returns status, list, history, abort and resume: the commands that
// look at or act on executions stored in the embedded engine's state file.
func newExecutionCmds(stdin io.Reader, stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{
		execCmd("status [ID]", "Show one execution, or every running one", usageArgs(cobra.MaximumNArgs(1)), false,
			func(ctx context.Context, eng executions, _ *stateFlags, args []string) error {
				if len(args) == 1 {
					ex, err := describeExec(ctx, eng, args[0])
					if err != nil {
						return err
					}
					if rollout.IsRollout(ex) {
						return printRolloutStatus(ctx, eng.(*engine.Engine), stdout, ex)
					}
					return printStatus(ctx, eng, stdout, ex)
				}
				if local, ok := eng.(*engine.Engine); ok {
					if err := printRunningRollouts(ctx, local, stdout); err != nil {
						return err
					}
				}
				exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Status: engine.StatusRunning})
				if err != nil {
					return err
				}
				if len(exs) == 0 {
					fmt.Fprintln(stdout, "no recycle is running")
				}
				return printList(stdout, exs)
			}),
		execCmd("list", "List recycles, newest first", usageArgs(cobra.NoArgs), false,
			func(ctx context.Context, eng executions, _ *stateFlags, _ []string) error {
				exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Limit: 100})
				if err != nil {
					return err
				}
				return printList(stdout, exs)
			}),
		execCmd("history ID", "Show an execution's timeline", usageArgs(cobra.ExactArgs(1)), false,
			func(ctx context.Context, eng executions, _ *stateFlags, args []string) error {
				ex, err := describeExec(ctx, eng, args[0])
				if err != nil {
					return err
				}
				if rollout.IsRollout(ex) {
					return printRolloutHistory(ctx, eng.(*engine.Engine), stdout, ex)
				}
				hist, err := eng.History(ctx, args[0])
				if err != nil {
					return err
				}
				view := newProgress(stdout, false)
				for _, ev := range hist {
					_ = view.event(ev)
				}
				return nil
			}),
		execCmd("abort ID", "Abort a running recycle and roll back what it did", usageArgs(cobra.ExactArgs(1)), true,
			func(ctx context.Context, eng executions, _ *stateFlags, args []string) error {
				ex, err := describeExec(ctx, eng, args[0])
				if err != nil {
					return err
				}
				if ex.Status.Done() {
					return usageError{fmt.Errorf("execution %s already ended (%s): nothing to abort", ex.ID, ex.Status)}
				}
				if rollout.IsRollout(ex) {
					return abortRollout(ctx, eng.(*engine.Engine), ex.ID, "aborted with 'recycler abort'", "text", stdout, stderr)
				}
				if _, err := eng.Stop(ctx, ex.ID, recycle.ErrAborted, "aborted with 'recycler abort'"); err != nil {
					return fmt.Errorf("abort %s: %w", ex.ID, err)
				}
				res, err := waitAndFinish(ctx, eng, ex.ID, stderr)
				if err != nil {
					return err
				}
				return exitIfNot(res)
			}),
		execCmd("resume [ROLLOUT-ID]", "Continue every unfinished recycle in the foreground until it ends; with a paused rollout's ID, resume it", usageArgs(cobra.MaximumNArgs(1)), true,
			func(ctx context.Context, execs executions, _ *stateFlags, args []string) error {
				eng, ok := execs.(*engine.Engine)
				if !ok {
					return usageError{errors.New("on Step Functions nothing needs resuming: AWS runs the executions ('recycler status --engine stepfunctions' shows them)")}
				}
				if len(args) == 1 {
					ex, err := describeExec(ctx, eng, args[0])
					if err != nil {
						return err
					}
					if !rollout.IsRollout(ex) || ex.Status.Done() {
						return usageError{fmt.Errorf("execution %s is not a running rollout (%s %s): 'recycler resume' without an ID continues every unfinished recycle", ex.ID, ex.StateMachine, ex.Status)}
					}
					return resumeRollout(ctx, eng, ex, "text", stdin, stdout, stderr)
				}
				exs, err := eng.List(ctx, engine.ListFilter{Status: engine.StatusRunning})
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
			}),
	}
}

// execCmd builds one execution command. Commands that only look (run=false) open the
// engine passively: they never resume or run an execution as a side effect.
func execCmd(use, short string, args cobra.PositionalArgs, run bool, fn func(context.Context, executions, *stateFlags, []string) error) *cobra.Command {
	f := &stateFlags{}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
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
				if len(a) > 0 {
					return usageError{fmt.Errorf("no execution %q: no recycle has been recorded in %s yet (see --state and 'recycler list')", a[0], f.statePath)}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "no recycle recorded in %s\n", f.statePath)
				return nil
			}
			var tasks func() *recycle.Tasks
			if run {
				t, err := f.buildTasks(ctx)
				if err != nil {
					return err
				}
				tasks = func() *recycle.Tasks { return t }
			}
			eng, err := f.openEngine(ctx, tasks, log)
			if err != nil {
				return err
			}
			defer eng.Close()
			return fn(ctx, eng, f, a)
		},
	}
	f.register(cmd.Flags())
	addEnvDefaultsHook(cmd)
	return cmd
}

func describeExec(ctx context.Context, eng executions, id string) (engine.Execution, error) {
	ex, err := eng.Describe(ctx, id)
	if errors.Is(err, engine.ErrNotFound) {
		where := "in this state file"
		if c, ok := eng.(*stepfn.Client); ok {
			where = "of state machine " + c.StateMachine()
		}
		return ex, usageError{fmt.Errorf("no execution %q %s: see 'recycler list'", id, where)}
	}
	return ex, err
}

func printList(w io.Writer, exs []engine.Execution) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXECUTION\tTARGET\tSTATUS\tSTARTED\tELAPSED\tERROR")
	for _, ex := range exs {
		var st recycle.State
		_ = json.Unmarshal(ex.Input, &st)
		end := ex.StopTime
		if end.IsZero() {
			end = time.Now()
		}
		target := st.Request.Target()
		if target == "" {
			target = ex.Name // Step Functions lists no input; its recycles are named from the instance
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ex.ID, target, ex.Status,
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
	fmt.Fprintf(w, "execution  %s\nstatus     %s\nstarted    %s\n", ex.ID, ex.Status, ex.StartTime.Local().Format(time.DateTime))
	if st.Target != nil {
		fmt.Fprintf(w, "node       %s (instance %s, group %s)\n", st.Target.Node, st.Target.InstanceID, st.Target.Group)
	}
	if st.Replacement != nil && len(st.Replacement.Instances) > 0 {
		fmt.Fprintf(w, "replacement %v ready=%v\n", st.Replacement.Instances, st.Replacement.Done)
	}
	if st.Drain != nil {
		fmt.Fprintf(w, "drain      %s\n", drainLine(*st.Drain))
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
