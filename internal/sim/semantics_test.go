package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// inService counts the InService instances of group "ng", the group these tests seed.
func (h *harness) inService() int {
	return len(byState(h.group("ng"), astypes.LifecycleStateInService))
}

// TestStandbyReplacementDetachTerminateKeepsCapacity is Recycler's surge/retire cycle:
// the group's InService count never drops below desired.
func TestStandbyReplacementDetachTerminateKeepsCapacity(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(1, 4, 3)
	old := byState(g, astypes.LifecycleStateInService)[0]
	oldNode := ""
	for name, n := range h.nodes.snapshot() {
		if n.ID == old {
			oldNode = name
		}
	}
	if oldNode == "" || len(h.nodes.snapshot()) != 3 {
		t.Fatalf("want one Node per running instance, got %v", h.nodes.snapshot())
	}

	out, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: []string{old}, ShouldDecrementDesiredCapacity: aws.Bool(false)})
	if err != nil || len(out.Activities) != 1 || !strings.Contains(aws.ToString(out.Activities[0].Description), "Moving EC2 instance to Standby: "+old) {
		t.Fatalf("EnterStandby: %v %+v", err, out)
	}
	// AWS holds the instance in EnteringStandby while it leaves its target groups;
	// the replacement launches at once.
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 3 || len(byState(g, astypes.LifecycleStateEnteringStandby)) != 1 || len(byState(g, astypes.LifecycleStatePending)) != 1 {
		t.Fatalf("right after standby without decrement: desired %d, instances %+v", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	h.step(defaultTransitionDelay)
	g = h.group("ng")
	if len(byState(g, astypes.LifecycleStateStandby)) != 1 || len(byState(g, astypes.LifecycleStateEnteringStandby)) != 0 {
		t.Fatalf("%s after standby: instances %+v, want the old one in Standby", defaultTransitionDelay, g.Instances)
	}
	replacement := byState(g, astypes.LifecycleStatePending)[0]
	var oldAZ string
	for _, i := range g.Instances {
		if *i.InstanceId == old {
			oldAZ = *i.AvailabilityZone
		}
	}
	for _, i := range g.Instances {
		if *i.InstanceId == replacement && *i.AvailabilityZone != oldAZ {
			t.Fatalf("replacement launched in %s, want the standby instance's zone %s (keeps zones balanced)", *i.AvailabilityZone, oldAZ)
		}
	}
	// Standby instances stay running: their Node stays.
	if _, ok := h.nodes.snapshot()[oldNode]; !ok {
		t.Fatal("standby instance lost its Node")
	}
	h.step(20 * time.Second)
	if n := h.inService(); n != 2 {
		t.Fatalf("while the replacement boots: %d InService, want 2 (+1 standby)", n)
	}
	h.step(20 * time.Second)
	if n := h.inService(); n != 3 {
		t.Fatalf("replacement did not become InService: %d", n)
	}

	if _, err := h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: []string{old}, ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatalf("DetachInstances of a Standby instance: %v", err)
	}
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 3 || len(byState(g, astypes.LifecycleStateDetaching)) != 1 || h.inService() != 3 {
		t.Fatalf("right after detach: desired %d, %+v; want the old one Detaching", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	h.step(defaultTransitionDelay)
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 3 || len(g.Instances) != 3 || h.inService() != 3 {
		t.Fatalf("after detach: desired %d, %+v", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	ai, _ := h.asg.DescribeAutoScalingInstances(h.ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{old}})
	if len(ai.AutoScalingInstances) != 0 {
		t.Fatalf("detached instance still in a group: %+v", ai.AutoScalingInstances)
	}
	tr, err := h.ec2.TerminateInstances(h.ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{old}})
	if err != nil || tr.TerminatingInstances[0].CurrentState.Name != ec2types.InstanceStateNameShuttingDown || tr.TerminatingInstances[0].PreviousState.Name != ec2types.InstanceStateNameRunning {
		t.Fatalf("TerminateInstances: %v %+v", err, tr)
	}
	h.step(5 * time.Second)
	if _, ok := h.nodes.snapshot()[oldNode]; ok {
		t.Fatal("terminated instance's Node still registered")
	}
	if n := h.inService(); n != 3 || len(h.group("ng").Instances) != 3 {
		t.Fatalf("after terminate: %d InService", n)
	}
	di, _ := h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{old}})
	if di.Reservations[0].Instances[0].State.Name != ec2types.InstanceStateNameTerminated {
		t.Fatalf("old instance state %s", di.Reservations[0].Instances[0].State.Name)
	}
}

func TestExitStandbyIncrementsDesiredAndRespectsMaxSize(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(1, 3, 2)
	ids := byState(g, astypes.LifecycleStateInService)
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	// Still EnteringStandby: AWS refuses to exit a standby that is not complete.
	_, err := h.asg.ExitStandby(h.ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1]})
	wantAPIError(t, err, "ValidationError", "is not in Standby")
	h.step(defaultTransitionDelay)
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 1 || len(byState(g, astypes.LifecycleStatePending)) != 0 {
		t.Fatalf("standby with decrement: desired %d, %+v", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	// Decrementing below MinSize is refused.
	_, err = h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[1:2], ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantAPIError(t, err, "ValidationError", "min-size=1")

	if _, err := h.asg.ExitStandby(h.ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1]}); err != nil {
		t.Fatal(err)
	}
	// Back through Pending (counted at once, so nothing else launches), then InService.
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 2 || h.inService() != 1 || len(byState(g, astypes.LifecycleStatePending)) != 1 {
		t.Fatalf("right after ExitStandby: desired %d, %+v; want one Pending", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	h.step(defaultTransitionDelay)
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 2 || h.inService() != 2 || len(g.Instances) != 2 {
		t.Fatalf("ExitStandby: desired %d, %+v", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}

	// At MaxSize, ExitStandby is refused: standby without decrement → replacement → group full.
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	h.step(40 * time.Second)
	ids = byState(h.group("ng"), astypes.LifecycleStateInService)
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	h.step(defaultTransitionDelay)
	_, err = h.asg.ExitStandby(h.ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1]})
	wantAPIError(t, err, "ValidationError", "max-size=3")
	if g = h.group("ng"); aws.ToInt32(g.DesiredCapacity) != 3 || len(byState(g, astypes.LifecycleStateStandby)) != 1 {
		t.Fatalf("a refused ExitStandby changed the group: %+v", g)
	}
}

func TestRefusedCallsReturnAWSErrors(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(0, 30, 2)
	inService := byState(g, astypes.LifecycleStateInService)
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	pending := byState(h.group("ng"), astypes.LifecycleStatePending)

	_, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: pending, ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", fmt.Sprintf("The instance %s is not in InService.", pending[0]))
	_, err = h.asg.ExitStandby(h.ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: inService[:1]})
	wantAPIError(t, err, "ValidationError", "is not in Standby")
	_, err = h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: pending, ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantAPIError(t, err, "ValidationError", "is not in InService or Standby")

	many := make([]string, 21)
	for k := range many {
		many[k] = fmt.Sprintf("i-%017x", k)
	}
	_, err = h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: many, ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", "limited to 20")
	_, err = h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: many, ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", "limited to 20")

	_, err = h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: []string{"i-0123456789abcdef0"}, ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", "is not part of Auto Scaling group ng")
	_, err = h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("nope"), InstanceIds: inService[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", "AutoScalingGroup name not found")
	_, err = h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String("i-0123456789abcdef0"), ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantAPIError(t, err, "ValidationError", "No managed instance found for instance ID: i-0123456789abcdef0")
	_, err = h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(31)})
	wantAPIError(t, err, "ValidationError", "above max value 30")

	_, err = h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantAPIError(t, err, "InvalidInstanceID.NotFound", "The instance ID 'i-0123456789abcdef0' does not exist")
	_, err = h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"node-1"}})
	wantAPIError(t, err, "InvalidInstanceID.Malformed", `Invalid id: "node-1"`)
	_, err = h.ec2.StopInstances(h.ctx, &ec2.StopInstancesInput{InstanceIds: []string{"i-zz"}})
	wantAPIError(t, err, "InvalidInstanceID.Malformed", "")
	// Unknown ids are not found, existing ones are found through the instance-id filter.
	di, err := h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{inService[0], "i-0123456789abcdef0"}}}})
	if err != nil || len(di.Reservations) != 1 {
		t.Fatalf("instance-id filter: %v %+v", err, di)
	}

	// Nothing above changed the group.
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 3 || len(g.Instances) != 3 || len(byState(g, astypes.LifecycleStateStandby)) != 0 {
		t.Fatalf("refused calls changed the group: %+v", g)
	}
}

func TestTerminateInstanceInGroupWithAndWithoutDecrement(t *testing.T) {
	h := newHarness(t, Options{})
	ids := byState(h.seed(1, 4, 3), astypes.LifecycleStateInService)
	out, err := h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[0]), ShouldDecrementDesiredCapacity: aws.Bool(false)})
	if err != nil || !strings.Contains(aws.ToString(out.Activity.Description), ids[0]) {
		t.Fatalf("terminate without decrement: %v %+v", err, out)
	}
	g := h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 3 || len(byState(g, astypes.LifecycleStatePending)) != 1 {
		t.Fatalf("terminate without decrement should launch a replacement: %+v", g.Instances)
	}
	if _, err := h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[1]), ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	h.step(40 * time.Second)
	g = h.group("ng")
	if aws.ToInt32(g.DesiredCapacity) != 2 || h.inService() != 2 || len(g.Instances) != 2 {
		t.Fatalf("after terminate with decrement: desired %d %+v", aws.ToInt32(g.DesiredCapacity), g.Instances)
	}
	_, err = h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[2]), ShouldDecrementDesiredCapacity: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(byState(h.group("ng"), astypes.LifecycleStateInService)[0]), ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantAPIError(t, err, "ValidationError", "min size constraint")
}

func TestLifecycleHooks(t *testing.T) {
	h := newHarness(t, Options{})
	ids := byState(h.seed(0, 5, 2), astypes.LifecycleStateInService)
	if _, err := h.asg.PutLifecycleHook(h.ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(60), DefaultResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[0]), ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if st := byState(h.group("ng"), astypes.LifecycleStateTerminatingWait); len(st) != 1 || st[0] != ids[0] {
		t.Fatalf("want %s in Terminating:Wait, got %+v", ids[0], h.group("ng").Instances)
	}
	// Heartbeats keep it waiting past the HeartbeatTimeout.
	for range 3 {
		h.step(50 * time.Second)
		if _, err := h.asg.RecordLifecycleActionHeartbeat(h.ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"), InstanceId: aws.String(ids[0])}); err != nil {
			t.Fatal(err)
		}
	}
	if len(byState(h.group("ng"), astypes.LifecycleStateTerminatingWait)) != 1 {
		t.Fatal("heartbeats did not extend the wait")
	}
	_, err := h.asg.CompleteLifecycleAction(h.ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		LifecycleActionToken: aws.String("00000000-0000-4000-a000-000000000000"), LifecycleActionResult: aws.String("CONTINUE")})
	wantAPIError(t, err, "ValidationError", "No active Lifecycle Action found with token")
	_, err = h.asg.CompleteLifecycleAction(h.ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		InstanceId: aws.String(ids[1]), LifecycleActionResult: aws.String("CONTINUE")})
	wantAPIError(t, err, "ValidationError", "No active Lifecycle Action found with instance ID "+ids[1])
	if _, err := h.asg.CompleteLifecycleAction(h.ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		InstanceId: aws.String(ids[0]), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	h.step(5 * time.Second)
	if g := h.group("ng"); len(g.Instances) != 1 {
		t.Fatalf("completed instance still in the group: %+v", g.Instances)
	}

	// Without heartbeats the action times out with the default result.
	if _, err := h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[1]), ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	h.step(59 * time.Second)
	if len(byState(h.group("ng"), astypes.LifecycleStateTerminatingWait)) != 1 {
		t.Fatal("left Terminating:Wait before the heartbeat timeout")
	}
	h.step(3 * time.Second)
	h.step(3 * time.Second)
	if g := h.group("ng"); len(g.Instances) != 0 {
		t.Fatalf("heartbeat timeout did not end the wait: %+v", g.Instances)
	}

	// A launch hook holds new instances in Pending:Wait; ABANDON terminates them and the group tries again.
	if _, err := h.asg.PutLifecycleHook(h.ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("join"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"), HeartbeatTimeout: aws.Int32(300)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.DeleteLifecycleHook(h.ctx, &autoscaling.DeleteLifecycleHookInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	h.step(40 * time.Second)
	waiting := byState(h.group("ng"), astypes.LifecycleStatePendingWait)
	if len(waiting) != 1 {
		t.Fatalf("want Pending:Wait, got %+v", h.group("ng").Instances)
	}
	if _, err := h.asg.CompleteLifecycleAction(h.ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("join"),
		InstanceId: aws.String(waiting[0]), LifecycleActionResult: aws.String("ABANDON")}); err != nil {
		t.Fatal(err)
	}
	g := h.group("ng")
	if len(byState(g, astypes.LifecycleStatePending)) != 1 {
		t.Fatalf("abandoned launch should be replaced: %+v", g.Instances)
	}
	h.step(40 * time.Second)
	next := byState(h.group("ng"), astypes.LifecycleStatePendingWait)
	if len(next) != 1 || next[0] == waiting[0] {
		t.Fatalf("want the new instance in Pending:Wait, got %+v", h.group("ng").Instances)
	}
	if _, err := h.asg.CompleteLifecycleAction(h.ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("join"),
		InstanceId: aws.String(next[0]), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	if h.inService() != 1 {
		t.Fatalf("CONTINUE should put the instance InService: %+v", h.group("ng").Instances)
	}
}

func TestSuspendedProcessesChangeBehaviour(t *testing.T) {
	h := newHarness(t, Options{})
	ids := byState(h.seed(0, 9, 3), astypes.LifecycleStateInService)
	suspend := func(p ...string) {
		if _, err := h.asg.SuspendProcesses(h.ctx, &autoscaling.SuspendProcessesInput{AutoScalingGroupName: aws.String("ng"), ScalingProcesses: p}); err != nil {
			t.Fatal(err)
		}
	}
	resume := func(p ...string) {
		if _, err := h.asg.ResumeProcesses(h.ctx, &autoscaling.ResumeProcessesInput{AutoScalingGroupName: aws.String("ng"), ScalingProcesses: p}); err != nil {
			t.Fatal(err)
		}
	}
	suspend("Launch")
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Minute)
	if g := h.group("ng"); len(g.Instances) != 3 {
		t.Fatalf("Launch suspended but the group launched: %+v", g.Instances)
	}
	resume("Launch")
	h.step(40 * time.Second)
	if h.inService() != 3 {
		t.Fatal("resuming Launch did not launch the replacement")
	}

	// A stopped EC2 instance is unhealthy: replaced unless ReplaceUnhealthy is suspended.
	suspend("ReplaceUnhealthy")
	if _, err := h.ec2.StopInstances(h.ctx, &ec2.StopInstancesInput{InstanceIds: ids[1:2]}); err != nil {
		t.Fatal(err)
	}
	h.step(5 * time.Second)
	g := h.group("ng")
	for _, i := range g.Instances {
		if *i.InstanceId == ids[1] && (aws.ToString(i.HealthStatus) != "Unhealthy" || i.LifecycleState != astypes.LifecycleStateInService) {
			t.Fatalf("stopped instance with ReplaceUnhealthy suspended: %+v", i)
		}
	}
	resume("ReplaceUnhealthy")
	h.step(5 * time.Second)
	h.step(40 * time.Second)
	g = h.group("ng")
	for _, i := range g.Instances {
		if *i.InstanceId == ids[1] {
			t.Fatalf("stopped instance not replaced: %+v", g.Instances)
		}
	}
	if h.inService() != 3 {
		t.Fatalf("after replacing the stopped instance: %+v", g.Instances)
	}

	// AZRebalance: exit standby of the instance (zone now has one extra)…
	// make zones clearly unbalanced by putting two instances of one zone back from standby.
	suspend("AZRebalance")
	if _, err := h.asg.ExitStandby(h.ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1]}); err != nil {
		t.Fatal(err)
	}
	zoneOf := map[string]string{}
	for _, i := range h.group("ng").Instances {
		zoneOf[*i.InstanceId] = *i.AvailabilityZone
	}
	// Put every instance outside ids[0]'s zone on standby with decrement: zones become 2/0/0.
	var others []string
	for id, z := range zoneOf {
		if z != zoneOf[ids[0]] {
			others = append(others, id)
		}
	}
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: others, ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Minute)
	if n := len(h.group("ng").Instances); n != 4 {
		t.Fatalf("AZRebalance suspended but the group changed: %d instances", n)
	}
	resume("AZRebalance")
	h.step(40 * time.Second)
	h.step(5 * time.Second)
	zones := map[string]int{}
	for _, i := range h.group("ng").Instances {
		if i.LifecycleState == astypes.LifecycleStateInService {
			zones[*i.AvailabilityZone]++
		}
	}
	if len(zones) != 2 || h.inService() != 2 {
		t.Fatalf("AZRebalance did not move an instance to another zone: %v", zones)
	}
}

func TestFailedLaunchIsRecordedAndRetried(t *testing.T) {
	h := newHarness(t, Options{Faults: Faults{FailLaunches: 2}})
	if err := h.sim.CreateGroup(GroupSpec{Name: "ng", Min: 0, Max: 3, Desired: 1}); err != nil {
		t.Fatal(err)
	}
	acts, err := h.asg.DescribeScalingActivities(h.ctx, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("ng")})
	if err != nil || len(acts.Activities) != 1 || acts.Activities[0].StatusCode != astypes.ScalingActivityStatusCodeFailed ||
		!strings.Contains(aws.ToString(acts.Activities[0].StatusMessage), "sufficient m5.large capacity") {
		t.Fatalf("failed launch activity: %v %+v", err, acts)
	}
	h.step(10 * time.Second)
	h.step(10 * time.Second)
	if g := h.group("ng"); len(g.Instances) != 1 {
		t.Fatalf("launch not retried after failures: %+v", g.Instances)
	}
	acts, _ = h.asg.DescribeScalingActivities(h.ctx, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("ng")})
	if len(acts.Activities) != 3 || acts.Activities[0].StatusCode != astypes.ScalingActivityStatusCodeInProgress {
		t.Fatalf("activities after retry: %+v", acts.Activities)
	}
}

// TestThrottlingStormStillCompletes runs the surge/retire cycle with 30 % of calls
// throttled; the SDK's standard retryer gets through, and the calls are counted.
func TestThrottlingStormStillCompletes(t *testing.T) {
	h := newHarness(t, Options{Seed: 7})
	g := h.seed(1, 10, 5)
	if err := h.sim.SetFaults(Faults{ThrottleRate: 0.3, ServerErrorRate: 0.05}); err != nil {
		t.Fatal(err)
	}
	h.sim.ResetCalls()
	old := byState(g, astypes.LifecycleStateInService)
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: old[:2], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	h.step(40 * time.Second)
	if _, err := h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: old[:2], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ec2.TerminateInstances(h.ctx, &ec2.TerminateInstancesInput{InstanceIds: old[:2]}); err != nil {
		t.Fatal(err)
	}
	if n := h.inService(); n != 5 {
		t.Fatalf("InService %d after the cycle, want 5", n)
	}
	calls := h.sim.Calls()
	if calls["fault:throttled"] == 0 {
		t.Fatalf("no call was throttled: %v", calls)
	}
	t.Logf("API calls with 30%% throttling: %v", calls)
}

func TestSlowBootFaultDelaysInService(t *testing.T) {
	h := newHarness(t, Options{})
	h.seed(1, 4, 2)
	if err := h.sim.SetFaults(Faults{BootDelay: Duration(3 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	h.step(2 * time.Minute)
	if n := h.inService(); n != 2 {
		t.Fatalf("slow boot: %d InService after 2m, want 2", n)
	}
	if len(h.nodes.snapshot()) != 2 {
		t.Fatalf("a booting instance already has a Node: %v", h.nodes.snapshot())
	}
	h.step(time.Minute)
	if n := h.inService(); n != 3 || len(h.nodes.snapshot()) != 3 {
		t.Fatalf("slow boot: %d InService, %d Nodes after 3m", n, len(h.nodes.snapshot()))
	}
}

// Heartbeats extend a lifecycle action only up to the global timeout, min(48 h, 100 × HeartbeatTimeout).
func TestHeartbeatsStopAtTheGlobalTimeout(t *testing.T) {
	h := newHarness(t, Options{})
	ids := byState(h.seed(0, 3, 1), astypes.LifecycleStateInService)
	if _, err := h.asg.PutLifecycleHook(h.ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(30)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.TerminateInstanceInAutoScalingGroup(h.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[0]), ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	// Global timeout: 100 × 30 s = 50 min. Heartbeat every 20 s for 49 min: still waiting.
	for elapsed := 20 * time.Second; elapsed < 49*time.Minute; elapsed += 20 * time.Second {
		h.step(20 * time.Second)
		if _, err := h.asg.RecordLifecycleActionHeartbeat(h.ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"), InstanceId: aws.String(ids[0])}); err != nil {
			t.Fatalf("heartbeat at %s: %v", elapsed, err)
		}
	}
	if len(byState(h.group("ng"), astypes.LifecycleStateTerminatingWait)) != 1 {
		t.Fatal("heartbeats did not keep the action alive")
	}
	h.step(time.Minute + 5*time.Second)
	_, err := h.asg.RecordLifecycleActionHeartbeat(h.ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"), InstanceId: aws.String(ids[0])})
	wantAPIError(t, err, "ValidationError", "No active Lifecycle Action")
	if len(byState(h.group("ng"), astypes.LifecycleStateTerminatingWait)) != 0 {
		t.Fatal("the action outlived the global timeout")
	}
}

func TestContentionAndRateLimitFaults(t *testing.T) {
	h := newHarness(t, Options{})
	h.seed(0, 5, 1)
	once := func(o *autoscaling.Options) { o.RetryMaxAttempts = 1 }
	if err := h.sim.SetFaults(Faults{ContentionRate: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(2)}, once)
	var contention *astypes.ResourceContentionFault
	if !errorsAs(err, &contention) {
		t.Fatalf("want ResourceContentionFault, got %v", err)
	}
	if _, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{}, once); err != nil {
		t.Fatalf("contention must only hit mutating calls: %v", err)
	}
	if g := h.group("ng"); aws.ToInt32(g.DesiredCapacity) != 1 {
		t.Fatal("a refused call changed desired capacity")
	}

	// A bucket of 3 refilled at 1/s: the 4th call in the same second is throttled.
	if err := h.sim.SetFaults(Faults{RateLimits: map[string]RateLimit{"autoscaling": {Burst: 3, PerSecond: 1}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{}, once); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	_, err = h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{}, once)
	wantAPIError(t, err, "Throttling", "Rate exceeded")
	if _, err := h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatalf("EC2 has its own (unlimited) bucket: %v", err)
	}
	h.step(time.Second)
	if _, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{}, once); err != nil {
		t.Fatalf("after a second the bucket has a token again: %v", err)
	}
	if err := h.sim.SetFaults(Faults{RateLimits: map[string]RateLimit{"lambda": {Burst: 1, PerSecond: 1}}}); err == nil {
		t.Fatal("unknown service accepted in rateLimits")
	}
}
