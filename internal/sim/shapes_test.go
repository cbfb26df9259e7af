package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// TestWireShapes drives every supported operation through the unmodified SDK clients.
func TestWireShapes(t *testing.T) {
	h := newHarness(t, Options{Region: "eu-central-1"})
	ctx := h.ctx

	id, err := h.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(id.Account) != "123456789012" {
		t.Fatalf("GetCallerIdentity: %v %+v", err, id)
	}

	azs, err := h.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil || len(azs.AvailabilityZones) != 3 || aws.ToString(azs.AvailabilityZones[1].ZoneName) != "eu-central-1b" ||
		azs.AvailabilityZones[0].State != ec2types.AvailabilityZoneStateAvailable {
		t.Fatalf("DescribeAvailabilityZones: %v %+v", err, azs)
	}

	lt, err := h.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("workers"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-00000000000000001"), InstanceType: ec2types.InstanceTypeM5Large,
			TagSpecifications: []ec2types.LaunchTemplateTagSpecificationRequest{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: aws.String("team"), Value: aws.String("platform")}}}},
		},
	})
	if err != nil {
		t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	ltID := aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	if !strings.HasPrefix(ltID, "lt-") || len(ltID) != 20 || aws.ToInt64(lt.LaunchTemplate.LatestVersionNumber) != 1 {
		t.Fatalf("launch template: %+v", lt.LaunchTemplate)
	}
	_, err = h.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("workers"), LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-1")}})
	wantAPIError(t, err, "InvalidLaunchTemplateName.AlreadyExistsException", "already in use")

	v2, err := h.ec2.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateId: aws.String(ltID), SourceVersion: aws.String("1"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-00000000000000002")},
	})
	if err != nil || aws.ToInt64(v2.LaunchTemplateVersion.VersionNumber) != 2 || v2.LaunchTemplateVersion.LaunchTemplateData.InstanceType != ec2types.InstanceTypeM5Large {
		t.Fatalf("CreateLaunchTemplateVersion: %v %+v", err, v2)
	}
	vs, err := h.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateName: aws.String("workers"), Versions: []string{"$Latest", "$Default"}})
	if err != nil || len(vs.LaunchTemplateVersions) != 2 || aws.ToInt64(vs.LaunchTemplateVersions[0].VersionNumber) != 2 ||
		aws.ToInt64(vs.LaunchTemplateVersions[1].VersionNumber) != 1 || !aws.ToBool(vs.LaunchTemplateVersions[1].DefaultVersion) {
		t.Fatalf("DescribeLaunchTemplateVersions $Latest/$Default: %v %+v", err, vs)
	}
	if _, err := h.ec2.ModifyLaunchTemplate(ctx, &ec2.ModifyLaunchTemplateInput{LaunchTemplateId: aws.String(ltID), DefaultVersion: aws.String("2")}); err != nil {
		t.Fatalf("ModifyLaunchTemplate: %v", err)
	}
	lts, err := h.ec2.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{ltID}})
	if err != nil || aws.ToInt64(lts.LaunchTemplates[0].DefaultVersionNumber) != 2 || aws.ToInt64(lts.LaunchTemplates[0].LatestVersionNumber) != 2 {
		t.Fatalf("DescribeLaunchTemplates: %v %+v", err, lts)
	}
	_, err = h.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: aws.String(ltID), Versions: []string{"7"}})
	wantAPIError(t, err, "InvalidLaunchTemplateId.VersionNotFound", "version 7")

	_, err = h.asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("workers"), MinSize: aws.Int32(1), MaxSize: aws.Int32(6), DesiredCapacity: aws.Int32(3),
		LaunchTemplate:    &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(ltID), Version: aws.String("$Default")},
		AvailabilityZones: []string{"eu-central-1a", "eu-central-1b", "eu-central-1c"},
		Tags:              []astypes.Tag{{Key: aws.String("env"), Value: aws.String("test"), PropagateAtLaunch: aws.Bool(true)}},
	})
	if err != nil {
		t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	_, err = h.asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("workers"), MinSize: aws.Int32(1), MaxSize: aws.Int32(6),
		LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(ltID)}, AvailabilityZones: []string{"eu-central-1a"},
	})
	var exists *astypes.AlreadyExistsFault
	if !errorsAs(err, &exists) {
		t.Fatalf("duplicate group: want typed AlreadyExistsFault, got %v", err)
	}

	g := h.group("workers")
	if len(g.Instances) != 3 || len(byState(g, astypes.LifecycleStatePending)) != 3 {
		t.Fatalf("new group: want 3 Pending instances, got %+v", g.Instances)
	}
	zones := map[string]int{}
	for _, i := range g.Instances {
		zones[aws.ToString(i.AvailabilityZone)]++
	}
	if len(zones) != 3 {
		t.Fatalf("launches not spread over zones: %v", zones)
	}
	if aws.ToString(g.LaunchTemplate.Version) != "$Default" || aws.ToString(g.LaunchTemplate.LaunchTemplateName) != "workers" {
		t.Fatalf("group launch template: %+v", g.LaunchTemplate)
	}
	h.step(40 * time.Second)
	g = h.group("workers")
	if len(byState(g, astypes.LifecycleStateInService)) != 3 {
		t.Fatalf("after boot delay: %+v", g.Instances)
	}
	ids := byState(g, astypes.LifecycleStateInService)
	if aws.ToString(g.Instances[0].LaunchTemplate.Version) != "2" {
		t.Fatalf("instance launch template version: want resolved 2, got %+v", g.Instances[0].LaunchTemplate)
	}

	di, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:aws:autoscaling:groupName"), Values: []string{"workers"}},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}})
	if err != nil || len(di.Reservations) != 3 {
		t.Fatalf("DescribeInstances by tag: %v %+v", err, di)
	}
	inst := di.Reservations[0].Instances[0]
	tags := map[string]string{}
	for _, tg := range inst.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["aws:ec2launchtemplate:id"] != ltID || tags["aws:ec2launchtemplate:version"] != "2" || tags["team"] != "platform" || tags["env"] != "test" ||
		inst.State.Name != ec2types.InstanceStateNameRunning || aws.ToInt32(inst.State.Code) != 16 || aws.ToString(inst.ImageId) != "ami-00000000000000002" ||
		!strings.HasSuffix(aws.ToString(inst.PrivateDnsName), ".eu-central-1.compute.internal") || inst.LaunchTime == nil || !inst.LaunchTime.Equal(epoch) {
		t.Fatalf("instance: %+v tags %v", inst, tags)
	}
	pages := ec2.NewDescribeInstancesPaginator(h.ec2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
	seen := 0
	for pages.HasMorePages() {
		p, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(p.Reservations)
	}
	if seen != 3 {
		t.Fatalf("paginated DescribeInstances: %d", seen)
	}

	if _, err := h.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{ids[0]}, Tags: []ec2types.Tag{{Key: aws.String("recycler/retired-at"), Value: aws.String("now")}}}); err != nil {
		t.Fatal(err)
	}
	dt, err := h.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("key"), Values: []string{"recycler/retired-at"}}}})
	if err != nil || len(dt.Tags) != 1 || aws.ToString(dt.Tags[0].ResourceId) != ids[0] || dt.Tags[0].ResourceType != ec2types.ResourceTypeInstance {
		t.Fatalf("DescribeTags: %v %+v", err, dt)
	}
	if _, err := h.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{ids[0]}, Tags: []ec2types.Tag{{Key: aws.String("recycler/retired-at")}}}); err != nil {
		t.Fatal(err)
	}
	dt, _ = h.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("key"), Values: []string{"recycler/retired-at"}}}})
	if len(dt.Tags) != 0 {
		t.Fatalf("DeleteTags left %+v", dt.Tags)
	}

	dai, err := h.asg.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: ids})
	if err != nil || len(dai.AutoScalingInstances) != 3 || aws.ToString(dai.AutoScalingInstances[0].AutoScalingGroupName) != "workers" ||
		aws.ToString(dai.AutoScalingInstances[0].LifecycleState) != "InService" || aws.ToString(dai.AutoScalingInstances[0].HealthStatus) != "HEALTHY" {
		t.Fatalf("DescribeAutoScalingInstances: %v %+v", err, dai)
	}

	if _, err := h.asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{AutoScalingGroupName: aws.String("workers"), ScalingProcesses: []string{"AZRebalance"}}); err != nil {
		t.Fatal(err)
	}
	g = h.group("workers")
	if len(g.SuspendedProcesses) != 1 || aws.ToString(g.SuspendedProcesses[0].ProcessName) != "AZRebalance" {
		t.Fatalf("SuspendProcesses: %+v", g.SuspendedProcesses)
	}
	if _, err := h.asg.ResumeProcesses(ctx, &autoscaling.ResumeProcessesInput{AutoScalingGroupName: aws.String("workers"), ScalingProcesses: []string{"AZRebalance"}}); err != nil {
		t.Fatal(err)
	}
	if g = h.group("workers"); len(g.SuspendedProcesses) != 0 {
		t.Fatalf("ResumeProcesses: %+v", g.SuspendedProcesses)
	}
	_, err = h.asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{AutoScalingGroupName: aws.String("workers"), ScalingProcesses: []string{"Nap"}})
	wantAPIError(t, err, "ValidationError", "Invalid processes")

	if _, err := h.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: aws.String("workers"), LifecycleHookName: aws.String("drain"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(300), DefaultResult: aws.String("CONTINUE"),
	}); err != nil {
		t.Fatal(err)
	}
	hooks, err := h.asg.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String("workers")})
	if err != nil || len(hooks.LifecycleHooks) != 1 || aws.ToInt32(hooks.LifecycleHooks[0].HeartbeatTimeout) != 300 || aws.ToInt32(hooks.LifecycleHooks[0].GlobalTimeout) != 30000 {
		t.Fatalf("DescribeLifecycleHooks: %v %+v", err, hooks)
	}
	_, err = h.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("workers"), LifecycleHookName: aws.String("x"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(10)})
	wantAPIError(t, err, "ValidationError", "30 and 7200")
	if _, err := h.asg.DeleteLifecycleHook(ctx, &autoscaling.DeleteLifecycleHookInput{AutoScalingGroupName: aws.String("workers"), LifecycleHookName: aws.String("drain")}); err != nil {
		t.Fatal(err)
	}

	if _, err := h.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("workers"), DesiredCapacity: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers"), MaxSize: aws.Int32(8)}); err != nil {
		t.Fatal(err)
	}
	g = h.group("workers")
	if aws.ToInt32(g.DesiredCapacity) != 4 || aws.ToInt32(g.MaxSize) != 8 || len(g.Instances) != 4 {
		t.Fatalf("after SetDesiredCapacity/Update: %+v", g)
	}

	acts, err := h.asg.DescribeScalingActivities(ctx, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("workers"), MaxRecords: aws.Int32(2)})
	if err != nil || len(acts.Activities) != 2 || acts.NextToken == nil || acts.Activities[0].StatusCode != astypes.ScalingActivityStatusCodeInProgress ||
		!strings.Contains(aws.ToString(acts.Activities[0].Cause), "increasing the capacity from 3 to 4") {
		t.Fatalf("DescribeScalingActivities: %v %+v", err, acts)
	}
	all := 0
	ap := autoscaling.NewDescribeScalingActivitiesPaginator(h.asg, &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("workers"), MaxRecords: aws.Int32(2)})
	for ap.HasMorePages() {
		p, err := ap.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all += len(p.Activities)
	}
	if all != 4 {
		t.Fatalf("activities: %d, want 4 launches", all)
	}

	gp := autoscaling.NewDescribeAutoScalingGroupsPaginator(h.asg, &autoscaling.DescribeAutoScalingGroupsInput{MaxRecords: aws.Int32(1)})
	if err := h.sim.CreateGroup(GroupSpec{Name: "other", Min: 0, Max: 2, Desired: 0}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for gp.HasMorePages() {
		p, err := gp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range p.AutoScalingGroups {
			names = append(names, aws.ToString(g.AutoScalingGroupName))
		}
	}
	if strings.Join(names, ",") != "other,workers" {
		t.Fatalf("paginated groups: %v", names)
	}

	if _, err := h.asg.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers")}); err == nil {
		t.Fatal("deleting a group with instances and no ForceDelete must fail")
	}
	if _, err := h.asg.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers"), ForceDelete: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	h.step(5 * time.Second)
	out, err := h.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"workers"}})
	if err != nil || len(out.AutoScalingGroups) != 0 {
		t.Fatalf("force-deleted group still there: %v %+v", err, out)
	}
	term, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil || term.Reservations[0].Instances[0].State.Name != ec2types.InstanceStateNameTerminated {
		t.Fatalf("terminated instances should stay visible: %v %+v", err, term)
	}
	h.step(time.Hour)
	_, err = h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids[:1]})
	wantAPIError(t, err, "InvalidInstanceID.NotFound", ids[0])
}

func TestMixedInstancesOverrideWithItsOwnLaunchTemplate(t *testing.T) {
	h := newHarness(t, Options{})
	for _, name := range []string{"base", "arm"} {
		if _, err := h.ec2.CreateLaunchTemplate(h.ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(name),
			LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-" + name), InstanceType: ec2types.InstanceTypeM5Large}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := h.asg.CreateAutoScalingGroup(h.ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("mixed"), MinSize: aws.Int32(1), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{"us-east-1a"},
		MixedInstancesPolicy: &astypes.MixedInstancesPolicy{LaunchTemplate: &astypes.LaunchTemplate{
			LaunchTemplateSpecification: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("base"), Version: aws.String("$Latest")},
			Overrides: []astypes.LaunchTemplateOverrides{
				{InstanceType: aws.String("m7g.large"), LaunchTemplateSpecification: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("arm"), Version: aws.String("$Default")}},
				{InstanceType: aws.String("m5.large")},
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := h.group("mixed")
	ov := g.MixedInstancesPolicy.LaunchTemplate.Overrides
	if len(ov) != 2 || aws.ToString(ov[0].LaunchTemplateSpecification.LaunchTemplateName) != "arm" || ov[1].LaunchTemplateSpecification != nil ||
		aws.ToString(g.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateName) != "base" {
		t.Fatalf("mixed instances policy: %+v", g.MixedInstancesPolicy)
	}
	if len(g.Instances) != 1 || aws.ToString(g.Instances[0].InstanceType) != "m7g.large" || aws.ToString(g.Instances[0].LaunchTemplate.LaunchTemplateName) != "arm" {
		t.Fatalf("instance should use the first override and its template: %+v", g.Instances)
	}
}
