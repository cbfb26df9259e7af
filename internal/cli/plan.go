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
	"github.com/spf13/pflag"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/window"
)

// fleetFlags select and pace many recycles: `recycler plan` and `recycler rollout`.
type fleetFlags struct {
	stateFlags
	requestFlags
	groups        []string
	groupTags     map[string]string
	nodes         string
	drifted, all  bool
	olderThan     string
	maxInFlight   string
	maxUnhealthy  string
	maxSurge      int
	onFailure     string
	windows       []string
	fenceBatch    bool
	pauseTimeout  time.Duration
	recheck       int
	bootEstimate  time.Duration
	drainEstimate time.Duration
	output        string
	fromEnv       []string
}

func (f *fleetFlags) register(fs *pflag.FlagSet) {
	f.stateFlags.register(fs)
	f.requestFlags.register(fs)
	fs.StringArrayVar(&f.groups, "group", nil, "Auto Scaling group to roll (repeatable)")
	fs.StringToStringVar(&f.groupTags, "group-tag", nil, "roll the groups carrying this tag, key=value (repeatable: all must match)")
	fs.StringVar(&f.nodes, "nodes", "", "node label selector: only these nodes (alone: their groups)")
	fs.BoolVar(&f.drifted, "drifted", false, "replace nodes whose launch template (id/name + version, $Latest/$Default resolved) or launch configuration differs from their group's")
	fs.StringVar(&f.olderThan, "older-than", "", "replace nodes whose instance was launched longer ago than this (30d, 2w, 36h)")
	fs.BoolVar(&f.all, "all", false, "replace every selected node")
	fs.StringVar(&f.maxInFlight, "max-in-flight", "1", "recycles at once per group: a number or a percentage of the group (25%)")
	fs.StringVar(&f.maxUnhealthy, "max-unhealthy", rollout.DefaultMaxUnhealthy, "before each recycle: hold while more of the group than this are NotReady, being deleted, or fenced by anyone else (number or percentage)")
	fs.IntVar(&f.maxSurge, "max-surge", 0, "at most this many surplus instances (recycles) at once across all groups (0: no cap beyond --max-in-flight)")
	fs.StringVar(&f.onFailure, "on-failure", string(rollout.OnFailurePause), "when a recycle fails: pause (until 'recycler resume ID'), continue, or abort (roll back the running ones)")
	fs.StringArrayVar(&f.windows, "window", nil, "start recycles only inside this maintenance window, e.g. \"Mon-Fri 01:00-05:00 Europe/Berlin\" (repeatable)")
	fs.BoolVar(&f.fenceBatch, "fence-batch", false, "cordon each batch of --max-in-flight nodes before its first recycle starts, so pods do not move twice")
	fs.DurationVar(&f.pauseTimeout, "pause-timeout", rollout.DefaultPauseTimeout, "a pause not resumed within this aborts the rollout; a health hold longer than this becomes a pause")
	fs.IntVar(&f.recheck, "recheck-seconds", rollout.DefaultCheckSeconds, "how often a held rollout checks again (health budget, surge cap)")
	fs.DurationVar(&f.bootEstimate, "boot-estimate", 0, "boot time for the estimate (default: measured from the group's recent launches)")
	fs.DurationVar(&f.drainEstimate, "drain-estimate", 0, "drain time for the estimate (default: measured from the group's past recycles)")
	fs.StringVarP(&f.output, "output", "o", "text", "text or json")
}

// options validates every flag into rollout options; nothing has been touched yet.
func (f *fleetFlags) options() (rollout.Options, error) {
	var errs []error
	o := rollout.Options{
		Selection: rollout.Selection{Groups: f.groups, GroupTags: f.groupTags, Nodes: f.nodes, Drifted: f.drifted, All: f.all},
		Settings: rollout.Settings{MaxSurge: f.maxSurge, OnFailure: rollout.OnFailure(f.onFailure), Windows: f.windows,
			FenceBatch: f.fenceBatch, PauseTimeout: recycle.Duration(f.pauseTimeout), CheckSeconds: f.recheck},
		BootEstimate: f.bootEstimate, DrainEstimate: f.drainEstimate, Request: f.request(""),
	}
	if f.output != "text" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: use text or json", f.output))
	}
	if err := f.check(); err != nil {
		errs = append(errs, err)
	}
	if f.olderThan != "" {
		d, err := rollout.ParseAge(f.olderThan)
		if err != nil {
			errs = append(errs, fmt.Errorf("--older-than: %w", err))
		}
		o.OlderThan = recycle.Duration(d)
	}
	var err error
	if o.MaxInFlight, err = rollout.ParseAmount(f.maxInFlight); err != nil {
		errs = append(errs, fmt.Errorf("--max-in-flight %w", err))
	} else if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.MaxUnhealthy, err = rollout.ParseAmount(f.maxUnhealthy); err != nil {
		errs = append(errs, fmt.Errorf("--max-unhealthy %w", err))
	}
	if len(errs) > 0 {
		if len(f.fromEnv) > 0 {
			errs = append(errs, fmt.Errorf("(flags not given on the command line came from the environment: %s)", strings.Join(f.fromEnv, " ")))
		}
		return o, usageError{errors.Join(errs...)}
	}
	return o, nil
}

func newPlanCmd(stdout io.Writer) *cobra.Command {
	f := &fleetFlags{}
	cmd := &cobra.Command{
		Use:   "plan (--group NAME | --group-tag K=V | --nodes SELECTOR) (--drifted | --older-than AGE | --all)",
		Short: "Show what a rollout would do: candidates and why, order, batches, estimate. Changes nothing",
		Long: `Select nodes of Auto Scaling groups (by name, by tag, or by a node label selector) that a
policy names — drifted from their group's launch template, older than an age, or all — and
print every candidate with why, the order (zones take turns), the batches of --max-in-flight,
the maintenance windows it would use, and an estimated duration from the group's measured
boot and drain times. Nodes it would skip say why. Exactly what 'recycler rollout' with the
same flags runs.`,
		Example: `  recycler plan --group ng-1 --drifted
  recycler plan --group-tag team=payments --older-than 30d --max-in-flight 25% --window "Mon-Fri 01:00-05:00 Europe/Berlin"
  recycler plan --nodes node.kubernetes.io/instance-type=m5.large --all -o json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.fromEnv = fromEnvironment(cmd.Flags())
			o, err := f.options()
			if err != nil {
				return err
			}
			p, _, err := f.plan(cmd.Context(), o)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeJSON(stdout, p)
			}
			printPlanText(stdout, p)
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// plan selects and plans; a refusal (no such group, no headroom) is bad input.
func (f *fleetFlags) plan(ctx context.Context, o rollout.Options) (*rollout.Plan, *recycle.Tasks, error) {
	tasks, err := f.buildTasks(ctx)
	if err != nil {
		return nil, nil, err
	}
	fleet := fleetTasks(tasks)
	sel, err := rollout.Select(ctx, fleet.Cloud, fleet.Cluster, o.Selection, tasks.Clock.Now())
	if errors.Is(err, cloud.ErrNotFound) || errors.Is(err, cloud.ErrValidation) {
		return nil, nil, usageError{fmt.Errorf("select nodes: %w (nothing was changed)", err)}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("select nodes: %w", err)
	}
	p, err := rollout.NewPlan(sel, o)
	if err != nil {
		return nil, nil, usageError{err}
	}
	return p, tasks, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printPlanText(w io.Writer, p *rollout.Plan) {
	groups := 0
	for _, g := range p.Groups {
		if len(g.Items) > 0 {
			groups++
		}
	}
	fmt.Fprintf(w, "Plan: replace %d node(s) in %d group(s) (%s); %d skipped\n", p.Candidates(), groups, policyText(p.Selection), len(p.Skipped))
	if len(p.Settings.Windows) > 0 {
		set, _ := window.ParseAll(p.Settings.Windows)
		fmt.Fprintf(w, "Windows: %s (", strings.Join(set.Strings(), "; "))
		if set.Open(p.CreatedAt) {
			fmt.Fprintf(w, "open now, until %s)\n", set.OpenUntil(p.CreatedAt).Local().Format(time.DateTime))
		} else {
			fmt.Fprintf(w, "next opens %s)\n", set.NextOpen(p.CreatedAt).Local().Format(time.DateTime))
		}
	}
	fmt.Fprintf(w, "Budget: hold while more than %s of a group is unhealthy; on a failed recycle: %s", p.Settings.MaxUnhealthy, p.Settings.OnFailure)
	if p.Settings.MaxSurge > 0 {
		fmt.Fprintf(w, "; at most %d surplus instances at once", p.Settings.MaxSurge)
	}
	if p.Settings.FenceBatch {
		fmt.Fprint(w, "; each batch cordoned up front")
	}
	fmt.Fprintln(w)
	for _, g := range p.Groups {
		fmt.Fprintf(w, "\nGroup %s: desired %d, max %d; %d to replace, %d up to date; %d at a time → %d batch(es)\n",
			g.Name, g.Desired, g.MaxSize, len(g.Items), g.UpToDate, g.MaxInFlight, g.Batches)
		fmt.Fprintf(w, "  boot ~%s (%s); drain ~%s (%s)\n", g.Boot.Duration, g.Boot.Source, g.Drain.Duration, g.Drain.Source)
		if len(g.Items) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tBATCH\tNODE\tINSTANCE\tAZ\tSTART\tWHY")
		for _, it := range g.Items {
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%s\t%s\t+%s\t%s\n", it.Order+1, it.Batch+1, it.Node, it.InstanceID, it.AZ,
				it.Start.Sub(p.CreatedAt).Round(time.Second), strings.Join(it.Reasons, "; "))
		}
		tw.Flush()
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintln(w, "\nSkipped:")
		for _, s := range p.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", orDash(strings.TrimSpace(s.Node+" "+s.InstanceID)), s.Reason)
		}
	}
	e := p.Estimate
	fmt.Fprintf(w, "\nEstimate: %s (ends ~%s)", time.Duration(e.Duration).Round(time.Second), e.End.Local().Format(time.DateTime))
	if e.Waiting > 0 {
		fmt.Fprintf(w, ", of which %s waiting for windows", time.Duration(e.Waiting).Round(time.Second))
	}
	fmt.Fprintln(w)
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func policyText(s rollout.Selection) string {
	var parts []string
	if s.All {
		parts = append(parts, "--all")
	}
	if s.Drifted {
		parts = append(parts, "--drifted")
	}
	if s.OlderThan > 0 {
		parts = append(parts, "--older-than "+time.Duration(s.OlderThan).String())
	}
	return strings.Join(parts, " or ")
}
