// Package cli defines recycler's commands. main only calls Execute.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Exit codes shared by every command; documented in the README.
const (
	ExitOK          = 0
	ExitFailed      = 1 // the operation failed and was rolled back
	ExitBadInput    = 2 // bad input or a refused precondition: nothing changed
	ExitNeedsPerson = 3 // left in a state that needs a person (explained in the output)
)

// Version is set at build time with -ldflags "-X github.com/recycler/recycler/internal/cli.Version=…".
var Version = ""

// usageError marks errors caused by the caller's input; they exit with ExitBadInput.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// badInput wraps err so that Execute exits with ExitBadInput.
func badInput(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// Execute runs the command line args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ue usageError
	var ce exitCoder
	if errors.As(err, &ce) {
		return ce.ExitCode() // the command has already explained itself
	}
	fmt.Fprintf(stderr, "recycler: %v\n", err)
	switch {
	case errors.As(err, &ue):
		return ExitBadInput
	default:
		return ExitFailed
	}
}

// exitCoder lets a command choose its exit code (e.g. ExitNeedsPerson).
type exitCoder interface{ ExitCode() int }

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	logs := &logFlags{}
	root := &cobra.Command{
		Use:   "recycler",
		Short: "Replace Kubernetes worker nodes with zero downtime",
		Long: `Recycler replaces Kubernetes worker nodes that run on Auto Scaling groups with zero
downtime: it fences the node, surges a replacement, waits until the replacement is Ready,
drains the old node with PodDisruptionBudgets honoured (waiting for long-running pods you
select), and retires the old instance. Every step is durable and rolls back on failure.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without this, cobra reports an unknown command as a generic failure (exit 1).
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return badInput("unknown command %q (see 'recycler --help')", args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
		// Every command: flags default from RECYCLER_<FLAG>, and one logger to stderr.
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if err := applyEnvDefaults(c.Flags()); err != nil {
				return err
			}
			log, nodes, err := logs.logger(stderr)
			if err != nil {
				return err
			}
			c.SetContext(withLogging(c.Context(), logging{log: log, nodes: nodes}))
			return nil
		},
	}
	logs.register(root.PersistentFlags())
	// Flag parse errors are the caller's mistake: exit 2, not 1.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newVersionCmd(stdout))
	root.AddCommand(newSimCmd(stdin, stdout, stderr))
	root.AddCommand(newControlPlaneCmd(stdout, stderr))
	root.AddCommand(newASLCmd(stdout))
	root.AddCommand(newRBACCmd(stdout))
	root.AddCommand(newRecycleCmd(stdin, stdout, stderr))
	root.AddCommand(newPlanCmd(stdout))
	root.AddCommand(newRolloutCmd(stdin, stdout, stderr))
	root.AddCommand(newExecutionCmds(stdin, stdout, stderr)...)
	root.AddCommand(newPruneCmd(stdout))
	root.AddCommand(newDemoCmd(stdout, stderr))
	root.AddCommand(newServeCmd())
	return root
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of recycler",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, "recycler", versionString())
			return err
		},
	}
}

func versionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// usageArgs makes cobra's positional-argument errors exit with ExitBadInput.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
		}
		return nil
	}
}
