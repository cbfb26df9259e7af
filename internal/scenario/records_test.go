package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/sim"
)

// Recycles that meet another actor on the group, AWS's in-between states, or a
// crash between two AWS calls: each undoes (or finishes) exactly what it did.

// scaleUp raises the group's desired capacity by one through its own SDK client, as
// a cluster autoscaler would, and returns the instance that launched for it.
func scaleUp(t *testing.T, env *sim.Environment, group string) string {
	t.Helper()
	ctx := context.Background()
	c := autoscaling.New(autoscaling.Options{Region: env.Region, BaseEndpoint: sdkaws.String(env.AWS.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")})
	before := groupIDs(t, env, group)
	out, err := c.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{group}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		t.Fatalf("describe %s: %v", group, err)
	}
	desired := sdkaws.ToInt32(out.AutoScalingGroups[0].DesiredCapacity) + 1
	if _, err := c.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: &group, DesiredCapacity: &desired}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range groupIDs(t, env, group) {
			if !slices.Contains(before, id) {
				return id
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the scale-up launched nothing")
	return ""
}

func groupIDs(t *testing.T, env *sim.Environment, group string) []string {
	t.Helper()
	var ids []string
	for _, g := range env.AWS.Status().Groups {
		if g.Name != group {
			continue
		}
		for _, in := range g.Instances {
			if !strings.HasPrefix(in.Lifecycle, "Terminating") {
				ids = append(ids, in.ID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// entered returns an onEvent that sends the execution id once state is entered.
func entered(state string, ch chan<- string) func(engine.Event) error {
	return func(ev engine.Event) error {
		var d struct {
			Name string `json:"name"`
		}
		if ev.Type == "TaskStateEntered" && json.Unmarshal(ev.Details, &d) == nil && d.Name == state {
			select {
			case ch <- ev.ExecutionID:
			default:
			}
		}
		return nil
	}
}

// settledGroup waits until the group has exactly want as members, all InService.
func (w *world) settledGroup(t *testing.T, want []string) cloud.Group {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := w.group(t)
		var ids []string
		for _, in := range g.Instances {
			ids = append(ids, in.ID)
		}
		slices.Sort(ids)
		if slices.Equal(ids, want) && g.CountLifecycle(cloud.LifecycleInService) == len(want) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("group members %v (%+v), want %v all InService", ids, g.Instances, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A cluster autoscaler scales the group up while a --no-surge recycle drains; the
// recycle is aborted. The rollback changed nothing on AWS before Retire, so it
// removes nothing: the autoscaler's instance (its pods would die unevicted) stays.
func TestNoSurgeAbortLeavesTheAutoscalersInstance(t *testing.T) {
	w := newWorld(t, 2*time.Second, 10*time.Minute)
	ctx := context.Background()
	node := w.longJobNode(t)
	before := groupIDs(t, w.env, w.env.Groups[0])
	desired := w.group(t).Desired
	req := w.request(node, time.Hour)
	req.NoSurge = true
	draining := make(chan string, 1)
	var theirs string
	go func() {
		id := <-draining
		theirs = scaleUp(t, w.env, w.env.Groups[0])
		time.Sleep(3 * time.Second) // the autoscaler's node is up and serving
		if _, err := w.eng.Stop(ctx, id, recycle.ErrAborted, "test abort during a --no-surge drain"); err != nil {
			t.Errorf("abort: %v", err)
		}
	}()
	out, err := w.h.Recycle(ctx, w.eng, req, "no-surge-abort", entered("Drain", draining))
	if err != nil {
		t.Fatal(err)
	}
	if out.Execution.Status != engine.StatusAborted {
		t.Fatalf("status %s, want ABORTED", out.Execution.Status)
	}
	if rb, err := w.eng.Wait(ctx, out.Execution.RollbackID); err != nil || rb.Status != engine.StatusSucceeded {
		t.Fatalf("rollback: %v %s %s", err, rb.Error, rb.Cause)
	}
	assertUnfenced(t, w, node)
	g := w.settledGroup(t, append(slices.Clone(before), theirs))
	if g.Desired != desired+1 {
		t.Errorf("desired %d after the rollback, want %d (the autoscaler's scale-up kept)", g.Desired, desired+1)
	}
	// --no-surge drains before any replacement exists, by definition (1b does not apply).
	for _, c := range out.Report.Checks {
		if !c.OK && !strings.HasPrefix(c.Name, "1b") {
			t.Errorf("invariants broken:\n%s", out.Report)
			break
		}
	}
}

// A cluster autoscaler launches an instance while the replacement boots. The
// replacement is the instance the standby caused, not the autoscaler's: only it is
// claimed (protected from scale-in) and drained into, and after the recycle the
// autoscaler's instance is still there, unprotected.
func TestAutoscalerLaunchDuringTheSurgeIsNotTheReplacement(t *testing.T) {
	w := newWorld(t, 3*time.Second, 4*time.Second)
	ctx := context.Background()
	node := w.longJobNode(t)
	desired := w.group(t).Desired
	waiting := make(chan string, 1)
	var theirs string
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-waiting
		theirs = scaleUp(t, w.env, w.env.Groups[0])
	}()
	out, err := w.h.Recycle(ctx, w.eng, w.request(node, 10*time.Minute), "autoscaler-during-surge", entered("CheckReplacement", waiting))
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if out.Execution.Status != engine.StatusSucceeded {
		t.Fatalf("recycle %s: %s %s", out.Execution.Status, out.Execution.Error, out.Execution.Cause)
	}
	st := recycle.StateFromHistory(out.History)
	if st.Replacement == nil || len(st.Replacement.Instances) != 1 || st.Replacement.Instances[0] == theirs {
		t.Fatalf("replacement %+v: want exactly one instance, not the autoscaler's %s", st.Replacement, theirs)
	}
	g := w.group(t)
	if g.Desired != desired+1 {
		t.Errorf("desired %d after the recycle, want %d", g.Desired, desired+1)
	}
	for _, id := range []string{theirs, st.Replacement.Instances[0]} {
		gi, ok := g.Instance(id)
		if !ok || gi.Lifecycle != cloud.LifecycleInService || gi.ProtectedFromScaleIn {
			t.Errorf("instance %s after the recycle: %+v; want InService, not protected from scale-in", id, gi)
		}
	}
	if !out.Report.OK() {
		t.Errorf("invariants broken:\n%s", out.Report)
	}
}

// AWS holds the old instance in EnteringStandby while it leaves its load balancers.
// An abort then must wait and bring it back, not skip it and report success.
func TestRollbackWaitsOutEnteringStandby(t *testing.T) {
	w := newWorld(t, 2*time.Second, 10*time.Minute)
	ctx := context.Background()
	const hold = 8 * time.Second
	if err := w.env.AWS.SetFaults(sim.Faults{BootDelay: sim.Duration(5 * time.Minute),
		TransitionDelays: map[string]sim.Duration{"EnteringStandby": sim.Duration(hold)}}); err != nil {
		t.Fatal(err)
	}
	node := w.longJobNode(t)
	before := groupIDs(t, w.env, w.env.Groups[0])
	desired := w.group(t).Desired
	waiting := make(chan string, 1)
	var abortedAt time.Time
	go func() {
		id := <-waiting
		abortedAt = time.Now()
		if _, err := w.eng.Stop(ctx, id, recycle.ErrAborted, "test abort while EnteringStandby"); err != nil {
			t.Errorf("abort: %v", err)
		}
	}()
	out, err := w.h.Recycle(ctx, w.eng, w.request(node, time.Hour), "entering-standby", entered("CheckReplacement", waiting))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := w.eng.Wait(ctx, out.Execution.RollbackID)
	if err != nil || rb.Status != engine.StatusSucceeded {
		t.Fatalf("rollback: %v %s %s", err, rb.Error, rb.Cause)
	}
	if took := rb.StopTime.Sub(abortedAt); took < hold/2 {
		t.Errorf("the rollback ended %s after the abort, before the instance could have left EnteringStandby (%s)", took, hold)
	}
	assertUnfenced(t, w, node)
	g := w.settledGroup(t, before)
	if g.Desired != desired || g.CountLifecycle(cloud.LifecycleStandby) != 0 || g.Suspended(cloud.ProcessAZRebalance) {
		t.Errorf("group after the rollback: desired %d (was %d), %+v, suspended %v", g.Desired, desired, g.Instances, g.SuspendedProcesses)
	}
}

// `recycler recycle --no-surge` is SIGKILLed the moment DetachInstances took effect,
// before it heard back; `recycler resume` must recognise its own detach and
// terminate the instance, not refuse it as "in no group" and roll back (which
// would leave it running outside any group).
func TestCrashBetweenDetachAndTerminate(t *testing.T) {
	r := startCrashRig(t)
	ctx := context.Background()
	if err := r.env.AWS.SetFaults(sim.Faults{}); err != nil {
		t.Fatal(err)
	}
	node, inst, before := r.pickNode(t)
	db := filepath.Join(r.dir, "no-surge.db")
	var logs bytes.Buffer
	code, _, err := r.exec(ctx, &logs, &crashKill{what: "recycle", onCall: "DetachInstances"},
		"recycle", node, "--state", db, "--no-surge", "-o", "json")
	if err != nil || code != -1 {
		t.Fatalf("recycle --no-surge was not killed at DetachInstances (exit %d, %v):\n%s", code, err, logs.String())
	}
	if code, _, err = r.exec(ctx, &logs, nil, "resume", "--state", db); err != nil || code != 0 {
		t.Fatalf("resume exited %d (%v), want 0:\n%s", code, err, logs.String())
	}
	ex, _ := r.execution(t, db)
	if ex.Status != engine.StatusSucceeded {
		t.Fatalf("execution %s %s (%s: %s), want SUCCEEDED", ex.ID, ex.Status, ex.Error, ex.Cause)
	}
	insts, err := r.h.Observer.Instances(ctx, inst)
	if err != nil || len(insts) != 1 || (insts[0].State != cloud.StateTerminated && insts[0].State != cloud.StateShuttingDown) {
		t.Errorf("old instance %s after resume: %+v, %v; want terminated", inst, insts, err)
	}
	if _, err := r.env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old node %s still exists (err %v)", node, err)
	}
	// The group kept its desired capacity and launched the replacement itself.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := r.h.Observer.Group(ctx, before.Name)
		if err != nil {
			t.Fatal(err)
		}
		_, stillIn := g.Instance(inst)
		if g.Desired == before.Desired && !stillIn && g.CountLifecycle(cloud.LifecycleInService) == int(before.Desired) && len(g.Instances) == int(before.Desired) {
			r.checkNoMarks(t, 0, g)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group after resume: desired %d (was %d), %+v", g.Desired, before.Desired, g.Instances)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A recycle is SIGKILLed mid-drain and its state file deleted (a CI workspace
// wiped): `recycler status` names the orphan it left — the fenced node, its
// instance in Standby, who and when — from the cluster and the group alone, and
// `recycler abort --node` rolls it back from those records: the node serves again
// and the group has exactly the members and desired capacity it had before.
func TestLostStateFileRolledBackFromTheRecords(t *testing.T) {
	r := startCrashRig(t)
	ctx := context.Background()
	node, inst, before := r.pickNode(t)
	r.selectedPod(t, 0, node)
	db := filepath.Join(r.dir, "lost.db")
	var logs bytes.Buffer
	code, _, err := r.exec(ctx, &logs, &crashKill{what: "recycle", onCall: "Evict"},
		"recycle", node, "--state", db, "--selector", crashSelectedLabel+"=true", "--namespace", crashNamespace)
	if err != nil || code != -1 {
		t.Fatalf("recycle was not killed mid-drain (exit %d, %v):\n%s", code, err, logs.String())
	}
	ex, _ := r.execution(t, db)
	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		if err := os.Remove(db + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	fresh := filepath.Join(r.dir, "fresh.db")
	var status bytes.Buffer
	if got, _, err := r.exec(ctx, &status, nil, "status", "--state", fresh); err != nil || got != 0 {
		t.Fatalf("status exited %d (%v):\n%s", got, err, status.String())
	}
	for _, want := range []string{"1 orphan(s)", node, inst, ex.ID, "fenced (tainted, cordoned)", "in Standby", "recycler abort --node"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status does not name %q:\n%s", want, status.String())
		}
	}
	logs.Reset()
	code, _, err = r.exec(ctx, &logs, nil, "abort", "--node", node, "--state", fresh)
	if err != nil || code != 1 || !strings.Contains(logs.String(), "aborted and rolled back") {
		t.Fatalf("abort --node exited %d (%v), want 1 (rolled back):\n%s", code, err, logs.String())
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("desired %d → %d", before.Desired, before.Desired)) {
		t.Errorf("abort --node does not state the group's counts before and after:\n%s", logs.String())
	}
	var ids []string
	for _, in := range before.Instances {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := r.h.Observer.Group(ctx, before.Name)
		if err != nil {
			t.Fatal(err)
		}
		var now []string
		for _, in := range g.Instances {
			now = append(now, in.ID)
		}
		slices.Sort(now)
		if slices.Equal(now, ids) && g.Desired == before.Desired && g.CountLifecycle(cloud.LifecycleInService) == len(ids) &&
			g.MaxSize == before.MaxSize && !g.Suspended(cloud.ProcessAZRebalance) && len(g.Tags) == len(before.Tags) {
			r.checkNoMarks(t, 0, g)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group after abort --node: members %v desired %d max %d suspended %v tags %v; want %v desired %d max %d as before",
				now, g.Desired, g.MaxSize, g.SuspendedProcesses, g.Tags, ids, before.Desired, before.MaxSize)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var again bytes.Buffer
	if got, _, err := r.exec(ctx, &again, nil, "status", "--state", fresh); err != nil || got != 0 || !strings.Contains(again.String(), "no orphans") {
		t.Errorf("status after the rollback (exit %d, %v) still lists orphans:\n%s", got, err, again.String())
	}
}
