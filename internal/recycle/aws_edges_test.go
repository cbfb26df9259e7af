package recycle_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
)

// The AWS side of the task functions on the paths production takes: each case
// drives Resolve → Fence → Surge → CheckReplacement → Retire or Rollback (as the
// state machine would: a "not yet" or a transient error is asked again, anything
// else fails the case) against the real control plane and the simulator, with
// faults scripted for the case.

type edgeWorld struct {
	env   *sim.Environment
	h     *scenario.Harness
	asg   *autoscaling.Client // another actor on the group (a cluster autoscaler), not the recycle's client
	seq   int
	tasks *recycle.Tasks
}

func newEdgeWorld(t *testing.T) *edgeWorld {
	t.Helper()
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	ctx := context.Background()
	env, err := sim.Up(ctx, sim.UpOptions{Groups: 1, Nodes: 1, Workloads: "none", BootDelay: 2 * time.Second})
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
	asg := autoscaling.New(autoscaling.Options{Region: env.Region, BaseEndpoint: sdkaws.String(env.AWS.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")})
	return &edgeWorld{env: env, h: h, asg: asg, tasks: h.Tasks}
}

// group creates a fresh group of n Ready nodes and returns it with one of its nodes.
func (w *edgeWorld) group(t *testing.T, n int) (cloud.Group, string) {
	t.Helper()
	w.seq++
	name := fmt.Sprintf("edge-%d", w.seq)
	if err := w.env.AWS.CreateGroup(sim.GroupSpec{Name: name, Min: 1, Max: n + 3, Desired: n}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		g := w.describe(t, name)
		nodes, err := w.env.Kube.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "eks.amazonaws.com/nodegroup=" + name})
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, node := range nodes.Items {
			if ok, _ := kube.NodeIsReady(&node, nil); ok {
				ready++
			}
		}
		if g.CountLifecycle(cloud.LifecycleInService) == n && ready == n {
			return g, nodes.Items[0].Name
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: %d InService, %d Ready nodes; want %d", name, g.CountLifecycle(cloud.LifecycleInService), ready, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *edgeWorld) describe(t *testing.T, name string) cloud.Group {
	t.Helper()
	g, err := w.h.Observer.Group(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (w *edgeWorld) faults(t *testing.T, f sim.Faults) {
	t.Helper()
	if err := w.env.AWS.SetFaults(f); err != nil {
		t.Fatal(err)
	}
}

// scaleUp raises desired capacity by one, as a cluster autoscaler would.
func (w *edgeWorld) scaleUp(t *testing.T, group string) {
	t.Helper()
	g := w.describe(t, group)
	if _, err := w.asg.SetDesiredCapacity(context.Background(), &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: &group, DesiredCapacity: sdkaws.Int32(g.Desired + 1),
	}); err != nil {
		t.Fatal(err)
	}
}

// step runs one task as the state machine would and stores its result in st: a
// transient error is asked again after a pause, and a task answering "not done"
// (done=false: a check, AWS between two states) is looped until done.
func (w *edgeWorld) step(t *testing.T, execution, task string, st *recycle.State) error {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		raw, err := json.Marshal(recycle.Payload{Task: task, Execution: execution, State: *st})
		if err != nil {
			t.Fatal(err)
		}
		out, err := w.tasks.Invoke(context.Background(), raw)
		switch name := recycle.ErrorNameOf(err); {
		case err == nil:
		case name == recycle.ErrTransient && time.Now().Before(deadline):
			time.Sleep(300 * time.Millisecond)
			continue
		default:
			return err
		}
		var done struct{ Done *bool }
		if err := json.Unmarshal(out, &done); err != nil {
			t.Fatal(err)
		}
		field := map[string]any{
			recycle.TaskResolve: &st.Target, recycle.TaskFence: &st.Fence, recycle.TaskSurge: &st.Surge,
			recycle.TaskCheckReplacement: &st.Replacement, recycle.TaskRetire: &st.Retire, recycle.TaskRollback: &st.Rollback,
			recycle.TaskAnswerHook: &st.Answer,
		}[task]
		if err := json.Unmarshal(out, field); err != nil {
			t.Fatal(err)
		}
		if done.Done == nil || *done.Done {
			return nil
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not done within 2m: %s", task, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func members(g cloud.Group) []string {
	var ids []string
	for _, in := range g.Instances {
		if !strings.HasPrefix(in.Lifecycle, cloud.LifecycleTerminating) {
			ids = append(ids, in.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// settled waits until the group has want members, all InService, none in standby.
func (w *edgeWorld) settled(t *testing.T, name string, want int) cloud.Group {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		g := w.describe(t, name)
		if len(g.Instances) == want && g.CountLifecycle(cloud.LifecycleInService) == want {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not settle at %d InService: %+v", name, want, g.Instances)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestTasksOnAWSEdges(t *testing.T) {
	w := newEdgeWorld(t)
	type run struct {
		w      *edgeWorld
		before cloud.Group
		st     recycle.State
		// others are instances someone else (the autoscaler) launched meanwhile.
		others []string
	}
	// autoscaler raises desired capacity by one and returns its new instance.
	autoscaler := func(t *testing.T, r *run) {
		before := members(r.w.describe(t, r.before.Name))
		r.w.scaleUp(t, r.before.Name)
		time.Sleep(200 * time.Millisecond)
		for _, id := range members(r.w.describe(t, r.before.Name)) {
			if !slices.Contains(before, id) {
				r.others = append(r.others, id)
			}
		}
		if len(r.others) == 0 {
			t.Fatal("the scale-up launched nothing")
		}
	}
	for _, tc := range []struct {
		name    string
		faults  sim.Faults
		noSurge bool
		// during runs after Surge (after Fence with --no-surge), before the end.
		during func(*testing.T, *run)
		end    string // the last task: Retire or Rollback
	}{
		{name: "throttling storm, recycled", faults: sim.Faults{ThrottleRate: 0.3}, end: recycle.TaskRetire},
		{name: "throttling storm, rolled back", faults: sim.Faults{ThrottleRate: 0.3}, end: recycle.TaskRollback},
		{name: "rollback while EnteringStandby", faults: sim.Faults{TransitionDelays: map[string]sim.Duration{"EnteringStandby": sim.Duration(6 * time.Second)}}, end: recycle.TaskRollback},
		{name: "retire while EnteringStandby and Detaching",
			faults: sim.Faults{TransitionDelays: map[string]sim.Duration{"EnteringStandby": sim.Duration(8 * time.Second), "Detaching": sim.Duration(3 * time.Second)}}, end: recycle.TaskRetire},
		{name: "rollback waits for the exit from standby", faults: sim.Faults{TransitionDelays: map[string]sim.Duration{"Pending": sim.Duration(4 * time.Second)}}, end: recycle.TaskRollback},
		{name: "lost answers: standby and detach", faults: sim.Faults{LostAnswers: map[string]int{"EnterStandby": 1, "DetachInstances": 1}}, end: recycle.TaskRetire},
		{name: "lost answers: exit standby and terminate", faults: sim.Faults{LostAnswers: map[string]int{"ExitStandby": 1, "TerminateInstanceInAutoScalingGroup": 1}}, end: recycle.TaskRollback},
		{name: "autoscaler scales up during the surge, recycled", during: autoscaler, end: recycle.TaskRetire},
		{name: "autoscaler scales up during the surge, rolled back", during: autoscaler, end: recycle.TaskRollback},
		{name: "no surge: detach answer lost, retire retried", noSurge: true, faults: sim.Faults{LostAnswers: map[string]int{"DetachInstances": 1}}, end: recycle.TaskRetire},
		{name: "no surge: autoscaler scales up, rolled back", noSurge: true, during: autoscaler, end: recycle.TaskRollback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.faults(t, sim.Faults{})
			before, node := w.group(t, 3)
			r := &run{w: w, before: before}
			exec := "edge-" + strings.ReplaceAll(tc.name, " ", "-")
			req := recycle.NewRequest(node)
			req.NoSurge, req.CheckSeconds, req.MaxWait = tc.noSurge, 20, recycle.Duration(10*time.Minute)
			r.st = recycle.State{Request: req}
			w.faults(t, tc.faults)
			defer w.faults(t, sim.Faults{})
			tasks := []string{recycle.TaskResolve, recycle.TaskFence}
			if !tc.noSurge {
				tasks = append(tasks, recycle.TaskSurge)
			}
			for _, task := range tasks {
				if err := w.step(t, exec, task, &r.st); err != nil {
					t.Fatalf("%s: %v", task, err)
				}
			}
			if tc.during != nil {
				tc.during(t, r)
			}
			if !tc.noSurge && (tc.end == recycle.TaskRetire || tc.during != nil) {
				if err := w.step(t, exec, recycle.TaskCheckReplacement, &r.st); err != nil {
					t.Fatalf("%s: %v", recycle.TaskCheckReplacement, err)
				}
				for _, other := range r.others {
					if slices.Contains(r.st.Replacement.Instances, other) {
						t.Fatalf("the autoscaler's %s was taken for the replacement %v", other, r.st.Replacement.Instances)
					}
				}
			}
			if err := w.step(t, exec, tc.end, &r.st); err != nil {
				t.Fatalf("%s: %v", tc.end, err)
			}
			w.faults(t, sim.Faults{})

			want := append(members(before), r.others...)
			old := r.st.Target.InstanceID
			if tc.end == recycle.TaskRetire {
				// The old instance is gone and the group back at its size (plus the
				// autoscaler's instance).
				want = slices.DeleteFunc(want, func(id string) bool { return id == old })
				after := w.settled(t, before.Name, len(want)+1)
				if slices.Contains(members(after), old) || after.Desired != before.Desired+int32(len(r.others)) {
					t.Errorf("after retire: members %v desired %d; want %s gone, desired %d", members(after), after.Desired, old, before.Desired+int32(len(r.others)))
				}
			} else {
				if r.st.Rollback == nil || !r.st.Rollback.Done || r.st.Rollback.After == nil {
					t.Fatalf("rollback result %+v: want done, with the group's counts after", r.st.Rollback)
				}
				slices.Sort(want) // the replacement, even a Ready one, was drained and terminated
				after := w.settled(t, before.Name, len(want))
				if !slices.Equal(members(after), want) || after.Desired != int32(len(want)) {
					t.Errorf("after rollback: members %v desired %d; want %v (the autoscaler's instances kept, ours undone)", members(after), after.Desired, want)
				}
				in, err := w.h.Observer.Instance(context.Background(), old)
				if err != nil || in.Lifecycle != cloud.LifecycleInService {
					t.Errorf("old instance after rollback: %+v, %v; want InService", in, err)
				}
				for k := range in.Tags {
					if strings.HasPrefix(k, "recycler/") {
						t.Errorf("old instance keeps the record %s=%s after its rollback", k, in.Tags[k])
					}
				}
			}
			after := w.describe(t, before.Name)
			if after.Suspended(cloud.ProcessAZRebalance) || after.MaxSize != before.MaxSize || len(after.Tags) != len(before.Tags) {
				t.Errorf("group after the recycle: suspended %v, MaxSize %d (was %d), tags %v; want as before", after.SuspendedProcesses, after.MaxSize, before.MaxSize, after.Tags)
			}
		})
	}
}

// A launch lifecycle hook holds the replacement in Pending:Wait while its Node is
// already Ready. One CheckReplacement call then answers "not yet" after a look or
// two, and the state machine's pause paces the next: it used to loop on a watch
// that ended at once, one DescribeAutoScalingGroups after the other, until the
// check's bound (--check-seconds).
func TestCheckReplacementDoesNotSpinWhileAWSHoldsTheReplacement(t *testing.T) {
	w := newEdgeWorld(t)
	before, node := w.group(t, 2)
	ctx := context.Background()
	if _, err := w.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: &before.Name, LifecycleHookName: sdkaws.String("hold-launch"),
		LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
		HeartbeatTimeout:    sdkaws.Int32(600), DefaultResult: sdkaws.String("CONTINUE"),
	}); err != nil {
		t.Fatal(err)
	}
	exec := "edge-held-launch"
	req := recycle.NewRequest(node)
	req.CheckSeconds, req.MaxWait = 20, recycle.Duration(10*time.Minute)
	st := recycle.State{Request: req}
	for _, task := range []string{recycle.TaskResolve, recycle.TaskFence, recycle.TaskSurge} {
		if err := w.step(t, exec, task, &st); err != nil {
			t.Fatalf("%s: %v", task, err)
		}
	}
	// Wait (as a person would look) until the replacement's Node is Ready.
	deadline := time.Now().Add(time.Minute)
	for {
		g := w.describe(t, before.Name)
		var held string
		for _, in := range g.Instances {
			if in.Lifecycle == cloud.LifecyclePendingWait {
				held = in.ID
			}
		}
		if held != "" {
			if n, err := w.h.Tasks.Cluster.ResolveNode(ctx, held); err == nil {
				if ok, _ := kube.NodeIsReady(n, nil); ok {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replacement held in Pending:Wait with a Ready Node: %+v", g.Instances)
		}
		time.Sleep(200 * time.Millisecond)
	}
	m := w.h.Provider.Metrics()
	for pass := range 2 { // the first pass reads the activities, the second starts from its answer
		m.Reset()
		start := time.Now()
		raw, err := json.Marshal(recycle.Payload{Task: recycle.TaskCheckReplacement, Execution: exec, State: st})
		if err != nil {
			t.Fatal(err)
		}
		out, err := w.tasks.Invoke(ctx, raw)
		if err != nil {
			t.Fatalf("check #%d: %v", pass+1, err)
		}
		st.Replacement = nil
		if err := json.Unmarshal(out, &st.Replacement); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if st.Replacement.Done || len(st.Replacement.Pending) != 1 {
			t.Fatalf("check #%d: %+v; want not done, the held replacement pending", pass+1, st.Replacement)
		}
		if calls := m.TotalCalls(); calls > 3 || took > 10*time.Second {
			t.Errorf("check #%d: %d AWS calls (%v) in %s while AWS holds the replacement; want at most 3, and an answer long before --check-seconds 20",
				pass+1, calls, m.Calls(), took.Round(time.Millisecond))
		}
	}
}
