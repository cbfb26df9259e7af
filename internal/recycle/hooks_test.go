package recycle_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/recycle"
)

// On Step Functions, EventBridge starts a recycle for every terminate lifecycle
// action of the group (deploy/terraform triggers.tf), our own terminations
// included. A rollback terminates its replacement through the group: the recycle
// that action starts must answer CONTINUE and touch nothing. The tasks are what the
// Lambda runs (Tasks.Invoke), against the real control plane and the simulator.
func TestHookOfARollbacksOwnTerminationIsOnlyAnswered(t *testing.T) {
	w := newEdgeWorld(t)
	g, node := w.group(t, 2)
	if _, err := w.asg.PutLifecycleHook(context.Background(), &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: &g.Name, LifecycleHookName: sdkaws.String("drain"),
		LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: sdkaws.Int32(3600), DefaultResult: sdkaws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	const exec = "recycle-own-1"
	req := recycle.NewRequest(node)
	req.CheckSeconds, req.MaxWait = 5, recycle.Duration(10*time.Minute)
	st := recycle.State{Request: req}
	for _, task := range []string{recycle.TaskResolve, recycle.TaskFence, recycle.TaskSurge, recycle.TaskCheckReplacement, recycle.TaskRollback} {
		if err := w.step(t, exec, task, &st); err != nil {
			t.Fatalf("%s: %v", task, err)
		}
	}
	replacement := st.Replacement.Instances[0]
	if in, err := w.h.Observer.Instance(context.Background(), replacement); err != nil || in.Lifecycle != cloud.LifecycleTerminatingWait {
		t.Fatalf("replacement after the rollback: %+v, %v; want held in Terminating:Wait by the hook", in, err)
	}

	// The recycle EventBridge starts for that action (hook_input of triggers.tf).
	hreq := recycle.NewRequest(replacement)
	hreq.NoSurge = false // the module's defaults
	hreq.LifecycleHook = &recycle.LifecycleHook{Group: g.Name, Name: "drain"}
	hst := recycle.State{Request: hreq}
	const hexec = "recycle-hook-1"
	if err := w.step(t, hexec, recycle.TaskResolve, &hst); err != nil {
		t.Fatalf("Resolve of the hook's recycle: %v", err)
	}
	if hst.Target.HookOnly == nil || !hst.Target.HookOnly.Own || hst.Target.HookOnly.By != exec {
		t.Fatalf("Resolve: hookOnly %+v, want our own termination by %s", hst.Target.HookOnly, exec)
	}
	if err := w.step(t, hexec, recycle.TaskAnswerHook, &hst); err != nil {
		t.Fatalf("AnswerHook: %v", err)
	}
	if !hst.Answer.Done || !hst.Answer.Answered || !strings.Contains(hst.Answer.Reason, "terminated by Recycler itself") {
		t.Errorf("answer %+v: want done, answered, saying why", hst.Answer)
	}
	if got := w.env.AWS.LifecycleAnswers(replacement); !slices.Equal(got, []string{"drain=CONTINUE"}) {
		t.Errorf("lifecycle answers for the replacement %v, want exactly [drain=CONTINUE]", got)
	}
	after := w.settled(t, g.Name, 2)
	if !slices.Equal(members(after), members(g)) || after.Desired != g.Desired {
		t.Errorf("group after: members %v desired %d, want %v desired %d", members(after), after.Desired, members(g), g.Desired)
	}
}
