package aws

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
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
			aid := sdkaws.ToString(a.ActivityId)
			if rec.StandbyActivity != "" && aid == rec.StandbyActivity {
				// The surge's own standby: an activity since the surge, and the oldest.
				slices.Reverse(out)
				return out, true, nil
			}
			if (rec.ActivitiesBefore != "" && aid == rec.ActivitiesBefore) ||
				(rec.ActivitiesBefore == "" && rec.StandbyActivity == "" && sdkaws.ToTime(a.StartTime).Before(rec.StartedAt)) {
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
	return identifyFrom(launches, seen, &g, rec), nil
}

// identifyFrom is identify over launches already read; g is needed (and only
// read) when the cloud recorded no activity since the surge.
func identifyFrom(launches []launch, seen bool, g *cloud.Group, rec cloud.SurgeRecord) identified {
	if !seen && g != nil {
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
	return id
}

// launching reports whether every launch of ids is still in progress (its activity
// not ended): those instances are Pending without asking the group.
func launching(launches []launch, ids []string) bool {
	for _, id := range ids {
		found := false
		for _, l := range launches {
			if l.instance == id {
				found = true
				if !l.activity.End.IsZero() || l.activity.Status == string(asgtypes.ScalingActivityStatusCodeSuccessful) ||
					l.activity.Status == string(asgtypes.ScalingActivityStatusCodeFailed) || l.activity.Status == string(asgtypes.ScalingActivityStatusCodeCancelled) {
					return false
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// FindReplacement implements cloud.Surger. One call per look once the launch is
// known: the first look reads the activities (and, while the launch is still in
// progress, nothing else); later looks read the group only, starting from what
// the caller learned (rec.Replacements, else rec.Launched while those are still
// in the group).
func (p *Provider) FindReplacement(ctx context.Context, rec cloud.SurgeRecord) (cloud.Replacement, error) {
	var id identified
	var g cloud.Group
	var err error
	switch {
	case len(rec.Replacements) > 0:
		id.ids = slices.Clone(rec.Replacements)
	case len(rec.Launched) > 0:
		if g, err = p.describeGroup(ctx, rec.Group); err != nil {
			return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
		}
		id.ids = slices.Clone(rec.Launched)
		for _, lid := range rec.Launched {
			if gi, ok := g.Instance(lid); !ok || (gi.Lifecycle != cloud.LifecycleInService && !pending(gi.Lifecycle)) {
				// One is gone (a failed launch, a health replacement): read the
				// activities again, which also say whether our launch failed.
				if id, err = p.identify(ctx, g, rec); err != nil {
					return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
				}
				break
			}
		}
	default:
		launches, seen, err := p.launchesSince(ctx, rec)
		if err != nil {
			return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
		}
		if id = identifyFrom(launches, seen, nil, rec); seen && id.ambiguous == "" && len(id.ids) >= len(rec.Instances) && launching(launches, id.ids) {
			return cloud.Replacement{Pending: id.ids}, nil
		}
		if g, err = p.describeGroup(ctx, rec.Group); err != nil {
			return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
		}
		id = identifyFrom(launches, seen, &g, rec)
	}
	if g.Name == "" {
		if g, err = p.describeGroup(ctx, rec.Group); err != nil {
			return cloud.Replacement{}, fmt.Errorf("find replacement: %w", err)
		}
	}
	r := cloud.Replacement{Ambiguous: id.ambiguous}
	for _, rid := range id.ids {
		gi, ok := g.Instance(rid)
		switch {
		case !ok:
		case gi.Lifecycle == cloud.LifecycleInService:
			r.InService = append(r.InService, rid)
			if gi.ProtectedFromScaleIn {
				r.Protected = append(r.Protected, rid)
			}
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
func (p *Provider) ClaimReplacement(ctx context.Context, rec cloud.SurgeRecord, found cloud.Replacement) ([]string, error) {
	if err := requireExecution("claim replacement", rec.ExecutionID); err != nil {
		return nil, err
	}
	ids := found.InService
	if len(ids) == 0 {
		return nil, fmt.Errorf("claim replacement: no InService replacement given (pass a Ready answer of FindReplacement): %w", cloud.ErrValidation)
	}
	if err := cloud.ValidateInstanceIDs(ids); err != nil {
		return nil, err
	}
	var protected []string
	for _, id := range ids {
		if slices.Contains(found.Protected, id) {
			protected = append(protected, id)
		}
	}
	// Protected already: by our own earlier claim (its answer lost) or by someone
	// else. Only the records tell, so only then are they read.
	tags, err := p.instanceTags(ctx, protected)
	if err != nil {
		return nil, fmt.Errorf("claim replacement: %w", err)
	}
	var ours, protect []string
	records := map[string][]string{} // tag set (old id, protected-before) → replacements
	for i, id := range ids {
		old := rec.Instances[min(i, len(rec.Instances)-1)].ID
		switch t := tags[id]; {
		case !slices.Contains(protected, id):
			protect = append(protect, id)
			ours = append(ours, id)
			records[old+"\x00false"] = append(records[old+"\x00false"], id)
		case t[cloud.TagProtectedBefore] == "false" && t[cloud.TagExecution] == rec.ExecutionID:
			ours = append(ours, id) // claimed by an earlier attempt of ours
		case t[cloud.TagProtectedBefore] == "":
			// Someone else's protection: recorded once, never lifted by us.
			records[old+"\x00true"] = append(records[old+"\x00true"], id)
		}
	}
	// Recorded before the protection, one CreateTags per distinct record.
	for _, key := range slices.Sorted(maps.Keys(records)) {
		old, before, _ := strings.Cut(key, "\x00")
		if err := p.tagInstances(ctx, records[key], map[string]string{
			cloud.TagReplacementFor: old, cloud.TagExecution: rec.ExecutionID, cloud.TagProtectedBefore: before,
		}); err != nil {
			return nil, err
		}
	}
	if err := p.protectInstances(ctx, rec.Group, protect, true); err != nil {
		return nil, err
	}
	return ours, nil
}

// releaseReplacements restores the scale-in protection of the replacements this
// execution claimed for rec's instances and removes the claim records.
// Instances in gone (terminated by this very call) are only untagged, and keep
// TagTerminatedAt and TagExecution: whoever answers their terminate lifecycle
// hook reads there that Recycler terminated them (recycle.ownTermination).
func (p *Provider) releaseReplacements(ctx context.Context, g cloud.Group, rec cloud.SurgeRecord, gone ...string) error {
	var ids, going, unprotect []string
	if rec.Claimed {
		// The caller kept the claim's answer: nothing to read.
		for _, id := range rec.ProtectedReplacements {
			if gi, ok := g.Instance(id); ok && !slices.Contains(gone, id) && gi.ProtectedFromScaleIn && !strings.HasPrefix(gi.Lifecycle, cloud.LifecycleTerminating) {
				unprotect = append(unprotect, id)
			}
		}
		if err := p.protectInstances(ctx, rec.Group, unprotect, false); err != nil {
			return err
		}
		for _, id := range rec.Replacements {
			if slices.Contains(gone, id) {
				going = append(going, id)
			} else {
				ids = append(ids, id)
			}
		}
		return p.untagReleased(ctx, ids, going)
	}
	claimed, err := p.taggedInstances(ctx, cloud.TagReplacementFor, rec.IDs())
	if err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(claimed)) {
		tags := claimed[id]
		if tags[cloud.TagExecution] != rec.ExecutionID {
			continue
		}
		if slices.Contains(gone, id) {
			going = append(going, id)
			continue
		}
		ids = append(ids, id)
		if gi, ok := g.Instance(id); ok && gi.ProtectedFromScaleIn && tags[cloud.TagProtectedBefore] == "false" && !strings.HasPrefix(gi.Lifecycle, cloud.LifecycleTerminating) {
			unprotect = append(unprotect, id)
		}
	}
	if err := p.protectInstances(ctx, rec.Group, unprotect, false); err != nil {
		return err
	}
	return p.untagReleased(ctx, ids, going)
}

// untagReleased removes the claim records from released replacements (ids) and,
// but for TagTerminatedAt and TagExecution, from those terminated (going).
func (p *Provider) untagReleased(ctx context.Context, ids, going []string) error {
	if err := p.untagInstances(ctx, going, cloud.TagReplacementFor, cloud.TagProtectedBefore); err != nil {
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
