package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/invariant"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// The crash test (DESIGN.md §6 invariant 5): `recycler recycle` is SIGKILLed at a
// random moment, `recycler resume` finishes the job, and the world ends exactly like
// after an uninterrupted run, with every zero-downtime invariant sampled throughout.

const (
	crashNamespace     = "crash-test"
	crashSelectedLabel = "crash-test/selected"
	crashSeed          = 20261125
	crashPodRuns       = 4 * time.Second // the selected pod's run time: Drain really waits
	// crashLatency is added to every request the recycler subprocess sends (a TCP proxy
	// in front of both APIs): real API calls take tens of milliseconds, and without it
	// the short steps (Resolve, Fence, Surge, Retire) last a few milliseconds locally,
	// too short to kill the process inside them on purpose.
	crashLatency = 25 * time.Millisecond
)

// crashSteps are the steps of a successful recycle (recycle.Steps without Rollback).
var crashSteps = slices.DeleteFunc(slices.Clone(recycle.Steps), func(s string) bool { return s == "Rollback" })

type crashKill struct {
	what   string // "recycle" or "resume"
	onCall string // kill when the simulator answers this AWS action (instead of after delay)
	// raiseMax: the group is at its MaxSize and the recycle may raise it (--allow-raise-max).
	raiseMax bool
	target   string        // the step the delay aimed at ("" = any)
	delay    time.Duration // after the process started
	state    string        // the state machine state current at the kill, from the state DB
}

type crashRun struct {
	n          int
	node, inst string
	plan       []crashKill
	kills      []crashKill
	resumeExit int
	resumeTook time.Duration // the last resume, start to exit
	elapsed    time.Duration
	ex         engine.Execution
	hist       []engine.Event
}

// step is the step current at the run's first kill ("" when it did not land in one).
func (r *crashRun) step() string {
	if len(r.kills) == 0 {
		return ""
	}
	s := recycle.StepOf(r.kills[0].state)
	if slices.Contains(crashSteps, s) {
		return s
	}
	return ""
}

type crashRig struct {
	env      *sim.Environment
	h        *scenario.Harness
	bin, dir string
	vars     []string
	rng      *rand.Rand
	windows  map[string][2]time.Duration // step → [entered, left) after the process started, last seen
	calls    callSwitch                  // kills at an API call, through the proxies
	selected labels.Selector             // the selected pods, for the sampler
}

func TestCrashResumeEndsLikeUninterrupted(t *testing.T) {
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	began := time.Now()
	r := startCrashRig(t)

	ref := r.run(t, 0, nil)
	if t.Failed() {
		t.FailNow()
	}
	refTasks := crashTasksDone(ref.hist)
	refFinal := crashLastState(ref.hist)
	if refFinal != "Done" {
		t.Fatalf("the uninterrupted run ended in state %q, want Done", refFinal)
	}
	for _, s := range crashSteps {
		if _, ok := r.windows[s]; !ok {
			t.Fatalf("the uninterrupted run never went through step %s: %v", s, r.windows)
		}
	}

	// First a kill at each state-changing AWS and Kubernetes call of the recycle, right
	// after it took effect and before the process heard back (the worst moment), then
	// kills at random moments, aimed at the steps not hit yet; every fifth of those
	// also kills the resume (its first kill aimed early, so the resume has work to
	// be killed in).
	onCalls := []crashKill{
		{what: "recycle", onCall: "PatchNode"},
		{what: "recycle", onCall: "CreateOrUpdateTags"}, // the group's record before AZRebalance is suspended
		{what: "recycle", onCall: "SuspendProcesses"},
		{what: "recycle", onCall: "CreateTags"}, // the old instance's record before EnterStandby
		{what: "recycle", onCall: "EnterStandby"},
		{what: "recycle", onCall: "UpdateAutoScalingGroup", raiseMax: true},
		{what: "recycle", onCall: "SetInstanceProtection"}, // the replacement claimed
		{what: "recycle", onCall: "Evict"},
		{what: "recycle", onCall: "DetachInstances"},
		{what: "recycle", onCall: "TerminateInstances"},
		{what: "recycle", onCall: "ResumeProcesses"},
		{what: "recycle", onCall: "DeleteTags"}, // the records removed once released
		// (No kill at Retire's Node deletion: terminating the instance already removed
		// the Node, as the cloud controller does, so Retire finds nothing to delete.)
	}
	wantKilled, wantDoubles, budget := 20, 3, 4*time.Minute+15*time.Second
	if testing.Short() {
		wantKilled, wantDoubles, onCalls = 3, 0, nil
	}
	runs := []*crashRun{ref}
	hit := map[string]int{}
	killed, doubles := 0, 0
	for n := 1; ; n++ {
		done := killed >= wantKilled && doubles >= wantDoubles && (testing.Short() || len(hit) == len(crashSteps))
		if done || n > len(onCalls)+wantKilled+10 || (killed >= wantKilled && time.Since(began) > budget) {
			break
		}
		var plan []crashKill
		switch timed := n - len(onCalls); {
		case timed <= 0:
			plan = []crashKill{onCalls[n-1]}
		case timed%5 == 0 && doubles < wantDoubles:
			plan = []crashKill{r.aim(hit, crashSteps[:4]),
				{what: "resume", delay: time.Duration(250+r.rng.IntN(1750)) * time.Millisecond}}
		default:
			plan = []crashKill{r.aim(hit, crashSteps)}
		}
		run := r.run(t, n, plan)
		runs = append(runs, run)
		if t.Failed() {
			break // the world may be off now; later runs would only repeat the failure
		}
		for _, k := range run.kills {
			if s := recycle.StepOf(k.state); slices.Contains(crashSteps, s) {
				hit[s]++
			}
		}
		if run.step() != "" && plan[0].onCall == "" {
			killed++
		}
		if len(run.kills) == 2 {
			doubles++
		}
		if run.ex.ID == "" {
			continue // killed before the execution began: nothing to resume, nothing changed (checked)
		}
		// The crashed run ends like the uninterrupted one.
		if got := crashTasksDone(run.hist); !slices.Equal(got, refTasks) {
			t.Errorf("run %d: tasks completed %v, uninterrupted run completed %v", n, got, refTasks)
		}
		if got := crashLastState(run.hist); got != refFinal {
			t.Errorf("run %d: ended in state %q, uninterrupted run in %q", n, got, refFinal)
		}
	}

	var b strings.Builder
	const row = "%-4d %-19s %-34s %-15s %-22s %-15s %-6s %-8s %s\n"
	fmt.Fprintf(&b, "%-4s %-19s %-34s %-15s %-22s %-15s %-6s %-8s %s\n", "run", "old instance", "kill", "aimed at", "state at kill", "step", "resume", "took", "elapsed")
	for _, run := range runs {
		if len(run.kills) == 0 {
			what, aimed, exit := "(uninterrupted)", "-", "-"
			if len(run.plan) > 0 {
				what, aimed, exit = "(ended before the kill)", crashOr(run.plan[0].target, run.plan[0].onCall), fmt.Sprint(run.resumeExit)
			}
			fmt.Fprintf(&b, row, run.n, run.inst, "-", aimed, what, "-", exit, crashTook(run), run.elapsed.Round(10*time.Millisecond))
		}
		for i, k := range run.kills {
			exit, took := "-", "-"
			if i == len(run.kills)-1 {
				exit, took = fmt.Sprint(run.resumeExit), crashTook(run)
			}
			fmt.Fprintf(&b, row, run.n, run.inst, crashKillText(k),
				crashOr(k.target, "-"), k.state, crashOr(recycle.StepOf(k.state), "-"), exit, took, run.elapsed.Round(10*time.Millisecond))
		}
	}
	t.Logf("crash runs (seed %d, %s in all):\n%s", crashSeed, time.Since(began).Round(time.Second), b.String())
	t.Logf("killed runs: %d at API calls, %d at random moments (%d killed twice); steps hit: %v; last step windows after the process start: %v", len(onCalls), killed, doubles, hit, r.windows)
	if t.Failed() {
		return
	}
	if killed < wantKilled {
		t.Errorf("%d runs killed at a random moment inside a step, want at least %d", killed, wantKilled)
	}
	if doubles < wantDoubles {
		t.Errorf("%d runs killed twice (the resume too), want at least %d", doubles, wantDoubles)
	}
	if !testing.Short() {
		for _, s := range crashSteps {
			if hit[s] == 0 {
				t.Errorf("no kill landed in step %s (hits: %v)", s, hit)
			}
		}
	}
}

// startCrashRig builds the recycler binary and starts the simulated environment
// (3 nodes) with latency proxies the subprocesses reach it through.
func startCrashRig(t *testing.T) *crashRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "recycler")
	env, h := upWithBinary(ctx, t, bin, sim.UpOptions{Nodes: 3, BootDelay: 2 * time.Second})
	if _, err := env.Kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: crashNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sel, err := labels.Parse(crashSelectedLabel + "=true")
	if err != nil {
		t.Fatal(err)
	}
	r := &crashRig{env: env, h: h, bin: bin, dir: dir, rng: rand.New(rand.NewPCG(crashSeed, crashSeed)),
		windows: map[string][2]time.Duration{}, selected: sel}
	r.vars = r.subprocessEnv(t)
	return r
}

// aim picks the next kill: a step among those not hit yet when there is one (else any), and
// a random moment inside the window where that step was last seen.
func (r *crashRig) aim(hit map[string]int, among []string) crashKill {
	var todo []string
	for _, s := range among {
		if hit[s] == 0 {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		todo = among
	}
	target := todo[r.rng.IntN(len(todo))]
	w := r.windows[target]
	span := max(w[1]-w[0], time.Millisecond)
	return crashKill{what: "recycle", target: target, delay: w[0] + time.Duration(r.rng.Int64N(int64(span)))}
}

// run recycles one current node of the group, killing the processes as planned
// (nil: the uninterrupted reference), and checks the end state.
func (r *crashRig) run(t *testing.T, n int, plan []crashKill) *crashRun {
	t.Helper()
	ctx := context.Background()
	cs := r.env.Kube.Client
	if err := scenario.WaitSettled(ctx, cs, sim.WorkloadNamespace, 2*time.Minute); err != nil {
		t.Fatalf("run %d: %v", n, err)
	}
	node, inst, before := r.pickNode(t)
	db := filepath.Join(r.dir, fmt.Sprintf("run-%02d.db", n))
	args := []string{"recycle", node, "--state", db, "--selector", crashSelectedLabel + "=true", "--namespace", crashNamespace, "-o", "json"}
	if len(plan) > 0 && plan[0].raiseMax {
		// No headroom: the surge must raise MaxSize by one and put it back afterwards.
		orig := before.MaxSize
		r.setMaxSize(t, before.Name, before.Desired)
		defer r.setMaxSize(t, before.Name, orig)
		before.MaxSize = before.Desired
		args = append(args, "--allow-raise-max")
	}
	run := &crashRun{n: n, node: node, inst: inst, plan: plan}
	pod := r.selectedPod(t, n, node)
	pw := watchPod(ctx, t, cs, crashNamespace, pod)
	defer pw.result() // stops the watch on every path
	sampler, err := invariant.Start(ctx, cs, r.h.Observer, clock.RealClock{}, invariant.Watch{
		Group: before.Name, OldNode: node, Selector: r.selected, Namespaces: []string{crashNamespace}, MaxWait: recycle.DefaultMaxWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	sampling := true
	defer func() {
		if sampling {
			sampler.Stop(ctx)
		}
	}()
	start := time.Now()
	var killAt time.Time
	var logs bytes.Buffer
	var next *crashKill
	if len(plan) > 0 {
		next = &plan[0]
	}
	code, at, err := r.exec(ctx, &logs, next, args...)
	if err != nil {
		t.Fatalf("run %d: %v", n, err)
	}
	if len(plan) == 0 && code != 0 {
		t.Fatalf("run %d: uninterrupted recycle exited %d:\n%s", n, code, logs.String())
	}
	if len(plan) > 0 && plan[0].onCall != "" && code != -1 {
		t.Errorf("run %d: the recycle never called %s (exit %d); output:\n%s", n, plan[0].onCall, code, logs.String())
	}
	for i, k := range plan {
		if code != -1 {
			break // the process ended before the kill: nothing more to kill
		}
		k.delay = at
		if i == 0 {
			killAt = start.Add(at)
		}
		k.state = r.stateAt(t, db)
		run.kills = append(run.kills, k)
		if i+1 == len(plan) {
			break
		}
		if code, at, err = r.exec(ctx, &logs, &plan[i+1], "resume", "--state", db); err != nil {
			t.Fatalf("run %d: %v", n, err)
		}
	}
	if len(plan) > 0 {
		began := time.Now()
		run.resumeExit, _, err = r.exec(ctx, &logs, nil, "resume", "--state", db)
		run.resumeTook = time.Since(began)
		if err != nil {
			t.Fatalf("run %d: %v", n, err)
		}
		if run.resumeExit != 0 {
			t.Errorf("run %d: resume exited %d, want 0; output:\n%s", n, run.resumeExit, logs.String())
		}
	}
	run.elapsed = time.Since(start)
	run.ex, run.hist = r.execution(t, db)
	if st := recycle.StateFromHistory(run.hist); st.Drain != nil {
		sampler.DrainStarted(st.Drain.StartedAt)
	}
	rep := sampler.Stop(ctx)
	sampling = false
	if !rep.OK() {
		t.Errorf("run %d (kills %+v): invariants broken:\n%s", n, run.kills, rep)
	}
	if run.ex.ID == "" {
		if len(run.kills) == 0 || run.kills[0].state != "(no execution)" {
			t.Fatalf("run %d: no execution in %s", n, db)
		}
		r.checkUntouched(t, run, before, pw)
		return run
	}
	r.learn(run, start, killAt)
	r.checkRecycled(t, run, before, pw)
	if t.Failed() {
		t.Logf("run %d output:\n%s", n, logs.String())
	}
	return run
}

// exec runs the recycler binary and SIGKILLs it as k says: k.delay after its start,
// or (k.onCall) the moment that API call has been answered, before the
// answer reaches the process: the call took effect, the process never learns it.
// It returns the exit code (-1 when the kill landed) and when the kill came.
// Output goes to logs for failure reports.
func (r *crashRig) exec(ctx context.Context, logs io.Writer, k *crashKill, args ...string) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	// A process past the 3 minutes first dumps its goroutines (SIGQUIT), so a hang says
	// where it waits.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 15 * time.Second
	cmd.Env = r.vars
	fmt.Fprintf(logs, "$ recycler %s\n", strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = logs, logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start recycler %s: %w", args[0], err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	var once sync.Once
	var killedAt time.Duration
	kill := func() {
		once.Do(func() {
			killedAt = time.Since(start)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		})
	}
	var timer, fired <-chan time.Time
	if k != nil && k.onCall != "" {
		fired = r.calls.arm(k.onCall, kill)
		defer r.calls.disarm()
	} else if k != nil && k.delay > 0 {
		tm := time.NewTimer(k.delay)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-exited:
	case <-timer:
		kill()
	case <-fired:
	}
	<-exited
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			fmt.Fprintf(logs, "--- SIGKILL after %s\n", killedAt)
			return -1, killedAt, nil
		}
	}
	code, err := exitCode(waitErr, args[0]) // it ended on its own (before any kill)
	return code, 0, err
}

// crashKubeCalls are the Kubernetes calls a kill can be armed at, by name.
var crashKubeCalls = map[string]string{
	"PatchNode": "PATCH /api/v1/nodes/*",
	"Evict":     "POST /api/v1/namespaces/*/pods/*/eviction",
}

// callSwitch kills a process when an armed AWS call (by action) or Kubernetes call
// (by name in crashKubeCalls) has been answered, before the answer is passed on.
type callSwitch struct {
	mu     sync.Mutex
	needle []byte // AWS: in the request body
	glob   string // Kubernetes: "METHOD path" pattern
	fire   func()
	fired  chan time.Time
}

func (s *callSwitch) arm(call string, fire func()) <-chan time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.needle, s.glob = nil, crashKubeCalls[call]
	if s.glob == "" {
		// Query protocol bodies (Auto Scaling, EC2) name the action.
		s.needle = []byte("Action=" + call + "&")
	}
	s.fire, s.fired = fire, make(chan time.Time, 1)
	return s.fired
}

func (s *callSwitch) disarm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.needle, s.glob, s.fire = nil, "", nil
}

// asked reports whether an AWS request chunk is the armed call.
func (s *callSwitch) asked(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.needle != nil && bytes.Contains(b, s.needle)
}

// askedKube reports whether a Kubernetes request is the armed call.
func (s *callSwitch) askedKube(method, urlPath string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, _ := path.Match(s.glob, method+" "+urlPath)
	return s.glob != "" && ok
}

// answered runs, once, before the armed call's answer is passed on.
func (s *callSwitch) answered() {
	s.mu.Lock()
	fire, fired := s.fire, s.fired
	s.needle, s.glob, s.fire = nil, "", nil
	s.mu.Unlock()
	if fire != nil {
		fire()
		fired <- time.Now()
	}
}

// crashTook is how long the run's last resume took ("-" when none ran).
func crashTook(run *crashRun) string {
	if run.resumeTook == 0 {
		return "-"
	}
	return run.resumeTook.Round(10 * time.Millisecond).String()
}

func exitCode(err error, what string) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), nil
	}
	return 0, fmt.Errorf("recycler %s: %w", what, err)
}

// stateAt reads, from the state DB the killed process left, the state its execution
// was in: the last state entered (a state whose work was cut off has no exit event).
func (r *crashRig) stateAt(t *testing.T, db string) string {
	t.Helper()
	ex, hist := r.execution(t, db)
	switch {
	case ex.ID == "":
		return "(no execution)"
	case ex.Status != engine.StatusRunning:
		return "(ended " + string(ex.Status) + ")"
	}
	return crashLastState(hist)
}

// execution opens the state DB passively (no lock, no tasks) and returns the recycle
// execution in it with its history, or a zero Execution when there is none.
func (r *crashRig) execution(t *testing.T, db string) (engine.Execution, []engine.Event) {
	t.Helper()
	if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
		return engine.Execution{}, nil
	}
	ctx := context.Background()
	eng, err := engine.Open(ctx, engine.Options{Path: db, Passive: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("open %s passively: %v", db, err)
	}
	defer eng.Close()
	exs, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName})
	if err != nil {
		t.Fatalf("list executions in %s: %v", db, err)
	}
	if len(exs) == 0 {
		return engine.Execution{}, nil
	}
	if len(exs) > 1 {
		t.Errorf("%s holds %d recycle executions, want 1", db, len(exs))
	}
	hist, err := eng.History(ctx, exs[0].ID)
	if err != nil {
		t.Fatalf("history of %s: %v", exs[0].ID, err)
	}
	return exs[0], hist
}

// learn records when each step ran in this run (before its kill), so later kills
// can aim at it.
func (r *crashRig) learn(run *crashRun, start, killAt time.Time) {
	var cur string
	var since time.Time
	for _, ev := range run.hist {
		if !killAt.IsZero() && !ev.Timestamp.Before(killAt) {
			return
		}
		if !strings.HasSuffix(ev.Type, "StateEntered") {
			continue
		}
		step := recycle.StepOf(crashEventName(ev))
		if step == cur {
			continue
		}
		if slices.Contains(crashSteps, cur) {
			r.windows[cur] = [2]time.Duration{since.Sub(start), ev.Timestamp.Sub(start)}
		}
		cur, since = step, ev.Timestamp
	}
}

// setMaxSize changes the group's MaxSize, as a person would, through the AWS SDK.
func (r *crashRig) setMaxSize(t *testing.T, group string, size int32) {
	t.Helper()
	c := autoscaling.New(autoscaling.Options{
		Region: r.env.Region, BaseEndpoint: sdkaws.String(r.env.AWS.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", ""),
	})
	if _, err := c.UpdateAutoScalingGroup(context.Background(), &autoscaling.UpdateAutoScalingGroupInput{
		AutoScalingGroupName: &group, MaxSize: &size,
	}); err != nil {
		t.Fatalf("set MaxSize of %s to %d: %v", group, size, err)
	}
}

// pickNode returns a random current node of the group (InService, Ready, not fenced)
// and the group as it is before the run.
func (r *crashRig) pickNode(t *testing.T) (string, string, cloud.Group) {
	t.Helper()
	ctx := context.Background()
	g, err := r.h.Observer.Group(ctx, r.env.Groups[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := g.CountLifecycle(cloud.LifecycleInService); got != int(g.Desired) || len(g.Instances) != int(g.Desired) {
		t.Fatalf("group %s before the run: %d instances, %d InService, desired %d", g.Name, len(g.Instances), got, g.Desired)
	}
	nodes, err := r.env.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type cand struct{ node, inst string }
	var cands []cand
	for _, n := range nodes.Items {
		pid, err := kube.ParseProviderID(n.Spec.ProviderID)
		if err != nil {
			continue
		}
		gi, ok := g.Instance(pid.InstanceID)
		if !ok || gi.Lifecycle != cloud.LifecycleInService || n.Spec.Unschedulable || !crashNodeReady(&n) {
			continue
		}
		if _, fenced := n.Annotations[kube.AnnotationFenced]; fenced {
			continue
		}
		cands = append(cands, cand{n.Name, pid.InstanceID})
	}
	if len(cands) != int(g.Desired) {
		t.Fatalf("%d Ready nodes of group %s, want %d", len(cands), g.Name, g.Desired)
	}
	slices.SortFunc(cands, func(a, b cand) int { return strings.Compare(a.node, b.node) })
	c := cands[r.rng.IntN(len(cands))]
	return c.node, c.inst, g
}

func crashNodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// selectedPod pins a pod the recycle must wait for (it finishes after crashPodRuns)
// to node and waits until it runs.
func (r *crashRig) selectedPod(t *testing.T, n int, node string) string {
	t.Helper()
	ctx := context.Background()
	cs := r.env.Kube.Client
	name := fmt.Sprintf("selected-%02d", n)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: crashNamespace,
			Labels:      map[string]string{crashSelectedLabel: "true"},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: crashPodRuns.String()}},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Containers:                    []corev1.Container{{Name: "job", Image: "job"}},
			TerminationGracePeriodSeconds: ptr.To[int64](1)},
	}
	if _, err := cs.CoreV1().Pods(crashNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := scenario.WaitSettled(ctx, cs, crashNamespace, time.Minute); err != nil {
		t.Fatal(err)
	}
	return name
}

// podWatch remembers whether a pod finished (Succeeded) before anything deleted it.
type podWatch struct {
	mu        sync.Mutex
	succeeded bool
	deleted   bool // deleted (or marked for deletion) before it succeeded
	stop      context.CancelFunc
	done      chan struct{}
}

func watchPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *podWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	pw := &podWatch{stop: cancel, done: make(chan struct{})}
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		cancel()
		t.Fatalf("watch pod %s/%s: %v", ns, name, err)
	}
	go func() {
		defer close(pw.done)
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pw.mu.Lock()
			if p.Status.Phase == corev1.PodSucceeded {
				pw.succeeded = true
			}
			if !pw.succeeded && (ev.Type == watch.Deleted || p.DeletionTimestamp != nil) {
				pw.deleted = true
			}
			pw.mu.Unlock()
		}
	}()
	return pw
}

// result stops watching (if it still does) and says how the pod ended.
func (pw *podWatch) result() (succeeded, deletedFirst bool) {
	pw.stop()
	<-pw.done
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.succeeded, pw.deleted
}

// checkRecycled asserts what an uninterrupted run leaves behind.
func (r *crashRig) checkRecycled(t *testing.T, run *crashRun, before cloud.Group, pw *podWatch) {
	t.Helper()
	ctx := context.Background()
	n := run.n
	if run.ex.Status != engine.StatusSucceeded {
		t.Errorf("run %d: execution %s %s (%s: %s), want %s", n, run.ex.ID, run.ex.Status, run.ex.Error, run.ex.Cause, engine.StatusSucceeded)
	}
	if ok, deleted := pw.result(); !ok || deleted {
		t.Errorf("run %d: selected pod succeeded=%v, deleted before finishing=%v; want it to finish on its own", n, ok, deleted)
	}
	after, err := r.h.Observer.Group(ctx, before.Name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Desired != before.Desired || after.MaxSize != before.MaxSize {
		t.Errorf("run %d: desired capacity %d and MaxSize %d, were %d and %d", n, after.Desired, after.MaxSize, before.Desired, before.MaxSize)
	}
	if b, a := crashSorted(before.SuspendedProcesses), crashSorted(after.SuspendedProcesses); !slices.Equal(a, b) {
		t.Errorf("run %d: suspended processes %v, were %v", n, a, b)
	}
	if gi, ok := after.Instance(run.inst); ok {
		t.Errorf("run %d: old instance %s still in the group (%s)", n, run.inst, gi.Lifecycle)
	}
	if got := after.CountLifecycle(cloud.LifecycleInService); got != int(after.Desired) || len(after.Instances) != int(after.Desired) {
		t.Errorf("run %d: %d instances, %d InService, want %d InService and nothing else: %+v", n, len(after.Instances), got, after.Desired, after.Instances)
	}
	insts, err := r.h.Observer.Instances(ctx, run.inst)
	if err != nil || len(insts) != 1 {
		t.Errorf("run %d: describe old instance %s: %v %v", n, run.inst, insts, err)
	} else if s := insts[0].State; s != cloud.StateTerminated && s != cloud.StateShuttingDown {
		t.Errorf("run %d: old instance %s is %s, want terminated", n, run.inst, s)
	}
	if _, err := r.env.Kube.Client.CoreV1().Nodes().Get(ctx, run.node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("run %d: old node %s still exists (err %v)", n, run.node, err)
	}
	r.checkNoMarks(t, n, after)
}

// checkUntouched asserts a run killed before its execution began changed nothing.
func (r *crashRig) checkUntouched(t *testing.T, run *crashRun, before cloud.Group, pw *podWatch) {
	t.Helper()
	after, err := r.h.Observer.Group(context.Background(), before.Name)
	if err != nil {
		t.Fatal(err)
	}
	if gi, ok := after.Instance(run.inst); !ok || gi.Lifecycle != cloud.LifecycleInService || after.Desired != before.Desired {
		t.Errorf("run %d: killed before the execution began, yet the group changed: desired %d (was %d), old instance %+v", run.n, after.Desired, before.Desired, gi)
	}
	if _, deleted := pw.result(); deleted {
		t.Errorf("run %d: killed before the execution began, yet the selected pod was deleted", run.n)
	}
	r.checkNoMarks(t, run.n, after)
}

// checkNoMarks: no node carries Recycler's taint or fence, no instance is in Standby.
func (r *crashRig) checkNoMarks(t *testing.T, n int, g cloud.Group) {
	t.Helper()
	nodes, err := r.env.Kube.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes.Items {
		for _, taint := range node.Spec.Taints {
			if taint.Key == kube.TaintKey {
				t.Errorf("run %d: node %s still carries %s=%s", n, node.Name, taint.Key, taint.Value)
			}
		}
		if v, ok := node.Annotations[kube.AnnotationFenced]; ok {
			t.Errorf("run %d: node %s still carries %s=%s", n, node.Name, kube.AnnotationFenced, v)
		}
		if node.Spec.Unschedulable {
			t.Errorf("run %d: node %s is cordoned", n, node.Name)
		}
	}
	if s := g.CountLifecycle(cloud.LifecycleStandby); s != 0 {
		t.Errorf("run %d: %d instances in Standby", n, s)
	}
}

// subprocessEnv is this process's environment without anything that could point the
// recycler elsewhere, plus the simulated environment reached through latency proxies.
func (r *crashRig) subprocessEnv(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "KUBECONFIG" || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "RECYCLER_") || k == "XDG_STATE_HOME" {
			continue
		}
		out = append(out, kv)
	}
	awsProxy := startLatencyProxy(t, strings.TrimPrefix(r.env.AWS.URL(), "http://"), crashLatency, &r.calls)
	kubeProxy := startKubeProxy(t, r.env.Kube.Config, crashLatency, &r.calls)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sim"] = &clientcmdapi.Cluster{Server: kubeProxy}
	cfg.AuthInfos["sim"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["sim"] = &clientcmdapi.Context{Cluster: "sim", AuthInfo: "sim"}
	cfg.CurrentContext = "sim"
	kubeconfig := filepath.Join(r.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.env.Vars() {
		switch kv[0] {
		case "KUBECONFIG":
			kv[1] = kubeconfig
		case "AWS_ENDPOINT_URL":
			kv[1] = "http://" + awsProxy
		}
		out = append(out, kv[0]+"="+kv[1])
	}
	return append(out, "XDG_STATE_HOME="+filepath.Join(r.dir, "xdg"))
}

// startKubeProxy serves the control plane's API over plain HTTP on a local port
// (authenticating to it with cfg), each request delay late; an armed call's answer
// first kills the process. It stops with the test.
func startKubeProxy(t *testing.T, cfg *rest.Config, delay time.Duration, calls *callSwitch) string {
	t.Helper()
	return serveKube(t, cfg, func(tr http.RoundTripper) http.RoundTripper { return kubeHop{tr: tr, delay: delay, calls: calls} })
}

type kubeHop struct {
	tr    http.RoundTripper
	delay time.Duration
	calls *callSwitch
}

func (h kubeHop) RoundTrip(req *http.Request) (*http.Response, error) {
	time.Sleep(h.delay) // network latency of the simulated link, not a step's wait
	armed := h.calls.askedKube(req.Method, req.URL.Path)
	resp, err := h.tr.RoundTrip(req)
	if armed && err == nil {
		h.calls.answered()
	}
	return resp, err
}

// startLatencyProxy forwards TCP connections to target, delivering each chunk the
// client sends delay later (latency, not a bandwidth cap). With calls (plain HTTP
// only), an armed call's answer first kills the process. It stops with the test.
func startLatencyProxy(t *testing.T, target string, delay time.Duration, calls *callSwitch) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(c, true)
			track(s, true)
			wg.Add(2)
			var asked atomic.Bool // HTTP/1.1: the next answer on this connection is the armed call's
			onRequest := func(b []byte) {
				if calls != nil && calls.asked(b) {
					asked.Store(true)
				}
			}
			onAnswer := func([]byte) {
				if asked.Swap(false) {
					calls.answered()
				}
			}
			go func() { defer wg.Done(); pipeLate(s, c, delay, onRequest); track(c, false) }()
			go func() { defer wg.Done(); pipeLate(c, s, 0, onAnswer); track(s, false) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// pipeLate copies src to dst, each chunk delay after it was read and after
// onChunk saw it; at the end both close.
func pipeLate(dst, src net.Conn, delay time.Duration, onChunk func([]byte)) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d) // network latency of the simulated link, not a step's wait
		}
		onChunk(c.b)
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range ch {
	}
}

// crashTasksDone returns the sorted task names that succeeded at least once.
func crashTasksDone(hist []engine.Event) []string {
	var out []string
	for task := range recycle.TasksSucceeded(hist) {
		out = append(out, task)
	}
	slices.Sort(out)
	return out
}

// crashLastState is the name of the last state the execution entered.
func crashLastState(hist []engine.Event) string {
	for i := len(hist) - 1; i >= 0; i-- {
		if strings.HasSuffix(hist[i].Type, "StateEntered") {
			return crashEventName(hist[i])
		}
	}
	return "(none)"
}

func crashEventName(ev engine.Event) string {
	var d struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(ev.Details, &d)
	return d.Name
}

func crashKillText(k crashKill) string {
	if k.onCall != "" {
		return fmt.Sprintf("%s@%s(+%s)", k.what, k.onCall, k.delay.Round(time.Millisecond))
	}
	return k.what + "+" + k.delay.Round(time.Millisecond).String()
}

func crashSorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func crashOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// upWithBinary brings the simulated environment up (torn down at the test's end) and
// a harness on it, while `go build` writes the recycler binary to bin.
func upWithBinary(ctx context.Context, t *testing.T, bin string, opts sim.UpOptions) (*sim.Environment, *scenario.Harness) {
	t.Helper()
	built := make(chan error, 1)
	go func() {
		out, err := exec.Command("go", "build", "-o", bin, "github.com/recycler/recycler/cmd/recycler").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build: %w\n%s", err, out)
		}
		built <- err
	}()
	env, err := sim.Up(ctx, opts)
	if err != nil {
		if berr := <-built; berr != nil {
			t.Logf("(and %v)", berr)
		}
		t.Fatalf("sim up: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Down(context.Background()); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	h, err := scenario.New(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	return env, h
}
