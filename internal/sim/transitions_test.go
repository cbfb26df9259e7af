package sim

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
)

// The in-between states last what Faults.TransitionDelays says: a test can hold an
// instance in EnteringStandby (AWS: the load balancer's deregistration delay) or
// Detaching, and the call that needs the end state is refused meanwhile.
func TestTransitionDelaysAreConfigurable(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(1, 4, 2)
	ids := byState(g, astypes.LifecycleStateInService)
	if err := h.sim.SetFaults(Faults{TransitionDelays: map[string]Duration{lcEnteringStandby: Duration(time.Minute), lcDetaching: Duration(30 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	h.step(59 * time.Second)
	if got := byState(h.group("ng"), astypes.LifecycleStateEnteringStandby); len(got) != 1 {
		t.Fatalf("59s into a 1m EnteringStandby: %+v", h.group("ng").Instances)
	}
	_, err := h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantAPIError(t, err, "ValidationError", "is not in InService or Standby")
	h.step(time.Second)
	if got := byState(h.group("ng"), astypes.LifecycleStateStandby); len(got) != 1 {
		t.Fatalf("after 1m: %+v, want Standby", h.group("ng").Instances)
	}
	// The standby's activity is InProgress until the instance is in Standby.
	acts, err := h.asg.DescribeScalingActivities(h.ctx, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("ng")})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts.Activities {
		if strings.HasPrefix(aws.ToString(a.Description), "Moving EC2 instance to Standby") && (a.StatusCode != astypes.ScalingActivityStatusCodeSuccessful || a.EndTime == nil || !a.EndTime.Equal(a.StartTime.Add(time.Minute))) {
			t.Errorf("standby activity %s ended %v (%s), want Successful one minute after it started", aws.ToString(a.Description), a.EndTime, a.StatusCode)
		}
	}
	if _, err := h.asg.DetachInstances(h.ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	h.step(29 * time.Second)
	ai, err := h.asg.DescribeAutoScalingInstances(h.ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: ids[:1]})
	if err != nil || len(ai.AutoScalingInstances) != 1 || aws.ToString(ai.AutoScalingInstances[0].LifecycleState) != lcDetaching {
		t.Fatalf("29s into a 30s detach: %+v %v, want Detaching", ai.AutoScalingInstances, err)
	}
	h.step(time.Second)
	if ai, _ := h.asg.DescribeAutoScalingInstances(h.ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: ids[:1]}); len(ai.AutoScalingInstances) != 0 {
		t.Fatalf("after 30s the detached instance is still a member: %+v", ai.AutoScalingInstances)
	}
	if err := h.sim.SetFaults(Faults{TransitionDelays: map[string]Duration{"Terminating": Duration(time.Second)}}); err == nil {
		t.Error("a transition delay for a state the simulator does not hold was accepted")
	}
}

// Each launch names what it answers, as AWS chains causes: the standby that left the
// capacity short, or the request that raised desired capacity. Recycler tells its
// replacement from the autoscaler's launches by this.
func TestLaunchCausesNameTheirTrigger(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(1, 6, 2)
	old := byState(g, astypes.LifecycleStateInService)[0]
	if _, err := h.asg.EnterStandby(h.ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: []string{old}, ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	acts, err := h.asg.DescribeScalingActivities(h.ctx, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("ng")})
	if err != nil {
		t.Fatal(err)
	}
	var launches []string
	for _, a := range acts.Activities {
		if strings.HasPrefix(aws.ToString(a.Description), "Launching a new EC2 instance: ") && a.StartTime.Equal(h.clock.Now()) {
			launches = append(launches, aws.ToString(a.Cause))
		}
	}
	if len(launches) != 2 {
		t.Fatalf("launches after a standby and a desired+1: %q, want 2", launches)
	}
	// Newest first: the desired-capacity launch, then the standby's replacement.
	if !strings.Contains(launches[1], "instance "+old+" was moved to standby") || !strings.Contains(launches[1], "an instance was started in response to a difference between desired and actual capacity") {
		t.Errorf("the replacement's launch cause %q does not name the standby of %s", launches[1], old)
	}
	if !strings.Contains(launches[0], "a user request explicitly set group desired capacity changing the desired capacity from 2 to 3") || strings.Contains(launches[0], old) {
		t.Errorf("the scale-up's launch cause %q does not name the desired capacity change", launches[0])
	}
}

func TestInstanceProtectionAndGroupTags(t *testing.T) {
	h := newHarness(t, Options{})
	g := h.seed(1, 4, 3)
	ids := byState(g, astypes.LifecycleStateInService)
	if _, err := h.asg.SetInstanceProtection(h.ctx, &autoscaling.SetInstanceProtectionInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: ids[1:], ProtectedFromScaleIn: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	_, err := h.asg.SetInstanceProtection(h.ctx, &autoscaling.SetInstanceProtectionInput{AutoScalingGroupName: aws.String("ng"), InstanceIds: []string{"i-0fedcba9876543210"}, ProtectedFromScaleIn: aws.Bool(true)})
	wantAPIError(t, err, "ValidationError", "is not part of Auto Scaling group ng")
	// Scale-in skips protected instances: from 3 to 1 only the unprotected one goes,
	// and the group stays above desired rather than touch the others.
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	h.step(5 * time.Second)
	g = h.group("ng")
	if got := byState(g, astypes.LifecycleStateInService); len(got) != 2 || !slices.Contains(got, ids[1]) {
		t.Fatalf("scale-in with protected instances: %+v, want only the protected two left", g.Instances)
	}
	for _, in := range g.Instances {
		if !aws.ToBool(in.ProtectedFromScaleIn) {
			t.Errorf("instance %s: ProtectedFromScaleIn false, want true", aws.ToString(in.InstanceId))
		}
	}

	tag := func(key, value string) astypes.Tag {
		return astypes.Tag{ResourceId: aws.String("ng"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String(key), Value: aws.String(value), PropagateAtLaunch: aws.Bool(false)}
	}
	if _, err := h.asg.CreateOrUpdateTags(h.ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []astypes.Tag{tag("recycler/a", "1"), tag("recycler/b", "2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.CreateOrUpdateTags(h.ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []astypes.Tag{tag("recycler/a", "3")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.DeleteTags(h.ctx, &autoscaling.DeleteTagsInput{Tags: []astypes.Tag{tag("recycler/b", "")}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.asg.CreateOrUpdateTags(h.ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []astypes.Tag{tag("aws:x", "1")}})
	wantAPIError(t, err, "ValidationError", "reserved")
	got := map[string]string{}
	for _, tg := range h.group("ng").Tags {
		got[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if len(got) != 1 || got["recycler/a"] != "3" {
		t.Errorf("group tags %v, want only recycler/a=3", got)
	}
}
