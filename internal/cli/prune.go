package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/engine"
)

func newPruneCmd(stdout io.Writer) *cobra.Command {
	f := &stateFlags{}
	var olderThan string
	cmd := &cobra.Command{
		Use:   "prune --older-than AGE",
		Short: "Remove executions that ended more than AGE ago, with their history",
		Long: `Remove from the state file every execution (recycle, rollback, rollout) that ended more
than AGE ago (e.g. 30d, 72h), with its history. Running executions are never touched,
nor an execution whose rollback ended more recently. Executions of other processes go on
while it runs.`,
		Example: "  recycler prune --older-than 30d",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			age, err := parseAge(olderThan)
			if err != nil {
				return err
			}
			if _, err := os.Stat(f.statePath); errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(stdout, "no recycle recorded in %s: nothing to prune\n", f.statePath)
				return nil
			}
			ctx := cmd.Context()
			// Open to write, drive nothing: no registry, nothing adopted.
			eng, err := engine.Open(ctx, engine.Options{Path: f.statePath, Logger: loggingFrom(ctx).log})
			if err != nil {
				return fmt.Errorf("open state %s: %w", f.statePath, err)
			}
			defer eng.Close()
			cut := time.Now().Add(-age)
			got, err := eng.Prune(ctx, cut)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pruned %d execution(s) that ended before %s (%d history events, %d stored documents)\n",
				got.Executions, cut.Local().Format(time.DateTime), got.Events, got.Documents)
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&olderThan, "older-than", "", "remove executions that ended more than this long ago: a duration such as 30d or 72h (required)")
	return cmd
}

// parseAge reads a Go duration or a number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, badInput("--older-than is required: how long ago an execution must have ended to be removed, e.g. --older-than 30d")
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil {
			return 0, badInput("--older-than %q: use a number of days (30d) or a duration (72h)", s)
		}
		d = time.Duration(n * 24 * float64(time.Hour))
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, badInput("--older-than %q: use a number of days (30d) or a duration (72h)", s)
		}
	}
	if d <= 0 {
		return 0, badInput("--older-than %q must be positive", s)
	}
	return d, nil
}
