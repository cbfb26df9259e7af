package scenario_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/invariant"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
)

// DESIGN.md §6 invariant 5 for a rollout: `recycler rollout` and then `recycler resume`
// are SIGKILLed at random moments again and again; the last resume finishes. The end
// must be what an uninterrupted rollout gives: every node replaced exactly once (one
// recycle execution per node, one fence, one standby and one launch per node), the
// group at its size with none of the old instances, no mark of ours left, and the
// zero-downtime invariants held throughout (sampled from outside the processes).
func TestRolloutCrashAndResumeEndsLikeUninterrupted(t *testing.T) {
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	const nodes, kills, seed = 12, 14, 20261201
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "recycler")
	env, h := upWithBinary(ctx, t, bin, sim.UpOptions{Nodes: nodes, BootDelay: 4 * time.Second, JobDuration: 3 * time.Second})
	if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	group := env.Groups[0]
	before, err := h.Observer.Group(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	launchesBefore := countActivities(t, h, group, "Launching a new EC2 instance: ")
	sel, _ := labels.Parse(sim.LabelComponent + "=" + sim.LongJobComponent)
	sampler, err := invariant.StartFleet(ctx, env.Kube.Client, h.Observer, h.Clock, invariant.FleetWatch{
		Groups: []string{group}, MaxInGroup: 2,
		Selector: invariant.Watch{Selector: sel, Namespaces: []string{sim.WorkloadNamespace}, MaxWait: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sampler.Stop(context.Background()) })

	state := filepath.Join(dir, "state.db")
	vars := os.Environ()
	for _, kv := range env.Vars() {
		vars = append(vars, kv[0]+"="+kv[1])
	}
	vars = append(vars, "XDG_STATE_HOME="+filepath.Join(dir, "xdg"))
	run := func(kill time.Duration, args ...string) (int, string) {
		cmd := exec.Command(bin, append(args, "--state", state)...)
		cmd.Env = vars
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		limit := 5 * time.Minute
		if kill > 0 {
			limit = kill
		}
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), out.String()
			}
			if err != nil {
				t.Fatal(err)
			}
			return 0, out.String()
		case <-time.After(limit):
			_ = cmd.Process.Kill() // fails only if it just ended by itself: Wait says how
			if err := <-done; err == nil {
				return 0, out.String() // it ended by itself just before the kill
			}
			if kill == 0 {
				t.Fatalf("%v did not end within %s:\n%s", args, limit, out.String())
			}
			return -1, out.String()
		}
	}
	rolloutArgs := []string{"rollout", "--group", group, "--all", "--max-in-flight", "2", "--fence-batch", "--recheck-seconds", "1",
		"--selector", sim.LabelComponent + "=" + sim.LongJobComponent, "--namespace", sim.WorkloadNamespace}
	rng := rand.New(rand.NewPCG(seed, seed))
	killed, hits := 0, map[string]int{}
	for killed < kills {
		args := []string{"resume"}
		if !rolloutStarted(t, state) {
			args = rolloutArgs
		}
		code, out := run(time.Duration(300+rng.IntN(2200))*time.Millisecond, args...)
		if code != -1 {
			t.Logf("%s ended (exit %d) before its kill:\n%s", args[0], code, out)
			break
		}
		killed++
		at := stepsAt(t, state)
		hits[at]++
		t.Logf("kill %d (%s) with the recycles at: %s", killed, args[0], at)
	}
	code, out := run(0, "resume")
	t.Logf("%d kills; the last resume (exit %d):\n%s", killed, code, out)
	rep := sampler.Stop(ctx)
	t.Logf("\n%s", rep)
	if killed < kills-2 {
		t.Errorf("only %d of %d kills landed before the rollout ended: the workload is too short to test crashes", killed, kills)
	}
	inRecycle := 0
	for at, n := range hits {
		if at != "" && at != "no rollout yet" {
			inRecycle += n
		}
	}
	if inRecycle == 0 {
		t.Errorf("no kill landed while a recycle was running: %v", hits)
	}

	eng, err := engine.Open(ctx, engine.Options{Path: state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ros, err := eng.List(ctx, engine.ListFilter{StateMachine: rollout.StateMachineName})
	if err != nil || len(ros) != 1 {
		t.Fatalf("rollouts in the state file: %d (%v), want exactly 1", len(ros), err)
	}
	pr, err := rollout.ReadProgress(ctx, eng, ros[0].ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != nodes {
		t.Fatalf("rollout %s (%s %s): %+v\n%s", pr.Execution.Status, pr.Execution.Error, pr.Execution.Cause, pr.Summary, nodesText(pr))
	}
	recycles, err := eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, ex := range recycles {
		per[ex.Name]++
		if ex.Status != engine.StatusSucceeded {
			t.Errorf("recycle %s ended %s (%s: %s)", ex.Name, ex.Status, ex.Error, ex.Cause)
		}
	}
	for _, in := range before.Instances {
		if n := per[recycle.ExecutionName(in.ID, 1)]; n != 1 {
			t.Errorf("instance %s has %d recycle executions, want exactly 1", in.ID, n)
		}
		if n := countActivities(t, h, group, "Moving EC2 instance to Standby: "+in.ID); n != 1 {
			t.Errorf("instance %s entered standby %d times, want once", in.ID, n)
		}
	}
	if !rep.OK() || rep.Fenced != nodes {
		t.Errorf("invariants broken (or %d nodes fenced, want %d):\n%s", rep.Fenced, nodes, rep)
	}
	if got := countActivities(t, h, group, "Launching a new EC2 instance: ") - launchesBefore; got != nodes {
		t.Errorf("%d instances launched during the rollout, want %d (one replacement per node)", got, nodes)
	}
	after, err := h.Observer.Group(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range before.Instances {
		if _, ok := after.Instance(in.ID); ok {
			t.Errorf("old instance %s still in the group", in.ID)
		}
	}
	if after.Desired != before.Desired || after.CountLifecycle(cloud.LifecycleInService) != int(before.Desired) {
		t.Errorf("group after: desired %d, %d InService; want %d", after.Desired, after.CountLifecycle(cloud.LifecycleInService), before.Desired)
	}
}

func rolloutStarted(t *testing.T, state string) bool {
	t.Helper()
	if _, err := os.Stat(state); err != nil {
		return false
	}
	eng, err := engine.Open(context.Background(), engine.Options{Path: state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ros, err := eng.List(context.Background(), engine.ListFilter{StateMachine: rollout.StateMachineName})
	if err != nil {
		t.Fatal(err)
	}
	return len(ros) > 0
}

func countActivities(t *testing.T, h *scenario.Harness, group, prefix string) int {
	t.Helper()
	acts, err := h.Observer.ScalingActivities(context.Background(), group, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range acts {
		if strings.HasPrefix(a.Description, prefix) {
			n++
		}
	}
	return n
}

// stepsAt says where the rollout's running recycles are, read from the state file.
func stepsAt(t *testing.T, state string) string {
	t.Helper()
	if !rolloutStarted(t, state) {
		return "no rollout yet"
	}
	eng, err := engine.Open(context.Background(), engine.Options{Path: state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ros, err := eng.List(context.Background(), engine.ListFilter{StateMachine: rollout.StateMachineName})
	if err != nil || len(ros) == 0 {
		t.Fatalf("rollouts: %v", err)
	}
	p, err := rollout.ReadProgress(context.Background(), eng, ros[0].ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, n := range p.Nodes {
		if n.State == rollout.NodeRunning {
			steps = append(steps, n.Step)
		}
	}
	slices.Sort(steps)
	return strings.Join(steps, "+")
}
