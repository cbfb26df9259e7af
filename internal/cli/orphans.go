package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
)

// Orphans: what a recycle changed that no execution of this state file runs — its
// state file lost, or another one's. `status` lists them from the records on the
// Nodes and the instances; `abort --node` rolls one back from those records.

// abortCmd is `abort ID | abort --node NODE`; byID aborts an execution of this
// state file.
func abortCmd(stdout, stderr io.Writer, byID func(context.Context, executions, *stateFlags, []string) error) *cobra.Command {
	var node string
	cmd := execCmd("abort ID|NAME | --node NODE", "Abort a running recycle and roll back what it did; --node rolls back the recycle recorded on a node (an orphan)",
		usageArgs(cobra.MaximumNArgs(1)), true,
		func(ctx context.Context, eng executions, f *stateFlags, args []string) error {
			switch {
			case node != "" && len(args) > 0:
				return badInput("give an execution id or --node, not both")
			case node != "":
				return abortNode(ctx, eng, f, node, stderr)
			case len(args) == 0:
				return badInput("name the execution to abort (see 'recycler status'), or --node NODE for a node a recycle left fenced")
			}
			return byID(ctx, eng, f, args)
		}, func(_ context.Context, f *stateFlags, args []string) (bool, error) {
			switch {
			case node != "":
				return true, nil // the rollback of an orphan is recorded in a new state file
			case len(args) > 0:
				return false, noStateAnswer(stdout, f, args, "text")
			}
			return false, badInput("name the execution to abort, or --node NODE")
		})
	cmd.Flags().StringVar(&node, "node", "", "roll back the recycle recorded on this node (its fence annotation, its instance's and group's records), also without its state file")
	return cmd
}

// runningHere reports whether execution id runs in eng (nil: no state file).
func runningHere(ctx context.Context, eng executions) func(string) bool {
	return func(id string) bool {
		if eng == nil {
			return false
		}
		ex, err := eng.Describe(ctx, id)
		return err == nil && !ex.Status.Done()
	}
}

// printOrphans lists the orphans; without cluster or AWS access it says so and
// succeeds (the executions were listed already).
func printOrphans(ctx context.Context, eng executions, f *stateFlags, w io.Writer) error {
	t, err := f.buildTasks(ctx)
	if err != nil {
		fmt.Fprintf(w, "orphans not checked: %v\n", err)
		return nil
	}
	orphans, err := t.Orphans(ctx, runningHere(ctx, eng))
	if err != nil {
		return fmt.Errorf("look for orphans: %w", err)
	}
	if len(orphans) == 0 {
		fmt.Fprintln(w, "no orphans: every node fenced and every instance in Standby by Recycler belongs to a running execution of this state file")
		return nil
	}
	fmt.Fprintf(w, "\n%d orphan(s): changed by a recycle no execution of this state file runs\n", len(orphans))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tINSTANCE\tGROUP\tEXECUTION\tSINCE\tCHANGED")
	for _, o := range orphans {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", orDash(o.Node), orDash(o.Instance), orDash(o.Group), o.Execution,
			o.Since.Local().Format(time.DateTime), strings.Join(o.What, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "roll one back with: recycler abort --node NODE")
	return nil
}

// abortNode rolls back the recycle recorded on node: an execution of this state
// file is aborted as `abort ID` does; an orphan is rolled back from the records on
// the node, its instance and the group, by the same rollback state machine.
func abortNode(ctx context.Context, eng executions, f *stateFlags, node string, stderr io.Writer) error {
	t, err := f.buildTasks(ctx)
	if err != nil {
		return err
	}
	exec, st, err := t.OrphanState(ctx, node)
	switch {
	case errors.Is(err, recycle.ErrNoRecords), errors.Is(err, kube.ErrNodeNotFound), errors.Is(err, kube.ErrInvalidNodeName):
		return usageError{fmt.Errorf("abort --node %s: %w (nothing to roll back; 'recycler status' lists the orphans)", node, err)}
	case err != nil:
		return fmt.Errorf("abort --node %s: %w", node, err)
	}
	if runningHere(ctx, eng)(exec) {
		ex, err := eng.Describe(ctx, exec)
		if err != nil {
			return err
		}
		return abortRecycle(ctx, eng, ex, "aborted with 'recycler abort --node'", stderr)
	}
	local, ok := eng.(*engine.Engine)
	if !ok {
		return badInput("execution %s of node %s is not running on Step Functions: roll the orphan back with the embedded engine (drop --engine stepfunctions)", exec, st.Target.Node)
	}
	input, err := json.Marshal(map[string]any{
		"Execution": map[string]any{"Id": exec}, "Error": recycle.ErrAborted,
		"Cause": "aborted with 'recycler abort --node " + st.Target.Node + "' from the records on the node and the group", "StateInput": st,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "rolling back node %s (execution %s, not in this state file) from its records…\n", st.Target.Node, exec)
	rb, err := local.Start(ctx, engine.StartInput{StateMachine: recycle.RollbackStateMachineName, Definition: recycle.RollbackDefinition(),
		Name: "abort-node-" + st.Target.Node + "-" + exec, Input: input})
	if err != nil {
		return fmt.Errorf("start the rollback of %s: %w", st.Target.Node, err)
	}
	fin, err := local.Wait(ctx, rb.ID)
	if err != nil {
		return fmt.Errorf("wait for rollback %s: %w", rb.ID, err)
	}
	hist, err := local.History(ctx, rb.ID)
	if err != nil {
		return err
	}
	if fin.Status != engine.StatusSucceeded {
		return exitError{code: ExitNeedsPerson, msg: fmt.Sprintf("the rollback of node %s did not finish (%s: %s): a person must check the node and group; see 'recycler history %s'",
			st.Target.Node, fin.Error, fin.Cause, rb.ID)}
	}
	msg := fmt.Sprintf("aborted and rolled back: node %s is back in service (execution %s, rollback %s)", st.Target.Node, exec, rb.ID) +
		notes(recycle.StateFromHistory(hist).Rollback)
	fmt.Fprintln(stderr, msg)
	return exitError{code: ExitFailed, msg: msg}
}
