package scenario_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/invariant"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/testenv"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
)

// fleetWorld is a simulated environment with an engine that runs rollouts.
type fleetWorld struct {
	env *sim.Environment
	h   *scenario.Harness
	eng *engine.Engine
	ft  *rollout.Tasks
}

func newFleetWorld(t *testing.T, opts sim.UpOptions) *fleetWorld {
	t.Helper()
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	ctx := context.Background()
	env, err := sim.Up(ctx, opts)
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Down(context.Background()); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	h, err := scenario.New(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, ft, err := h.OpenFleetEngine(ctx, filepath.Join(t.TempDir(), "state.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	if opts.Workloads != "none" {
		if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	return &fleetWorld{env: env, h: h, eng: eng, ft: ft}
}

func (w *fleetWorld) options(groups ...string) rollout.Options {
	// The default loop period: a check's first rounds are 5 s anyway, and a
	// 24-hour --max-wait with 5-second checks would outgrow the history budget.
	req := recycle.NewRequest("")
	return rollout.Options{
		Selection:   rollout.Selection{Groups: groups, All: true},
		Settings:    rollout.Settings{MaxUnhealthy: rollout.Amount{N: 20, Percent: true}, OnFailure: rollout.OnFailurePause, PauseTimeout: recycle.Duration(time.Hour), CheckSeconds: 1},
		MaxInFlight: rollout.Amount{N: 1},
		Request:     req,
	}
}

// start plans and starts a rollout.
func (w *fleetWorld) start(t *testing.T, o rollout.Options, name string) (*rollout.Plan, engine.Execution) {
	t.Helper()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := w.h.Plan(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Attempts(ctx, w.eng); err != nil {
		t.Fatal(err)
	}
	in, err := rollout.StartInput(name, p.Input(o.Request))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := w.eng.Start(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	return p, ex
}

func (w *fleetWorld) progress(t *testing.T, id string) *rollout.Progress {
	t.Helper()
	p, err := rollout.ReadProgress(context.Background(), w.eng, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wait waits for the rollout to end (generous wall-clock limit) and returns its progress.
func (w *fleetWorld) wait(t *testing.T, id string, limit time.Duration) *rollout.Progress {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if _, err := w.eng.Wait(ctx, id); err != nil {
		t.Fatalf("rollout did not end within %s: %v\n%s", limit, err, nodesText(w.progress(t, id)))
	}
	return w.progress(t, id)
}

// until polls the rollout's progress until cond holds (generous wall-clock limit).
func (w *fleetWorld) until(t *testing.T, id string, limit time.Duration, what string, cond func(*rollout.Progress) bool) *rollout.Progress {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		p := w.progress(t, id)
		if cond(p) {
			return p
		}
		if p.Execution.Status.Done() || time.Now().After(deadline) {
			t.Fatalf("%s: not reached (rollout %s)\n%s", what, p.Execution.Status, nodesText(p))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func nodesText(p *rollout.Progress) string {
	var b strings.Builder
	for _, n := range p.Nodes {
		fmt.Fprintf(&b, "  %s %s %s %s %s\n", n.Node, n.AZ, n.State, n.Step, n.Reason)
	}
	fmt.Fprintf(&b, "  summary %+v\n", p.Summary)
	return b.String()
}

func (w *fleetWorld) group(t *testing.T, name string) cloud.Group {
	t.Helper()
	g, err := w.h.Observer.Group(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func perZone(g cloud.Group) map[string]int {
	out := map[string]int{}
	for _, in := range g.Instances {
		out[in.AZ]++
	}
	return out
}

// The first test: a 30-node group rolled 3 at a time.
func TestRollout30NodesThreeAtATime(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 30, BootDelay: 2 * time.Second, JobDuration: 4 * time.Second, ReadyTimeout: 5 * time.Minute})
	ctx := context.Background()
	name := w.env.Groups[0]
	before := w.group(t, name)
	o := w.options(name)
	o.MaxInFlight = rollout.Amount{N: 10, Percent: true} // 10 % of 30 = 3
	o.Request.Selector, o.Request.Namespaces = sim.LabelComponent+"="+sim.LongJobComponent, []string{sim.WorkloadNamespace}
	o.Request.MaxWait = recycle.Duration(10 * time.Minute)
	sel, err := labels.Parse(o.Request.Selector)
	if err != nil {
		t.Fatal(err)
	}
	sampler, err := invariant.StartFleet(ctx, w.env.Kube.Client, w.h.Observer, w.h.Clock, invariant.FleetWatch{
		Groups: []string{name}, MaxInGroup: 3, MaxInZone: 2,
		Selector: invariant.Watch{Selector: sel, Namespaces: o.Request.Namespaces, MaxWait: 10 * time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sampler.Stop(context.Background()) })
	p, ex := w.start(t, o, "rollout-30")
	if p.Candidates() != 30 || p.Groups[0].MaxInFlight != 3 || p.Groups[0].Batches != 10 {
		t.Fatalf("plan: %d candidates, %d at a time, %d batches; want 30, 3, 10", p.Candidates(), p.Groups[0].MaxInFlight, p.Groups[0].Batches)
	}
	// The order lets the zones take turns: any three consecutive nodes are in three zones.
	items := p.Groups[0].Items
	for i := 0; i+3 <= len(items); i++ {
		if z := []string{items[i].AZ, items[i+1].AZ, items[i+2].AZ}; len(slices.Compact(slices.Sorted(slices.Values(z)))) != 3 {
			t.Errorf("items %d..%d are in zones %v: not balanced", i, i+2, z)
		}
	}
	pr := w.wait(t, ex.ID, 15*time.Minute)
	rep := sampler.Stop(ctx)
	t.Logf("rollout took %s\n%s", pr.Execution.StopTime.Sub(pr.Execution.StartTime), rep)
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != 30 {
		t.Fatalf("rollout %s (%s %s): %+v\n%s", pr.Execution.Status, pr.Execution.Error, pr.Execution.Cause, pr.Summary, nodesText(pr))
	}
	if !rep.OK() {
		t.Errorf("invariants broken:\n%s", rep)
	}
	if rep.PeakInFlight != 3 {
		t.Errorf("peak in flight %d: want exactly 3 (the limit, reached)", rep.PeakInFlight)
	}
	if rep.Fenced != 30 {
		t.Errorf("%d nodes fenced, want each of the 30 once", rep.Fenced)
	}
	after := w.group(t, name)
	for _, in := range before.Instances {
		if _, ok := after.Instance(in.ID); ok {
			t.Errorf("old instance %s still in the group", in.ID)
		}
	}
	if after.Desired != before.Desired || after.CountLifecycle(cloud.LifecycleInService) != int(before.Desired) {
		t.Errorf("group after: desired %d, %d InService; want %d", after.Desired, after.CountLifecycle(cloud.LifecycleInService), before.Desired)
	}
	if got, want := perZone(after), perZone(before); !maps.Equal(got, want) {
		t.Errorf("zones after %v, before %v", got, want)
	}
	// Three recycles at a time share the group's suspension of AZRebalance and its
	// MaxSize: the last one out gives both back, and no record of ours stays.
	if !slices.Equal(after.SuspendedProcesses, before.SuspendedProcesses) || after.MaxSize != before.MaxSize {
		t.Errorf("group after: suspended %v, MaxSize %d; before: %v, %d", after.SuspendedProcesses, after.MaxSize, before.SuspendedProcesses, before.MaxSize)
	}
	for k := range after.Tags {
		if strings.HasPrefix(k, "recycler/") {
			t.Errorf("group tag %s=%s left after the rollout", k, after.Tags[k])
		}
	}
}

func ec2Client(t *testing.T, env *sim.Environment) *ec2.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(env.Region), config.WithBaseEndpoint(env.AWS.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	return ec2.NewFromConfig(cfg)
}

func asgClient(t *testing.T, env *sim.Environment) *autoscaling.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(env.Region), config.WithBaseEndpoint(env.AWS.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	return autoscaling.NewFromConfig(cfg)
}

// Drift: a new launch template version makes exactly the nodes on the old one drift;
// after the rollout none does.
func TestRolloutDrifted(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 4, BootDelay: time.Second, Workloads: "none"})
	ctx := context.Background()
	name := w.env.Groups[0]
	if _, err := ec2Client(t, w.env).CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateName: sdkaws.String(name + "-lt"), SourceVersion: sdkaws.String("1"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: sdkaws.String("ami-0fedcba9876543210")},
	}); err != nil {
		t.Fatal(err)
	}
	old := w.group(t, name)
	// One more node, launched now: on the new version, so not drifted.
	if _, err := asgClient(t, w.env).SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: &name, DesiredCapacity: sdkaws.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	if err := w.env.WaitNodesReady(ctx, 5); err != nil {
		t.Fatal(err)
	}
	o := w.options(name)
	o.All, o.Drifted, o.MaxInFlight = false, true, rollout.Amount{N: 2}
	p, err := w.h.Plan(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var planned []string
	for _, it := range p.Groups[0].Items {
		planned = append(planned, it.InstanceID)
		if want := "launch template"; !strings.Contains(it.Reasons[0], want) || !strings.Contains(it.Reasons[0], "v1 → v2 ($Latest)") {
			t.Errorf("reason %q, want \"launch template lt-… v1 → v2 ($Latest)\"", it.Reasons[0])
		}
	}
	var oldIDs []string
	for _, in := range old.Instances {
		oldIDs = append(oldIDs, in.ID)
	}
	slices.Sort(planned)
	slices.Sort(oldIDs)
	if !slices.Equal(planned, oldIDs) || p.Groups[0].UpToDate != 1 {
		t.Fatalf("plan --drifted lists %v (%d up to date), want exactly the 4 old nodes %v and 1 up to date", planned, p.Groups[0].UpToDate, oldIDs)
	}
	_, ex := w.start(t, o, "rollout-drift")
	pr := w.wait(t, ex.ID, 5*time.Minute)
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != 4 {
		t.Fatalf("rollout %s: %+v\n%s", pr.Execution.Status, pr.Summary, nodesText(pr))
	}
	p, err = w.h.Plan(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Candidates() != 0 || p.Groups[0].UpToDate != 5 {
		t.Errorf("after the rollout, plan --drifted lists %d nodes (%d up to date), want none (5)", p.Candidates(), p.Groups[0].UpToDate)
	}
}

// setReady makes a node NotReady (as a kubelet that stopped reporting) or Ready again.
func setReady(t *testing.T, env *sim.Environment, node string, ready bool) {
	t.Helper()
	ctx := context.Background()
	cs := env.Kube.Client
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		delete(n.Annotations, testenv.NodeNeverReadyAnnotation) // kwok marks it Ready again
		if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	n.Annotations[testenv.NodeNeverReadyAnnotation] = "true"
	if n, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionFalse, "TestStoppedTheKubelet"
		}
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Budget: 2 of 10 nodes go NotReady mid-rollout with --max-unhealthy 10%: the rollout
// starts no other recycle until they recover, then finishes.
func TestRolloutHoldsWhileTheGroupIsUnhealthy(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 10, BootDelay: time.Second, Workloads: "none"})
	name := w.env.Groups[0]
	o := w.options(name)
	o.MaxUnhealthy = rollout.Amount{N: 10, Percent: true}
	_, ex := w.start(t, o, "rollout-budget")
	pr := w.until(t, ex.ID, 3*time.Minute, "first node replaced", func(p *rollout.Progress) bool { return p.Summary.Replaced >= 1 })
	var sick []string
	for i := len(pr.Nodes) - 1; i >= 0 && len(sick) < 2; i-- {
		if pr.Nodes[i].State == rollout.NodeQueued {
			sick = append(sick, pr.Nodes[i].Node)
		}
	}
	for _, n := range sick {
		setReady(t, w.env, n, false)
	}
	held := w.until(t, ex.ID, time.Minute, "held on the health budget", func(p *rollout.Progress) bool {
		return p.Summary.Running == 0 && strings.Contains(p.Summary.Why, "unhealthy") && strings.Contains(p.Summary.Why, "more than --max-unhealthy 10%")
	})
	t.Logf("held: %s", held.Summary.Why)
	for _, n := range sick {
		if !strings.Contains(held.Summary.Why, n+" NotReady") {
			t.Errorf("the hold does not name %s: %s", n, held.Summary.Why)
		}
	}
	// Held means held: nothing starts while they stay NotReady (the gate checks every second).
	started := held.Summary.Replaced + held.Summary.Failed
	time.Sleep(4 * time.Second)
	if p := w.progress(t, ex.ID); p.Summary.Running != 0 || p.Summary.Replaced+p.Summary.Failed != started {
		t.Fatalf("a recycle started while 2 of 10 nodes were NotReady:\n%s", nodesText(p))
	}
	for _, n := range sick {
		setReady(t, w.env, n, true)
	}
	pr = w.wait(t, ex.ID, 5*time.Minute)
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != 10 {
		t.Fatalf("after recovery: %s %+v\n%s", pr.Execution.Status, pr.Summary, nodesText(pr))
	}
}

// --on-failure pause: a failed recycle (its replacement never turns Ready) pauses the
// rollout; nothing else starts; a resume lets it go on; the failed node is back in
// service.
func TestRolloutPausesOnAFailureUntilResumed(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 4, BootDelay: time.Second, Workloads: "none"})
	ctx := context.Background()
	name := w.env.Groups[0]
	f := w.env.AWS.Faults()
	f.NeverReadyNext = 1
	if err := w.env.AWS.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	o := w.options(name)
	o.Request.ReplacementTimeout = recycle.Duration(5 * time.Second)
	sampler, err := invariant.StartFleet(ctx, w.env.Kube.Client, w.h.Observer, w.h.Clock, invariant.FleetWatch{Groups: []string{name}, MaxInGroup: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sampler.Stop(context.Background()) })
	_, ex := w.start(t, o, "rollout-pause")
	paused := w.until(t, ex.ID, 2*time.Minute, "paused after the failure", func(p *rollout.Progress) bool { return p.Summary.Paused && p.Summary.Running == 0 })
	failed := paused.Nodes[0]
	if failed.State != rollout.NodeFailed || !strings.Contains(paused.Summary.Why, failed.Node) || !strings.Contains(paused.Summary.Why, recycle.ErrReplacementTimeout) {
		t.Fatalf("paused, but the reason does not name the failed recycle: %q\n%s", paused.Summary.Why, nodesText(paused))
	}
	time.Sleep(3 * time.Second)
	if p := w.progress(t, ex.ID); p.Summary.Running != 0 || p.Summary.Replaced != 0 || !p.Summary.Paused {
		t.Fatalf("a recycle started while paused:\n%s", nodesText(p))
	}
	for _, pe := range paused.Pauses {
		if _, err := w.eng.Stop(ctx, pe.ID, rollout.ErrResumed, "resumed by the test"); err != nil {
			t.Fatal(err)
		}
	}
	pr := w.wait(t, ex.ID, 3*time.Minute)
	rep := sampler.Stop(ctx)
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != 3 || pr.Summary.Failed != 1 {
		t.Fatalf("after the resume: %s %+v\n%s", pr.Execution.Status, pr.Summary, nodesText(pr))
	}
	if !rep.OK() {
		t.Errorf("invariants broken:\n%s", rep)
	}
	n, err := w.env.Kube.Client.CoreV1().Nodes().Get(ctx, failed.Node, metav1.GetOptions{})
	if err != nil || n.Spec.Unschedulable {
		t.Errorf("the failed node %s after the rollout: %v (unschedulable %v), want back in service", failed.Node, err, err == nil && n.Spec.Unschedulable)
	}
}

// Aborting a rollout stops its running recycles (each rolls back) and lifts its batch
// cordons: nothing of Recycler's is left on any node or in the group.
func TestRolloutAbortRollsBackWhatRuns(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 6, BootDelay: 20 * time.Second, Workloads: "none", ReadyTimeout: 5 * time.Minute})
	ctx := context.Background()
	name := w.env.Groups[0]
	before := w.group(t, name)
	o := w.options(name)
	o.MaxInFlight, o.FenceBatch = rollout.Amount{N: 2}, true
	_, ex := w.start(t, o, "rollout-abort")
	running := w.until(t, ex.ID, time.Minute, "two recycles surging", func(p *rollout.Progress) bool {
		n := 0
		for _, nd := range p.Nodes {
			if nd.State == rollout.NodeRunning && nd.Step == "WaitReplacement" {
				n++
			}
		}
		return n == 2
	})
	_ = running
	nodes, err := w.env.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	batched := 0
	for i := range nodes.Items {
		if _, ok := kube.BatchCordonOf(&nodes.Items[i]); ok {
			batched++
		}
	}
	if batched != 2 {
		t.Errorf("%d nodes carry the rollout's batch cordon, want the first batch's 2", batched)
	}
	stopped, err := w.eng.Stop(ctx, ex.ID, recycle.ErrAborted, "test abort")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ab, err := w.eng.Wait(wctx, stopped.RollbackID)
	if err != nil || ab.Status != engine.StatusSucceeded {
		t.Fatalf("abort machine: %v %s %s %s", err, ab.Status, ab.Error, ab.Cause)
	}
	pr := w.progress(t, ex.ID)
	for _, n := range pr.Nodes {
		if n.Execution == "" {
			continue
		}
		c, err := w.eng.Describe(ctx, n.Execution)
		if err != nil || c.Status != engine.StatusAborted || c.RollbackID == "" {
			t.Fatalf("recycle of %s after the abort: %v %s (rollback %q)", n.Node, err, c.Status, c.RollbackID)
		}
		if rb, err := w.eng.Wait(wctx, c.RollbackID); err != nil || rb.Status != engine.StatusSucceeded {
			t.Fatalf("rollback of %s: %v %s %s", n.Node, err, rb.Status, rb.Cause)
		}
	}
	nodes, err = w.env.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		_, batchedNow := kube.BatchCordonOf(n)
		_, fenced := kube.FenceOf(n)
		if n.Spec.Unschedulable || batchedNow || fenced {
			t.Errorf("node %s after the abort: unschedulable %v, batch cordon %v, fence %v", n.Name, n.Spec.Unschedulable, batchedNow, fenced)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		g := w.group(t, name)
		if g.Desired == before.Desired && g.CountLifecycle(cloud.LifecycleStandby) == 0 && len(g.Instances) == len(before.Instances) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group after the abort: desired %d (was %d), %d in Standby, %d instances (was %d)", g.Desired, before.Desired, g.CountLifecycle(cloud.LifecycleStandby), len(g.Instances), len(before.Instances))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Nothing starts outside the maintenance windows: the gate holds every node with the
// next opening as its reason.
func TestRolloutStartsNothingOutsideTheWindows(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 2, BootDelay: time.Second, Workloads: "none"})
	ctx := context.Background()
	o := w.options(w.env.Groups[0])
	// Open one hour a week, on a day that is not today (UTC).
	other := time.Now().UTC().Add(48 * time.Hour).Weekday().String()[:3]
	o.Windows = []string{other + " 03:00-04:00 UTC"}
	o.MaxInFlight = rollout.Amount{N: 2}
	_, ex := w.start(t, o, "rollout-window")
	held := w.until(t, ex.ID, time.Minute, "held outside the window", func(p *rollout.Progress) bool {
		return p.Summary.Waiting == 2 && strings.Contains(p.Summary.Why, "outside the maintenance windows")
	})
	if !strings.Contains(held.Summary.Why, other+" 03:00-04:00 UTC") || !strings.Contains(held.Summary.Why, "next opens") {
		t.Errorf("hold reason %q does not name the window and its next opening", held.Summary.Why)
	}
	time.Sleep(2 * time.Second)
	recycles, err := w.eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName})
	if err != nil || len(recycles) != 0 {
		t.Errorf("%d recycles started outside the window (%v)", len(recycles), err)
	}
	if _, err := w.eng.Stop(ctx, ex.ID, recycle.ErrAborted, "test done"); err != nil {
		t.Fatal(err)
	}
}

// A health hold longer than --pause-timeout becomes a pause for a person; after the
// node recovers, a resume finishes the rollout.
func TestRolloutHoldBecomesAPauseAfterThePauseTimeout(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 3, BootDelay: time.Second, Workloads: "none"})
	ctx := context.Background()
	name := w.env.Groups[0]
	o := w.options(name)
	o.MaxUnhealthy, o.PauseTimeout = rollout.Amount{N: 0}, recycle.Duration(4*time.Second)
	nodes, err := w.env.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sick := nodes.Items[0].Name
	setReady(t, w.env, sick, false)
	_, ex := w.start(t, o, "rollout-hold-pause")
	paused := w.until(t, ex.ID, time.Minute, "paused after holding", func(p *rollout.Progress) bool { return p.Summary.Paused })
	if !strings.Contains(paused.Summary.Why, "held longer than --pause-timeout 4s") || !strings.Contains(paused.Summary.Why, sick+" NotReady") {
		t.Errorf("pause reason %q", paused.Summary.Why)
	}
	if paused.Summary.Replaced+paused.Summary.Running != 0 {
		t.Fatalf("a recycle started while the group was over its budget:\n%s", nodesText(paused))
	}
	setReady(t, w.env, sick, true)
	for _, pe := range paused.Pauses {
		if _, err := w.eng.Stop(ctx, pe.ID, rollout.ErrResumed, "resumed by the test"); err != nil {
			t.Fatal(err)
		}
	}
	pr := w.wait(t, ex.ID, 3*time.Minute)
	if pr.Execution.Status != engine.StatusSucceeded || pr.Summary.Replaced != 3 {
		t.Fatalf("after the resume: %s %+v\n%s", pr.Execution.Status, pr.Summary, nodesText(pr))
	}
}
