package aws

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/recycler/recycler/internal/cloud"
)

// Finding the replacement: the instance whose launch our surge caused. Auto Scaling
// chains a launch's cause to what left the group short ("At … instance i-… was
// moved to standby in response to a user request. At … an instance was started in
// response to a difference between desired and actual capacity, …"), so the launch
// activities since the surge say which new instance is ours; an instance another
// cause launched (the cluster autoscaler raising desired capacity, a health
// replacement, another recycle's standby) is never taken for it.

var launchedID = regexp.MustCompile(`^Launching a new EC2 instance: (i-[0-9a-f]{8,17})`)

// launch is one launch activity of the group.
type launch struct {
	instance string // "" for a failed launch
	cause    string
	activity cloud.ScalingActivity
}

type causeClass int

const (
	causeUnnamed causeClass = iota // names no trigger Recycler can tell apart
	causeOurs                      // names a surged instance (or the surge's own desired+1)
	causeOther                     // names another trigger
)

// classifyCause says whose launch a launch activity's cause describes.
func classifyCause(cause string, rec cloud.SurgeRecord) causeClass {
	desired := 0
	for _, in := range rec.Instances {
		switch in.Method {
		case cloud.SurgeDesired:
			desired++
		default:
			if strings.Contains(cause, in.ID) {
				return causeOurs
			}
		}
	}
	if desired > 0 && strings.Contains(cause, fmt.Sprintf("changing the desired capacity from %d to %d", rec.DesiredBefore, int(rec.DesiredBefore)+desired)) {
		return causeOurs
	}
	lower := strings.ToLower(cause)
	if instanceIDInMessage.MatchString(cause) || strings.Contains(lower, "changing the desired capacity") ||
		strings.Contains(lower, "rebalance") || strings.Contains(lower, "taken out of service") {
		return causeOther
	}
	return causeUnnamed
}

// launchesSince lists the group's launch activities that started after the surge,
// oldest first (the API lists newest first; the walk stops at rec.ActivitiesBefore),
// and whether it saw any activity at all since then (the surge's own standby is one).
func (p *Provider) launchesSince(ctx context.Context, rec cloud.SurgeRecord) ([]launch, bool, error) {
	var out []launch
	seen := false
	in := &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: &rec.Group, MaxRecords: sdkaws.Int32(100)}
	for page := 0; page < 5; page++ {
		res, err := p.asg.DescribeScalingActivities(ctx, in)
		if err != nil {
			return nil, false, classify("describe scaling activities of "+rec.Group, err)
		}
		for _, a := range res.Activities {
			if (rec.ActivitiesBefore != "" && sdkaws.ToString(a.ActivityId) == rec.ActivitiesBefore) ||
				(rec.ActivitiesBefore == "" && sdkaws.ToTime(a.StartTime).Before(rec.StartedAt)) {
				slices.Reverse(out)
				return out, seen, nil
			}
			seen = true
			desc := sdkaws.ToString(a.Description)
			if !strings.HasPrefix(desc, "Launching a new EC2 instance") {
				continue
			}
			l := launch{cause: sdkaws.ToString(a.Cause), activity: toActivity(a)}
			if m := launchedID.FindStringSubmatch(desc); m != nil && !isFailedLaunch(a) {
				l.instance = m[1]
			}
			out = append(out, l)
		}
		if sdkaws.ToString(res.NextToken) == "" {
			break
		}
		in.NextToken = res.NextToken
	}
	slices.Reverse(out)
	return out, seen, nil
}

// identified is what the launch activities say about a surge's replacements.
type identified struct {
	ids       []string               // launched for the surge (some may be gone since)
	failed    *cloud.ScalingActivity // the newest failed launch for it
	ambiguous string                 // why unnamed launches could not be told apart
}

// identify finds the replacements of rec: rec.Replacements when known, else the
// launches whose cause names the surge, else — by elimination, when unambiguous —
// the launches whose cause names nothing else. A cloud that records no activities
// at all (moto) leaves only the elimination over the group's members: those not in
// rec.Snapshot.
func (p *Provider) identify(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord) (identified, error) {
	if len(rec.Replacements) > 0 {
		return identified{ids: slices.Clone(rec.Replacements)}, nil
	}
	launches, seen, err := p.launchesSince(ctx, rec)
	if err != nil {
		return identified{}, err
	}
	if !seen {
		for _, in := range g.Instances {
			if !slices.Contains(rec.Snapshot, in.ID) && live(in.Lifecycle) && in.Lifecycle != cloud.LifecycleStandby {
				launches = append(launches, launch{instance: in.ID})
			}
		}
	}
	var id identified
	var unnamed []string
	var unnamedFailed *cloud.ScalingActivity
	for _, l := range launches {
		switch classifyCause(l.cause, rec) {
		case causeOurs:
			if l.instance == "" {
				id.failed = &l.activity
				continue
			}
			id.ids = append(id.ids, l.instance)
		case causeUnnamed:
			if l.instance == "" {
				unnamedFailed = &l.activity
				continue
			}
			if !slices.Contains(rec.Snapshot, l.instance) {
				unnamed = append(unnamed, l.instance)
			}
		}
	}
	switch need := len(rec.Instances) - len(id.ids); {
	case need <= 0:
	case len(unnamed) <= need:
		id.ids = append(id.ids, unnamed...)
		if id.failed == nil && len(unnamed) < need {
			id.failed = unnamedFailed
		}
	default:
		id.ambiguous = fmt.Sprintf("%d instances (%s) were launched for causes the group does not name, %d of them for this surge: Recycler cannot tell which",
			len(unnamed), strings.Join(unnamed, ", "), need)
	}
	return id, nil
}

// FindReplacement implements cloud.Surger.
func (p *Provider) FindReplacement(ctx context.Context, rec cloud.SurgeRecord) (cloud.Replacement, error) {
	g, err := p.describeGroup(ctx, rec.Group)
	if err != nil {
		return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
	}
	id, err := p.identify(ctx, g, rec)
	if err != nil {
		return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
	}
	r := cloud.Replacement{Ambiguous: id.ambiguous}
	for _, rid := range id.ids {
		gi, ok := g.Instance(rid)
		switch {
		case !ok:
		case gi.Lifecycle == cloud.LifecycleInService:
			r.InService = append(r.InService, rid)
		case pending(gi.Lifecycle):
			r.Pending = append(r.Pending, rid)
		}
	}
	r.Ready = len(r.InService) >= len(rec.Instances)
	if !r.Ready && len(r.InService)+len(r.Pending) < len(rec.Instances) && id.failed != nil {
		return r, &cloud.LaunchFailedError{Group: rec.Group, Activity: *id.failed}
	}
	return r, nil
}

// ClaimReplacement implements cloud.Surger.
func (p *Provider) ClaimReplacement(ctx context.Context, rec cloud.SurgeRecord, ids []string) error {
	if err := requireExecution("claim replacement", rec.ExecutionID); err != nil {
		return err
	}
	if err := cloud.ValidateInstanceIDs(ids); err != nil {
		return err
	}
	g, err := p.describeGroup(ctx, rec.Group)
	if err != nil {
		return fmt.Errorf("claim replacement: %w", err)
	}
	tags, err := p.instanceTags(ctx, ids)
	if err != nil {
		return fmt.Errorf("claim replacement: %w", err)
	}
	var protect []string
	for i, id := range ids {
		gi, ok := g.Instance(id)
		if !ok {
			return fmt.Errorf("claim replacement %s: not in group %s: %w", id, rec.Group, cloud.ErrNotInGroup)
		}
		// The protection before the claim is recorded once: a repeated claim (its
		// first answer lost) must not record the protection it set itself.
		if tags[id][cloud.TagProtectedBefore] == "" {
			old := rec.Instances[min(i, len(rec.Instances)-1)].ID
			if err := p.tagInstances(ctx, []string{id}, map[string]string{
				cloud.TagReplacementFor: old, cloud.TagExecution: rec.ExecutionID,
				cloud.TagProtectedBefore: strconv.FormatBool(gi.ProtectedFromScaleIn),
			}); err != nil {
				return err
			}
		}
		if !gi.ProtectedFromScaleIn {
			protect = append(protect, id)
		}
	}
	return p.protectInstances(ctx, rec.Group, protect, true)
}

// releaseReplacements restores the scale-in protection of the replacements this
// execution claimed for rec's instances and removes the claim records.
// Instances in gone (terminated by this very call) are only untagged.
func (p *Provider) releaseReplacements(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, gone ...string) error {
	claimed, err := p.taggedInstances(ctx, cloud.TagReplacementFor, rec.IDs())
	if err != nil {
		return err
	}
	var ids, unprotect []string
	for _, id := range slices.Sorted(maps.Keys(claimed)) {
		tags := claimed[id]
		if tags[cloud.TagExecution] != rec.ExecutionID {
			continue
		}
		ids = append(ids, id)
		if gi, ok := g.Instance(id); ok && !slices.Contains(gone, id) && gi.ProtectedFromScaleIn && tags[cloud.TagProtectedBefore] == "false" && !strings.HasPrefix(gi.Lifecycle, cloud.LifecycleTerminating) {
			unprotect = append(unprotect, id)
		}
	}
	if err := p.protectInstances(ctx, rec.Group, unprotect, false); err != nil {
		return err
	}
	return p.untagInstances(ctx, ids, cloud.TagReplacementFor, cloud.TagProtectedBefore, cloud.TagExecution, cloud.TagTerminatedAt)
}

func isFailedLaunch(a asgtypes.Activity) bool {
	if a.StatusCode != asgtypes.ScalingActivityStatusCodeFailed && a.StatusCode != asgtypes.ScalingActivityStatusCodeCancelled {
		return false
	}
	return strings.Contains(strings.ToLower(sdkaws.ToString(a.Description)), "launch")
}

func toActivity(a asgtypes.Activity) cloud.ScalingActivity {
	return cloud.ScalingActivity{
		ID:            sdkaws.ToString(a.ActivityId),
		Description:   sdkaws.ToString(a.Description),
		Cause:         sdkaws.ToString(a.Cause),
		Status:        string(a.StatusCode),
		StatusMessage: sdkaws.ToString(a.StatusMessage),
		Start:         sdkaws.ToTime(a.StartTime),
		End:           sdkaws.ToTime(a.EndTime),
	}
}
