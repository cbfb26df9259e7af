package aws_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/sim"
)

// What a rollout reads, against the simulator over the real SDK.
func TestFleetLookups(t *testing.T) {
	e := startSim(t)
	ctx := context.Background()
	for name, tags := range map[string]map[string]string{
		"pay-1":  {"team": "payments", "env": "prod"},
		"pay-2":  {"team": "payments", "env": "dev"},
		"search": {"team": "search", "env": "prod"},
	} {
		if err := e.srv.CreateGroup(sim.GroupSpec{Name: name, Min: 1, Max: 4, Desired: 2, Tags: tags}); err != nil {
			t.Fatal(err)
		}
	}
	e.Advance(t, 31e9)

	got, err := e.prov.GroupNamesByTags(ctx, map[string]string{"team": "payments"})
	if err != nil || !slices.Equal(got, []string{"pay-1", "pay-2"}) {
		t.Errorf("team=payments: %v %v", got, err)
	}
	got, err = e.prov.GroupNamesByTags(ctx, map[string]string{"team": "payments", "env": "prod"})
	if err != nil || !slices.Equal(got, []string{"pay-1"}) {
		t.Errorf("team=payments,env=prod (both must match): %v %v", got, err)
	}
	if got, err = e.prov.GroupNamesByTags(ctx, map[string]string{"team": "nobody"}); err != nil || len(got) != 0 {
		t.Errorf("no match: %v %v", got, err)
	}

	e.prov.Metrics().Reset()
	g, err := e.prov.GroupMembers(ctx, "pay-1")
	if err != nil || len(g.Instances) != 2 || e.prov.Metrics().TotalCalls() != 1 {
		t.Errorf("GroupMembers: %d instances, %d calls, %v; want 2 instances in 1 call", len(g.Instances), e.prov.Metrics().TotalCalls(), err)
	}

	acts, err := e.prov.ScalingActivities(ctx, "pay-1", 100)
	if err != nil || len(acts) != 2 {
		t.Fatalf("activities: %v %v, want the two launches", acts, err)
	}
	for _, a := range acts {
		if !strings.HasPrefix(a.Description, "Launching a new EC2 instance: i-") || a.Status != "Successful" || a.End.Sub(a.Start) != 30e9 {
			t.Errorf("launch activity %+v: want a successful 30 s launch", a)
		}
	}
	if one, err := e.prov.ScalingActivities(ctx, "pay-1", 1); err != nil || len(one) != 1 {
		t.Errorf("max 1: %v %v", one, err)
	}

	// Drift: a new version of the group's template ($Latest) makes both members drift,
	// decided from one description of the group and of its instances.
	if _, err := e.ec2.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateName: sdkaws.String("pay-1-lt"), SourceVersion: sdkaws.String("1"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: sdkaws.String("ami-00000000000000002")},
	}); err != nil {
		t.Fatal(err)
	}
	e.prov.Metrics().Reset()
	full, err := e.prov.Group(ctx, "pay-1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range full.Instances {
		ids = append(ids, in.ID)
	}
	insts, err := e.prov.Instances(ctx, ids...)
	if err != nil {
		t.Fatal(err)
	}
	before := e.prov.Metrics().TotalCalls()
	var drifts []cloud.Drift
	for _, in := range insts {
		drifts = append(drifts, e.prov.DriftOf(in, full))
	}
	if n := e.prov.Metrics().TotalCalls() - before; n != 0 {
		t.Errorf("DriftOf made %d calls, want none", n)
	}
	for i, d := range drifts {
		if !d.Drifted || d.Instance.LaunchTemplate.ResolvedVersion != 1 || d.Group.LaunchTemplate.ResolvedVersion != 2 {
			t.Errorf("%s: %+v, want drifted from version 1 to 2", insts[i].ID, d)
		}
		if want, err := e.prov.Drift(ctx, insts[i]); err != nil || want.Reason != d.Reason {
			t.Errorf("DriftOf %q differs from Drift %q (%v)", d.Reason, want.Reason, err)
		}
	}
}
