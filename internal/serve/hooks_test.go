package serve_test

// Terminate lifecycle hooks meeting recycles of our own: a termination Recycler
// caused, and a scale-in of a node another recycle holds.

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/cli"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/testenv"
)

// terminateHook puts a terminate lifecycle hook named "drain" on group.
func (f *fixture) terminateHook(group string, timeout int32) {
	f.t.Helper()
	if _, err := f.asg.PutLifecycleHook(f.ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String(group), LifecycleHookName: aws.String("drain"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(timeout), DefaultResult: aws.String("CONTINUE")}); err != nil {
		f.t.Fatal(err)
	}
}

// job starts a selected pod (label app=label) on node that runs for d.
func (f *fixture) job(ns, name, label, node string, d time.Duration) {
	f.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": label},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: d.String()}},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := f.kube.Client.CoreV1().Pods(ns).Create(f.ctx, p, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	f.eventually(time.Minute, name+" Running", func() bool {
		got, err := f.kube.Client.CoreV1().Pods(ns).Get(f.ctx, name, metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning
	})
}

// members returns the group's desired capacity and its members' ids and lifecycles.
func (f *fixture) members(group string) (desired int, ids []string, lifecycles map[string]string) {
	lifecycles = map[string]string{}
	for _, g := range f.env.AWS.Status().Groups {
		if g.Name != group {
			continue
		}
		for _, in := range g.Instances {
			ids = append(ids, in.ID)
			lifecycles[in.ID] = in.Lifecycle
		}
		slices.Sort(ids)
		return g.Desired, ids, lifecycles
	}
	return 0, nil, lifecycles
}

// tasksRun returns the tasks an execution ran, in order.
func (s *served) tasksRun(t *testing.T, id string) []string {
	t.Helper()
	eng, err := engine.Open(context.Background(), engine.Options{Path: s.state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	hist, err := eng.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var tasks []string
	for _, ev := range hist {
		var d struct {
			Params struct {
				Task string `json:"task"`
			} `json:"parameters"`
		}
		if ev.Type == "TaskScheduled" && json.Unmarshal(ev.Details, &d) == nil {
			tasks = append(tasks, d.Params.Task)
		}
	}
	return tasks
}

// A rollback terminates its replacement with TerminateInstanceInAutoScalingGroup, so
// a group with a terminate hook announces that termination like any scale-in. The
// recycle the hook starts must see that the termination is Recycler's own (the
// replacement's records), answer CONTINUE at once and touch nothing: no fence, no
// drain of a node the rollback just drained, and the group ends as it started.
func TestServeRollbackTerminatingItsReplacementStartsNoRecycleOfIt(t *testing.T) {
	f := setup(t)
	instances, nodes := f.group("ownterm", 2)
	victim := instances[0]
	url := f.queue("ownterm-events")
	// A long heartbeat timeout: only an answer ends the replacement's wait within the test.
	f.terminateHook("ownterm", 3600)
	ns := f.kube.Namespace(t)
	f.job(ns, "job", "ownjob", nodes[0], 10*time.Minute)
	desired, before, _ := f.members("ownterm")
	s := f.startServe("ownterm", "--sqs-queue-url", url, "--selector", "app=ownjob", "--namespace", ns, "--max-wait", "10m")

	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000e1", victim, "ALARM"))
	f.eventually(2*time.Minute, "the alarm's recycle draining (its replacement Ready)", func() bool {
		return metric(s.metrics, `recycler_executions_running{step="Drain"}`) == "1"
	})
	exs := s.executions(t)
	if len(exs) != 1 {
		t.Fatalf("executions %+v, want the alarm's recycle only", exs)
	}
	alarm := exs[0]
	_, during, _ := f.members("ownterm")
	var replacement string
	for _, id := range during {
		if !slices.Contains(before, id) {
			replacement = id
		}
	}
	if replacement == "" {
		t.Fatalf("no replacement in the group: %v (before %v)", during, before)
	}

	abort := make(chan int, 1)
	go func() {
		abort <- cli.Execute(context.Background(), []string{"abort", alarm.ID, "--state", s.state}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	select {
	case code := <-abort:
		if code != 1 {
			t.Fatalf("abort exited %d, want 1 (rolled back)", code)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("abort did not return within 3 minutes")
	}
	// The rollback asked the group to terminate the replacement; the hook held it in
	// Terminating:Wait until someone answered.
	f.eventually(2*time.Minute, "the replacement "+replacement+" terminated", func() bool {
		state := f.instanceState(replacement)
		return state == "shutting-down" || state == "terminated" || state == "gone"
	})
	if got := f.env.AWS.LifecycleAnswers(replacement); !slices.Equal(got, []string{"drain=CONTINUE"}) {
		t.Errorf("lifecycle answers for the replacement %v, want exactly [drain=CONTINUE]", got)
	}
	if got := f.env.AWS.LifecycleAnswers(victim); len(got) != 0 {
		t.Errorf("lifecycle answers for the old instance %v: it was never terminated", got)
	}
	f.eventually(time.Minute, "every recycle ended", func() bool {
		for _, ex := range s.executions(t) {
			if !ex.Status.Done() {
				return false
			}
		}
		return true
	})
	for _, ex := range s.executions(t) {
		if ex.ID == alarm.ID {
			continue
		}
		// The hook's recycle: it answered and did nothing else.
		var st recycle.State
		_ = json.Unmarshal(ex.Input, &st)
		if st.Request.InstanceID != replacement || st.Request.LifecycleHook == nil {
			t.Errorf("unexpected execution %s: %+v", ex.ID, st.Request)
			continue
		}
		if ex.Status != engine.StatusSucceeded {
			t.Errorf("the hook's recycle of our own replacement ended %s (%s: %s), want Succeeded", ex.Status, ex.Error, ex.Cause)
		}
		if !strings.Contains(string(ex.Output), "terminated by Recycler itself") {
			t.Errorf("the hook's recycle does not say why it only answered: output %s", ex.Output)
		}
		for _, task := range s.tasksRun(t, ex.ID) {
			if task != "Resolve" && task != "AnswerHook" {
				t.Errorf("the hook's recycle of our own replacement ran %s: it must only answer the hook", task)
			}
		}
	}
	f.eventually(time.Minute, "the group as it started", func() bool {
		d, ids, lc := f.members("ownterm")
		for _, id := range ids {
			if lc[id] != "InService" {
				return false
			}
		}
		return d == desired && slices.Equal(ids, before)
	})
	if _, err := f.kube.Client.CoreV1().Nodes().Get(f.ctx, nodes[0], metav1.GetOptions{}); err != nil {
		t.Errorf("the old node: %v", err)
	}
	f.eventually(30*time.Second, "queue and dead-letter queue empty", func() bool {
		return len(f.env.AWS.QueueMessages("ownterm-events")) == 0 && len(f.env.AWS.QueueMessages("ownterm-events-dlq")) == 0
	})
}

// The group scales in the very instance a recycle of ours is draining (--no-surge,
// so it is still InService). That recycle owns the node; the terminate hook starts
// no second recycle. An execution of its own only answers it: it heartbeats the
// action while our drain waits for the selected pod (which outlives the hook's
// 30 s timeout), and answers CONTINUE once the node is drained — never before the
// pod finished, exactly once.
func TestServeScaleInOfANodeOurRecycleDrainsWaitsForThatDrain(t *testing.T) {
	f := setup(t)
	instances, nodes := f.group("held", 2)
	victim := instances[0]
	url := f.queue("held-events")
	f.terminateHook("held", 30)
	ns := f.kube.Namespace(t)
	f.job(ns, "job", "heldjob", nodes[0], 45*time.Second)
	desired, _, _ := f.members("held")
	s := f.startServe("held", "--sqs-queue-url", url, "--selector", "app=heldjob", "--namespace", ns, "--max-wait", "10m", "--no-surge")

	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000e2", victim, "ALARM"))
	f.eventually(2*time.Minute, "the alarm's recycle draining", func() bool {
		return metric(s.metrics, `recycler_executions_running{step="Drain"}`) == "1"
	})
	exs := s.executions(t)
	if len(exs) != 1 {
		t.Fatalf("executions %+v, want the alarm's recycle only", exs)
	}
	alarm := exs[0]
	f.env.AWS.ResetCalls()
	// Scale-in picks the victim while it drains.
	if extended := f.scaleInUntilTerminated(victim, ns, "job"); extended < 10*time.Second {
		t.Errorf("hook deadline extended by %s only: nobody heartbeated it while our drain ran", extended)
	}
	if got := f.env.AWS.LifecycleAnswers(victim); !slices.Equal(got, []string{"drain=CONTINUE"}) {
		t.Errorf("lifecycle answers for the victim %v, want exactly [drain=CONTINUE]", got)
	}
	exs = s.waitEnded(t, f, 2*time.Minute)
	if len(exs) != 2 {
		t.Fatalf("executions %+v, want the alarm's recycle and the hook's answer", exs)
	}
	for _, ex := range exs {
		if ex.Status != engine.StatusSucceeded {
			t.Errorf("execution %s (%s) ended %s (%s: %s), want Succeeded", ex.Name, ex.ID, ex.Status, ex.Error, ex.Cause)
		}
		if ex.ID == alarm.ID {
			continue
		}
		if !strings.HasPrefix(ex.Name, victim+"-hook-") {
			t.Errorf("the hook's execution is named %s, want %s-hook-…", ex.Name, victim)
		}
		for _, task := range s.tasksRun(t, ex.ID) {
			if task != "Resolve" && task != "AnswerHook" {
				t.Errorf("the hook's execution ran %s: the alarm's recycle owns the node, it must only answer the hook", task)
			}
		}
	}
	if calls := f.env.AWS.Calls(); calls["autoscaling:EnterStandby"]+calls["autoscaling:SetDesiredCapacity"] != 0 {
		t.Errorf("something surged: %v", calls)
	}
	others := slices.DeleteFunc(slices.Clone(instances), func(id string) bool { return id == victim })
	slices.Sort(others)
	f.eventually(time.Minute, "the group one smaller (the scale-in), the other instance kept", func() bool {
		d, ids, _ := f.members("held")
		return d == desired-1 && slices.Equal(ids, others)
	})
	f.eventually(30*time.Second, "queue and dead-letter queue empty", func() bool {
		return len(f.env.AWS.QueueMessages("held-events")) == 0 && len(f.env.AWS.QueueMessages("held-events-dlq")) == 0
	})
}
