package aws_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/recycler/recycler/internal/cloud/cloudtest"
	"github.com/recycler/recycler/internal/testenv"
)

// probeWorld is one AWS implementation under the raw SDK clients.
type probeWorld struct {
	name    string
	asg     *autoscaling.Client
	ec2     *ec2.Client
	create  func(t *testing.T, minSize, maxSize, desired int) string
	advance func(t *testing.T)
}

func (w probeWorld) instances(t *testing.T, group string) (ids []string, lifecycle map[string]string, desired int32) {
	t.Helper()
	out, err := w.asg.DescribeAutoScalingGroups(context.Background(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{group}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		t.Fatalf("%s: describe %s: %v", w.name, group, err)
	}
	g := out.AutoScalingGroups[0]
	lifecycle = map[string]string{}
	for _, in := range g.Instances {
		ids = append(ids, *in.InstanceId)
		lifecycle[*in.InstanceId] = string(in.LifecycleState)
	}
	return ids, lifecycle, *g.DesiredCapacity
}

// standby puts one instance of group in Standby.
func (w probeWorld) standby(group, id string, decrement bool) (*autoscaling.EnterStandbyOutput, error) {
	return w.asg.EnterStandby(context.Background(), &autoscaling.EnterStandbyInput{AutoScalingGroupName: &group, InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: sdkaws.Bool(decrement)})
}

// errCode is the AWS error code of err, "" for success.
func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return "non-API error: " + err.Error()
	}
	return ""
}

// semanticsCase is one documented behaviour. want is what the AWS documentation
// says (an error code, or a check that returns "" when the state is right); moto,
// when set, is why moto is known to answer otherwise (the case is skipped for it).
type semanticsCase struct {
	name, doc string
	moto      string
	run       func(t *testing.T, w probeWorld) string // "" = as documented, else what differed
}

func wantCode(got error, code string) string {
	if c := errCode(got); c != code {
		return fmt.Sprintf("got error code %q, the documentation says %q", c, code)
	}
	return ""
}

var semanticsCases = []semanticsCase{
	{
		name: "EnterStandby without decrement launches a replacement, desired unchanged",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-enter-exit-standby.html",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 3, 2)
			ids, _, _ := w.instances(t, g)
			if _, err := w.standby(g, ids[0], false); err != nil {
				return "EnterStandby: " + err.Error()
			}
			w.advance(t)
			after, lc, desired := w.instances(t, g)
			if desired != 2 || len(after) != 3 || lc[ids[0]] != "Standby" {
				return fmt.Sprintf("after EnterStandby: desired %d, %d instances, old one %s; want 2, 3, Standby", desired, len(after), lc[ids[0]])
			}
			return ""
		},
	},
	{
		name: "EnterStandby of an instance already in Standby is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_EnterStandby.html (only InService instances can enter standby)",
		moto: "moto puts any instance in Standby again without a check, and launches another replacement",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 4, 2)
			ids, _, _ := w.instances(t, g)
			in := &autoscaling.EnterStandbyInput{AutoScalingGroupName: &g, InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: sdkaws.Bool(false)}
			if _, err := w.asg.EnterStandby(context.Background(), in); err != nil {
				return "first EnterStandby: " + err.Error()
			}
			_, err := w.asg.EnterStandby(context.Background(), in)
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "ExitStandby past MaxSize is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_ExitStandby.html (exiting increments desired capacity, which must stay within MaxSize)",
		moto: "moto raises desired capacity past MaxSize and launches beyond it",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 3, 2)
			ids, _, _ := w.instances(t, g)
			if _, err := w.standby(g, ids[0], false); err != nil {
				return "EnterStandby: " + err.Error()
			}
			w.advance(t)
			if _, err := w.asg.UpdateAutoScalingGroup(context.Background(), &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: &g, MaxSize: sdkaws.Int32(2)}); err != nil {
				return "lower MaxSize: " + err.Error()
			}
			_, err := w.asg.ExitStandby(context.Background(), &autoscaling.ExitStandbyInput{AutoScalingGroupName: &g, InstanceIds: ids[:1]})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "EnterStandby with decrement below MinSize is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_EnterStandby.html",
		moto: "moto lowers desired capacity below MinSize",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 2, 3, 2)
			ids, _, _ := w.instances(t, g)
			_, err := w.standby(g, ids[0], true)
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "ExitStandby increments desired capacity",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-enter-exit-standby.html",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 4, 2)
			ids, _, _ := w.instances(t, g)
			if _, err := w.standby(g, ids[0], false); err != nil {
				return "EnterStandby: " + err.Error()
			}
			w.advance(t)
			if _, err := w.asg.ExitStandby(context.Background(), &autoscaling.ExitStandbyInput{AutoScalingGroupName: &g, InstanceIds: ids[:1]}); err != nil {
				return "ExitStandby: " + err.Error()
			}
			// Pending on its way (documented: Standby → Pending → InService), counted at once.
			if _, lc, desired := w.instances(t, g); desired != 3 || (lc[ids[0]] != "Pending" && lc[ids[0]] != "InService") {
				return fmt.Sprintf("right after ExitStandby: desired %d, old one %s; want 3, Pending or InService", desired, lc[ids[0]])
			}
			return ""
		},
	},
	{
		name: "a launch is a scaling activity",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeScalingActivities.html",
		moto: "moto's DescribeScalingActivities always answers an empty list",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			out, err := w.asg.DescribeScalingActivities(context.Background(), &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: &g})
			if err != nil || len(out.Activities) == 0 {
				return fmt.Sprintf("activities %v, %v; want the launch of the first instance", out, err)
			}
			return ""
		},
	},
	{
		name: "TerminateInstanceInAutoScalingGroup with decrement at MinSize is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_TerminateInstanceInAutoScalingGroup.html",
		moto: "moto terminates and lowers desired capacity below MinSize",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 2, 1)
			ids, _, _ := w.instances(t, g)
			_, err := w.asg.TerminateInstanceInAutoScalingGroup(context.Background(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: &ids[0], ShouldDecrementDesiredCapacity: sdkaws.Bool(true)})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "SetDesiredCapacity above MaxSize is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_SetDesiredCapacity.html",
		moto: "moto sets any desired capacity and launches past MaxSize",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 1, 2, 1)
			_, err := w.asg.SetDesiredCapacity(context.Background(), &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: &g, DesiredCapacity: sdkaws.Int32(3)})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "DetachInstances of an instance that is not in the group is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DetachInstances.html",
		moto: "moto ignores unknown ids and answers success",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			_, err := w.asg.DetachInstances(context.Background(), &autoscaling.DetachInstancesInput{AutoScalingGroupName: &g, InstanceIds: []string{"i-0fedcba9876543210"}, ShouldDecrementDesiredCapacity: sdkaws.Bool(true)})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "EnterStandby takes at most 20 instance ids",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_EnterStandby.html (InstanceIds: up to 20)",
		moto: "moto accepts any number of ids (it checks nothing; the SDK does not check list lengths either)",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			var ids []string
			for i := range 21 {
				ids = append(ids, fmt.Sprintf("i-0%016x", i+1))
			}
			_, err := w.asg.EnterStandby(context.Background(), &autoscaling.EnterStandbyInput{AutoScalingGroupName: &g, InstanceIds: ids, ShouldDecrementDesiredCapacity: sdkaws.Bool(false)})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "CompleteLifecycleAction without a pending action is a ValidationError",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html",
		moto: "moto does not implement CompleteLifecycleAction",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			ids, _, _ := w.instances(t, g)
			if _, err := w.asg.PutLifecycleHook(context.Background(), &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: &g, LifecycleHookName: sdkaws.String("drain"),
				LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: sdkaws.Int32(300)}); err != nil {
				return "PutLifecycleHook: " + err.Error()
			}
			_, err := w.asg.CompleteLifecycleAction(context.Background(), &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: &g, LifecycleHookName: sdkaws.String("drain"),
				InstanceId: &ids[0], LifecycleActionResult: sdkaws.String("CONTINUE")})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "DescribeInstances of a malformed id is InvalidInstanceID.Malformed",
		doc:  "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html",
		moto: "moto answers InvalidInstanceID.NotFound for a malformed id",
		run: func(_ *testing.T, w probeWorld) string {
			_, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-xyz"}})
			return wantCode(err, "InvalidInstanceID.Malformed")
		},
	},
	{
		name: "DescribeInstances of an unknown id is InvalidInstanceID.NotFound",
		doc:  "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html",
		run: func(_ *testing.T, w probeWorld) string {
			_, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0fedcba9876543210"}})
			return wantCode(err, "InvalidInstanceID.NotFound")
		},
	},
	{
		name: "SuspendProcesses with an unknown process name is refused",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_SuspendProcesses.html",
		moto: "moto records any process name",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			_, err := w.asg.SuspendProcesses(context.Background(), &autoscaling.SuspendProcessesInput{AutoScalingGroupName: &g, ScalingProcesses: []string{"Teleport"}})
			return wantCode(err, "ValidationError")
		},
	},
	{
		name: "DescribeAutoScalingGroups of an unknown name answers an empty list",
		doc:  "https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeAutoScalingGroups.html",
		run: func(_ *testing.T, w probeWorld) string {
			out, err := w.asg.DescribeAutoScalingGroups(context.Background(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"no-such-group"}})
			if err != nil || len(out.AutoScalingGroups) != 0 {
				return fmt.Sprintf("got %v, %v; want an empty list", out, err)
			}
			return ""
		},
	},
	{
		name: "a terminated instance stays visible as terminated",
		doc:  "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/terminating-instances.html (visible for about an hour)",
		run: func(t *testing.T, w probeWorld) string {
			g := w.create(t, 0, 2, 1)
			ids, _, _ := w.instances(t, g)
			if _, err := w.asg.DetachInstances(context.Background(), &autoscaling.DetachInstancesInput{AutoScalingGroupName: &g, InstanceIds: ids, ShouldDecrementDesiredCapacity: sdkaws.Bool(true)}); err != nil {
				return "detach: " + err.Error()
			}
			if _, err := w.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
				return "terminate: " + err.Error()
			}
			w.advance(t)
			out, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: ids})
			if err != nil || len(out.Reservations) != 1 || string(out.Reservations[0].Instances[0].State.Name) != "terminated" {
				return fmt.Sprintf("describe after terminate: %v, %v; want one terminated instance", out, err)
			}
			return ""
		},
	},
}

// TestDocumentedSemantics asks the simulator and moto the same questions and
// holds both to what the AWS documentation says. The simulator must agree; moto's
// known departures are skipped with their reason (docs/aws-semantics.md, "moto").
func TestDocumentedSemantics(t *testing.T) {
	worlds := []func(t *testing.T) probeWorld{simProbe, motoProbe}
	for _, mk := range worlds {
		w := mk(t)
		t.Run(w.name, func(t *testing.T) {
			for _, c := range semanticsCases {
				t.Run(c.name, func(t *testing.T) {
					if w.name == "moto" && c.moto != "" {
						t.Skipf("moto departs from the documentation: %s", c.moto)
					}
					if diff := c.run(t, w); diff != "" {
						t.Errorf("%s: %s (documented: %s)", w.name, diff, c.doc)
					}
				})
			}
		})
	}
}

// TestMotoDeparturesStillHold keeps the skip list honest: a moto release that
// starts to answer as documented makes this fail, so the skip is removed.
func TestMotoDeparturesStillHold(t *testing.T) {
	w := motoProbe(t)
	for _, c := range semanticsCases {
		if c.moto == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			if diff := c.run(t, w); diff == "" {
				t.Errorf("moto now answers as documented (%s): drop the skip %q", c.doc, c.moto)
			}
		})
	}
}

func simProbe(t *testing.T) probeWorld {
	e := startSim(t)
	var seq atomic.Int64
	return probeWorld{name: "sim", asg: e.asg, ec2: e.ec2,
		create: func(t *testing.T, minSize, maxSize, desired int) string {
			seq.Add(1)
			return e.CreateGroup(t, cloudtest.GroupSpec{Min: minSize, Max: maxSize, Desired: desired})
		},
		advance: func(t *testing.T) {
			for range 12 {
				e.Advance(t, cloudtest.Step)
			}
		},
	}
}

var motoProbeSeq atomic.Int64

func motoProbe(t *testing.T) probeWorld {
	m := testenv.MotoFor(t)
	_, e := newMotoEnv(t, newThrottlingProxy(t, m.URL), &motoProbeSeq)
	return probeWorld{name: "moto", asg: e.asg, ec2: e.ec2,
		create: func(t *testing.T, minSize, maxSize, desired int) string {
			return e.CreateGroup(t, cloudtest.GroupSpec{Min: minSize, Max: maxSize, Desired: desired})
		},
		advance: func(*testing.T) {},
	}
}
