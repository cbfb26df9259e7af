package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/stepfn"
)

type recycleFlags struct {
	stateFlags
	requestFlags
	dryRun  bool
	output  string
	fromEnv []string // NAME=value of the flags set from RECYCLER_* variables
}

// requestFlags are the options of one recycle; `recycler rollout` passes them through
// to each of its recycles.
type requestFlags struct {
	selector           string
	namespaces         []string
	maxWait            time.Duration
	evictTimeout       time.Duration
	onTimeout          string
	evictOthers        bool
	deleteUnmanaged    bool
	replacementTimeout time.Duration
	workloadTimeout    time.Duration
	forceGrace         time.Duration
	retire             string
	noSurge            bool
	allowRaiseMax      bool
	keepReplacement    bool
	readyLabels        map[string]string
	checkSeconds       int
	rollbackTimeout    time.Duration
}

func (f *requestFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.selector, "selector", "", "label selector of the pods to wait for (long-running jobs); they are never evicted before --max-wait")
	fs.StringSliceVar(&f.namespaces, "namespace", nil, "namespaces of the pods to wait for (repeatable or comma-separated; default: all)")
	fs.DurationVar(&f.maxWait, "max-wait", recycle.DefaultMaxWait, "the drain's deadline for every pod on the node (from the drain's start): how long the selected pods may take to finish")
	fs.DurationVar(&f.evictTimeout, "evict-timeout", 0, "an earlier deadline for the pods that are not selected (like kubectl drain --timeout); 0: none, --max-wait applies")
	fs.StringVar(&f.onTimeout, "on-timeout", string(recycle.OnTimeoutFail), "what a deadline does to the pods still there: fail (roll back), evict (PDB-aware; roll back if still refused at --max-wait + --force-grace), or force (delete with --force-grace)")
	fs.BoolVar(&f.evictOthers, "evict-others", true, "evict the pods that are not selected through the Eviction API (PDBs honoured)")
	fs.BoolVar(&f.deleteUnmanaged, "delete-unmanaged", false, "evict pods that no controller recreates (refused otherwise, as kubectl drain does without --force)")
	fs.DurationVar(&f.replacementTimeout, "replacement-timeout", recycle.DefaultReplacementTimeout, "how long to wait for the replacement node to be Ready before rolling back")
	fs.DurationVar(&f.workloadTimeout, "workload-timeout", recycle.DefaultWorkloadTimeout, "how long moved workloads may take to be available again")
	fs.DurationVar(&f.forceGrace, "force-grace", recycle.DefaultForceGrace, "grace period cap for --on-timeout force (at least 1s); also how long past --max-wait terminating pods may hold the drain")
	fs.StringVar(&f.retire, "retire", string(recycle.RetireTerminate), "what to do with the old instance: terminate, or stop (kept and tagged for forensics)")
	fs.BoolVar(&f.noSurge, "no-surge", false, "for a group without headroom: drain first, then let the group replace the node")
	fs.BoolVar(&f.allowRaiseMax, "allow-raise-max", false, "raise the group's MaxSize by one during the recycle when it has no headroom (restored afterwards)")
	fs.BoolVar(&f.keepReplacement, "keep-replacement", false, "on rollback, keep a replacement that was already Ready (the group stays one larger) instead of draining and terminating it")
	fs.StringToStringVar(&f.readyLabels, "ready-label", nil, "labels the replacement node must carry before it counts as ready (key=value, repeatable)")
	fs.DurationVar(&f.rollbackTimeout, "rollback-timeout", recycle.DefaultRollbackTimeout, "how long a rollback may wait for AWS (an instance between two states) and drain the replacement before it needs a person; also Retire's wait for the old instance (at most 6h)")
	fs.IntVar(&f.checkSeconds, "check-seconds", recycle.DefaultCheckSeconds, "the longest one check may block on a watch before the state machine loops (checks return as soon as their condition holds; longer means fewer history events)")
}

// request is the recycle of target with these options (not validated yet).
func (f *requestFlags) request(target string) recycle.Request {
	r := recycle.NewRequest(target)
	r.Selector, r.Namespaces = f.selector, f.namespaces
	r.MaxWait, r.ReplacementTimeout = recycle.Duration(f.maxWait), recycle.Duration(f.replacementTimeout)
	r.WorkloadTimeout, r.ForceGrace = recycle.Duration(f.workloadTimeout), recycle.Duration(f.forceGrace)
	r.OnTimeout, r.Retire = recycle.OnTimeout(f.onTimeout), recycle.RetireMode(f.retire)
	r.EvictOthers, r.NoSurge, r.AllowRaiseMax = f.evictOthers, f.noSurge, f.allowRaiseMax
	r.EvictTimeout, r.DeleteUnmanaged = recycle.Duration(f.evictTimeout), f.deleteUnmanaged
	r.ReadyLabels, r.CheckSeconds = f.readyLabels, f.checkSeconds
	r.RollbackTimeout = recycle.Duration(f.rollbackTimeout)
	return r
}

// check refuses what the request cannot tell from its defaults: a zero
// --rollback-timeout (in a request, 0 means the default).
func (f *requestFlags) check() error {
	if f.rollbackTimeout == 0 {
		return recycle.RollbackTimeoutError(0)
	}
	return nil
}

func newRecycleCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	f := &recycleFlags{}
	cmd := &cobra.Command{
		Use:   "recycle NODE|INSTANCE-ID...",
		Short: "Replace nodes with zero downtime (one after another)",
		Long: `Replace each named node (a Kubernetes node name or an EC2 instance id) with zero downtime:
fence it, surge a replacement, wait until the replacement's Node is Ready, drain (evicting
other pods with PodDisruptionBudgets honoured, waiting up to --max-wait for the pods you
select), retire the old instance. A failure rolls back what Recycler did.

Runs in the foreground with a live progress view on stderr. Ctrl-C offers to detach (the
execution goes on under 'recycler resume') or to abort (roll back). Every flag also
reads a default from RECYCLER_<FLAG>, e.g. RECYCLER_MAX_WAIT=20h.

Exit codes: 0 success, 1 failed and rolled back, 2 bad input or refused precondition
(nothing changed), 3 needs a person (explained in the output).`,
		Example: `  recycler recycle ip-10-0-1-23.eu-west-1.compute.internal --selector app=airflow-worker --namespace airflow --max-wait 20h
  recycler recycle i-0123456789abcdef0 --on-timeout evict --retire stop
  recycler recycle NODE --dry-run`,
		Args: func(_ *cobra.Command, targets []string) error {
			if len(targets) == 0 {
				return badInput("no node given: name one or more nodes by node name or EC2 instance id, e.g. 'recycler recycle ip-10-0-1-23.eu-west-1.compute.internal' (see 'recycler recycle --help')")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, targets []string) error {
			f.fromEnv = fromEnvironment(cmd.Flags())
			return runRecycle(cmd.Context(), f, targets, stdin, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	f.stateFlags.register(fs)
	f.requestFlags.register(fs)
	fs.BoolVar(&f.dryRun, "dry-run", false, "resolve and check every node, print what would happen, change nothing")
	fs.StringVarP(&f.output, "output", "o", "text", "final result on stdout: text or json")
	return cmd
}

// requests validates every flag and target into requests; nothing has been touched yet.
func (f *recycleFlags) requests(targets []string) ([]recycle.Request, error) {
	if f.output != "text" && f.output != "json" {
		return nil, badInput("-o %q: use text or json", f.output)
	}
	var reqs []recycle.Request
	var errs []error
	seen := map[string]bool{}
	if err := f.check(); err != nil {
		errs = append(errs, err)
	}
	for _, t := range targets {
		if seen[t] {
			errs = append(errs, fmt.Errorf("%s named twice: name each node once", t))
			continue
		}
		seen[t] = true
		r := f.request(t)
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
			continue
		}
		reqs = append(reqs, r)
	}
	if len(errs) > 0 {
		if len(f.fromEnv) > 0 {
			errs = append(errs, fmt.Errorf("(flags not given on the command line came from the environment: %s)", strings.Join(f.fromEnv, " ")))
		}
		return nil, usageError{errors.Join(errs...)}
	}
	return reqs, nil
}

func runRecycle(ctx context.Context, f *recycleFlags, targets []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := f.validate(); err != nil {
		return err
	}
	reqs, err := f.requests(targets)
	if err != nil {
		return err
	}
	logs := loggingFrom(ctx)
	// The foreground work must survive the first Ctrl-C: it only asks what to do.
	work := context.WithoutCancel(ctx)
	tasks, err := f.buildTasks(work)
	if err != nil {
		return err
	}
	var local *engine.Engine
	var eng executions
	switch {
	case f.dryRun:
	case f.onStepFunctions():
		c, err := f.stepFunctions(work)
		if err != nil {
			return err
		}
		eng = c
	default:
		// This process drives only the executions it starts (or continues) here.
		if local, err = f.openEngine(work, func() *recycle.Tasks { return tasks }, logs.log); err != nil {
			return err
		}
		defer local.Close()
		eng = local
	}
	// Every target is resolved and checked before anything changes anywhere.
	named := map[string]string{} // node → the target that named it
	var plans []plan
	for _, req := range reqs {
		p, err := planOne(work, local, tasks, req)
		if err != nil {
			return err
		}
		// A node named twice (by name and by instance id) would be recycled, then refused.
		if first, ok := named[p.node]; ok {
			return badInput("%s and %s are the same node %s: name each node once (nothing was changed)", first, req.Target(), p.node)
		}
		named[p.node] = req.Target()
		if f.dryRun {
			printPlan(stdout, req, p.target)
		}
		plans = append(plans, p)
	}
	if f.dryRun {
		return nil
	}

	var results []result
	for _, p := range plans {
		in := engine.StartInput{Name: p.name, Input: p.input}
		if c, ok := eng.(*stepfn.Client); ok {
			// Named from the instance: AWS refuses a second execution with a running
			// one's name, so two recycles of one instance cannot run at once.
			if in.Name, err = c.FreeName(work, p.instance); err != nil {
				return usageError{fmt.Errorf("%s: %w (nothing was changed)", p.req.Target(), err)}
			}
		} else {
			in.StateMachine, in.Definition = recycle.StateMachineName, mustDefinition()
			in.OnAbort = &engine.Rollback{StateMachine: recycle.RollbackStateMachineName, Definition: recycle.RollbackDefinition()}
		}
		res, err := runOne(ctx, work, eng, p, in, drainPods(tasks.Cluster, p.req), stdin, stderr)
		if err != nil {
			return err
		}
		results = append(results, res)
		if res.code != ExitOK {
			break // one at a time: a failed recycle stops the rest
		}
	}
	if err := printResults(stdout, f.output, results); err != nil {
		return err
	}
	if last := results[len(results)-1]; last.code != ExitOK {
		return exitError{code: last.code, msg: last.Message}
	}
	return nil
}

// plan is one checked target: the execution that recycles it (new, or a running
// attempt this process continues).
type plan struct {
	req      recycle.Request
	input    json.RawMessage
	node     string
	target   *recycle.Target // the pre-check's result (nil when continuing)
	instance string
	name     string            // the execution's name: the instance id, -N for a later attempt
	existing *engine.Execution // a running attempt no live process drives, with this very request
}

// planOne checks one target before anything changes. A running attempt at this
// instance in the state file decides first: driven by another live process, or
// started with other options, the request is a duplicate and refused; otherwise this
// process continues it. Else the full pre-check (Resolve) runs, and the new execution
// is named after the instance (docs/operations.md).
func planOne(ctx context.Context, eng *engine.Engine, tasks *recycle.Tasks, req recycle.Request) (plan, error) {
	input, err := json.Marshal(recycle.State{Request: req})
	if err != nil {
		return plan{}, err
	}
	p := plan{req: req, input: input}
	inst := instanceOf(ctx, tasks, req)
	if inst != "" && eng != nil {
		attempts, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, NamePrefix: inst})
		if err != nil {
			return plan{}, err
		}
		last, running := recycle.Attempts(inst, attempts)
		if ex := running; ex != nil {
			if d, driven := eng.DriverOf(ex.ID); driven {
				return plan{}, badInput("%s is already being recycled by execution %s (%s, started %s), driven by another recycler process (%s): follow it with 'recycler status %s', or abort it with 'recycler abort %s' (nothing was changed)",
					req.Target(), ex.ID, ex.Name, ex.StartTime.Local().Format(time.DateTime), d, ex.Name, ex.Name)
			}
			if !sameRequest(ex.Input, input) {
				return plan{}, badInput("%s is already being recycled by execution %s (%s, started %s) with another request (other options, or the node named otherwise); no process drives it: continue it with 'recycler resume', or abort it with 'recycler abort %s' (nothing was changed)",
					req.Target(), ex.ID, ex.Name, ex.StartTime.Local().Format(time.DateTime), ex.Name)
			}
			p.existing, p.name, p.instance = ex, ex.Name, inst
			p.node, _ = targetOf(*ex, recycle.State{})
			if st, err := eng.RecentHistory(ctx, ex.ID, recentEvents); err == nil {
				if n, _ := targetOf(*ex, recycle.StateFromHistory(st)); n != "" {
					p.node = n
				}
			}
			return p, nil
		}
		p.name = recycle.ExecutionName(inst, last+1)
	}
	tgt, err := tasks.Resolve(ctx, recycle.State{Request: req})
	if err != nil {
		return plan{}, refusal(req.Target(), err)
	}
	p.target, p.node, p.instance = tgt, tgt.Node, tgt.InstanceID
	if p.name == "" || inst != tgt.InstanceID {
		p.name = recycle.ExecutionName(tgt.InstanceID, 1)
	}
	return p, nil
}

// instanceOf is the instance a request names (by id, or its node's providerID), or
// "" when that cannot be told yet (then the pre-check says why).
func instanceOf(ctx context.Context, tasks *recycle.Tasks, req recycle.Request) string {
	if req.InstanceID != "" {
		return req.InstanceID
	}
	n, err := tasks.Cluster.ResolveNode(ctx, req.Node)
	if err != nil {
		return ""
	}
	pid, err := kube.ParseProviderID(n.Spec.ProviderID)
	if err != nil {
		return ""
	}
	return pid.InstanceID
}

// sameRequest compares two execution inputs as recycle requests.
func sameRequest(a, b json.RawMessage) bool {
	var x, y recycle.State
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// refusal turns a failed pre-check into exit 2 with the check's own message.
func refusal(target string, err error) error {
	switch recycle.ErrorNameOf(err) {
	case recycle.ErrBadInput, recycle.ErrPrecondition:
		return usageError{fmt.Errorf("%s: %w (nothing was changed)", target, err)}
	}
	return fmt.Errorf("%s: checking before the recycle: %w (nothing was changed)", target, err)
}

func printPlan(w io.Writer, req recycle.Request, t *recycle.Target) {
	fmt.Fprintf(w, "Would recycle node %s (instance %s in %s, group %s: desired %d, max %d):\n", t.Node, t.InstanceID, t.AZ, t.Group, t.Desired, t.MaxSize)
	fmt.Fprintf(w, "  1. taint %s:NoSchedule and cordon %s\n", "recycler.io/recycling", t.Node)
	if req.NoSurge {
		fmt.Fprintf(w, "  2. no surge: drain first, the group replaces the node after it is retired\n")
	} else {
		fmt.Fprintf(w, "  2. enter standby without decrement: the group launches a replacement; wait up to %s for it to be InService with a Ready node\n", req.ReplacementTimeout)
	}
	sel := "no pods"
	if req.Selector != "" || len(req.Namespaces) > 0 {
		sel = fmt.Sprintf("pods matching %q in %s", req.Selector, nsList(req.Namespaces))
	}
	others := ""
	if req.EvictTimeout > 0 {
		others = fmt.Sprintf(", %s those still there after %s", req.OnTimeout, req.EvictTimeout)
	}
	fmt.Fprintf(w, "  3. label the node %s; wait up to %s for %s, then %s; evict other pods: %v (PDBs honoured%s)\n",
		"node.kubernetes.io/exclude-from-external-load-balancers", req.MaxWait, sel, req.OnTimeout, req.EvictOthers, others)
	fmt.Fprintf(w, "  4. wait up to %s for moved workloads to be available again\n", req.WorkloadTimeout)
	fmt.Fprintf(w, "  5. detach %s (desired capacity back to %d), %s it, delete node %s\n", t.InstanceID, t.Desired, req.Retire, t.Node)
}

func nsList(ns []string) string {
	if len(ns) == 0 {
		return "all namespaces"
	}
	return "namespaces " + strings.Join(ns, ",")
}

// result is what `-o json` prints for one recycle.
type result struct {
	ExecutionID string             `json:"executionId"`
	Node        string             `json:"node"`
	OldInstance string             `json:"oldInstance,omitempty"`
	NewInstance string             `json:"newInstance,omitempty"`
	Outcome     string             `json:"outcome"`
	Message     string             `json:"message,omitempty"`
	Steps       map[string]float64 `json:"stepSeconds"`
	Elapsed     float64            `json:"elapsedSeconds"`
	code        int
}

func runOne(ctx, work context.Context, eng executions, p plan, start engine.StartInput, pods podWatch, stdin io.Reader, stderr io.Writer) (result, error) {
	req := p.req
	ex, err := eng.Start(work, start)
	var exists *engine.ExistsError
	if errors.As(err, &exists) {
		// Another process started (or drives) the same recycle since the pre-check.
		return result{}, badInput("%s is already being recycled: execution %s (%s) %s; follow it with 'recycler status %s' or abort it with 'recycler abort %s'",
			req.Target(), exists.Existing.ID, exists.Existing.Name, exists.Reason, exists.Existing.Name, exists.Existing.Name)
	}
	if err != nil {
		return result{}, fmt.Errorf("start recycle of %s: %w", req.Target(), err)
	}
	logs := loggingFrom(ctx)
	logs.nodes.set(ex.ID, p.node)
	tty := isTerminal(stderr)
	// The progress view writes from the watch goroutine: everything else this function
	// prints goes through the same lock.
	stderr = &lockedWriter{w: stderr}
	if p.existing != nil {
		fmt.Fprintf(stderr, "continuing the recycle of %s: execution %s (%s, started %s; no process drove it)\n", req.Target(), ex.ID, ex.Name, ex.StartTime.Local().Format(time.DateTime))
		logs.log.Info("continuing recycle", logKeyExecution, ex.ID)
	} else {
		fmt.Fprintf(stderr, "recycling %s: execution %s (%s)\n", req.Target(), ex.ID, ex.Name)
		logs.log.Debug("recycle started", logKeyExecution, ex.ID)
	}
	view := newProgress(stderr, tty)
	watchCtx, stopWatch := context.WithCancel(work)
	watched := make(chan error, 1)
	go func() { watched <- eng.Watch(watchCtx, ex.ID, view.event) }()
	defer stopWatch()
	view.live(watchCtx, clock.RealClock{}, pods)

	done := make(chan waited, 1)
	go func() {
		fin, err := eng.Wait(watchCtx, ex.ID)
		done <- waited{fin, err}
	}()
	select {
	case w := <-done:
		return w.finish(work, eng, stderr, watched)
	case <-ctx.Done():
		return interrupted(work, eng, ex, stdin, stderr, done, watched)
	}
}

// waited is the end of an execution as Engine.Wait reported it.
type waited struct {
	ex  engine.Execution
	err error
}

// finish reports the execution once its progress view has shown the last event.
// The view only displays: if it failed, say so, but the outcome still stands.
func (w waited) finish(ctx context.Context, eng executions, stderr io.Writer, watched <-chan error) (result, error) {
	if w.err != nil {
		return result{}, fmt.Errorf("wait for execution %s: %w", w.ex.ID, w.err)
	}
	if err := <-watched; err != nil {
		fmt.Fprintf(stderr, "(progress view stopped early: %v; 'recycler history %s' shows every step)\n", err, w.ex.ID)
	}
	return finish(ctx, eng, w.ex, stderr)
}

// interrupted asks whether to detach or abort after Ctrl-C. Without a terminal it
// detaches: nothing is undone behind the user's back.
func interrupted(work context.Context, eng executions, ex engine.Execution, stdin io.Reader, stderr io.Writer, done <-chan waited, watched <-chan error) (result, error) {
	choice := "d"
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(stderr, "\ninterrupted: [d]etach (the recycle goes on under 'recycler resume') or [a]bort (roll back)? ")
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "a") {
			choice = "a"
		}
	}
	if choice == "d" {
		msg := fmt.Sprintf("detached: execution %s stays where it is; continue it with 'recycler resume' (or 'recycler abort %s')", ex.ID, ex.ID)
		fmt.Fprintln(stderr, msg)
		return result{ExecutionID: ex.ID, Outcome: "detached", Message: msg, code: ExitNeedsPerson}, nil
	}
	fmt.Fprintln(stderr, "aborting: rolling back what this recycle did…")
	if _, err := eng.Stop(work, ex.ID, recycle.ErrAborted, "aborted by the user (Ctrl-C)"); err != nil {
		return result{}, fmt.Errorf("abort %s: %w", ex.ID, err)
	}
	return (<-done).finish(work, eng, stderr, watched)
}

func finish(ctx context.Context, eng executions, ex engine.Execution, stderr io.Writer) (result, error) {
	res := result{ExecutionID: ex.ID}
	var st recycle.State
	_ = json.Unmarshal(ex.Input, &st)
	res.Node = st.Request.Target()
	hist, err := eng.History(ctx, ex.ID)
	if err != nil {
		return result{}, err
	}
	final := recycle.StateFromHistory(hist)
	if final.Target != nil {
		res.Node, res.OldInstance = final.Target.Node, final.Target.InstanceID
	}
	if final.Replacement != nil && len(final.Replacement.Instances) > 0 {
		res.NewInstance = final.Replacement.Instances[0]
	}
	res.Steps = map[string]float64{}
	for step, d := range recycle.StepDurations(hist) {
		res.Steps[step] = d.Seconds()
	}
	if !ex.StopTime.IsZero() {
		res.Elapsed = ex.StopTime.Sub(ex.StartTime).Round(time.Millisecond).Seconds()
	}
	res.code, res.Outcome, res.Message = outcome(ctx, eng, ex, hist)
	fmt.Fprintln(stderr, res.Message)
	return res, nil
}

// outcome maps a finished execution to the exit code and a sentence a person can act on.
func outcome(ctx context.Context, eng executions, ex engine.Execution, hist []engine.Event) (int, string, string) {
	switch ex.Status {
	case engine.StatusSucceeded:
		return ExitOK, "succeeded", fmt.Sprintf("recycled: execution %s succeeded", ex.ID)
	case engine.StatusAborted:
		if ex.RollbackID == "" {
			return ExitNeedsPerson, "aborted", fmt.Sprintf("aborted without rollback: check the node and group (execution %s)", ex.ID)
		}
		rb, err := eng.Wait(ctx, ex.RollbackID)
		if err == nil && rb.Status == engine.StatusSucceeded {
			msg := fmt.Sprintf("aborted and rolled back: the node is back in service (execution %s)", ex.ID)
			if rbHist, err := eng.History(ctx, rb.ID); err == nil {
				msg += notes(recycle.StateFromHistory(rbHist).Rollback)
			}
			return ExitFailed, "aborted", msg
		}
		return ExitNeedsPerson, "needs-person", fmt.Sprintf("aborted, but the rollback did not finish (%s: %s): a person must check the node and group; see 'recycler history %s'", rb.Error, rb.Cause, ex.RollbackID)
	}
	switch ex.Error {
	case recycle.ErrBadInput, recycle.ErrPrecondition:
		return ExitBadInput, "refused", fmt.Sprintf("refused, nothing changed: %s", ex.Cause)
	case recycle.ErrRollbackFailed:
		return ExitNeedsPerson, "needs-person", fmt.Sprintf("failed and the rollback did not finish: a person must check the node and group; see 'recycler history %s'", ex.ID)
	}
	ran := recycle.TasksSucceeded(hist)
	switch {
	case ran[recycle.TaskRollback]:
		return ExitFailed, "rolled-back", fmt.Sprintf("failed and rolled back (%s): %s", ex.Error, ex.Cause) + notes(recycle.StateFromHistory(hist).Rollback)
	case !ran[recycle.TaskFence]:
		return ExitFailed, "failed", fmt.Sprintf("failed before changing anything (%s): %s", ex.Error, ex.Cause)
	}
	return ExitNeedsPerson, "needs-person", fmt.Sprintf("failed without a rollback (%s: %s): node and group may still be fenced or surged; 'recycler history %s' shows how far it got", ex.Error, ex.Cause, ex.ID)
}

// notes renders what a rollback wants a person to know.
func notes(rb *recycle.RollbackStatus) string {
	if rb == nil || len(rb.Notes) == 0 {
		return ""
	}
	return "\n  note: " + strings.Join(rb.Notes, "\n  note: ")
}

func printResults(w io.Writer, format string, results []result) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if len(results) == 1 {
			return enc.Encode(results[0])
		}
		return enc.Encode(results)
	}
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%s → %s\t%s\t%.1fs\n", r.ExecutionID, r.Node, r.OldInstance, orDash(r.NewInstance), r.Outcome, r.Elapsed)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mustDefinition() []byte {
	def, _ := recycle.Definition("")
	return def
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exitError ends a command with a chosen exit code; its message was already shown.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }
func (e exitError) ExitCode() int { return e.code }
