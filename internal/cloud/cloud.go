// Package cloud is Recycler's port to the cloud that owns the nodes' instances:
// look up instances and their Auto Scaling group, surge a replacement, find it, roll
// back, retire the old instance, answer lifecycle hooks, and detect drift.
//
// Every method is one bounded action or one check: none of them waits for the cloud
// to converge (the workflow engine waits, then calls again). Every mutating method is
// idempotent: calling it again after success (or after a partial failure) reaches the
// same end state and returns success. Errors wrap one of the sentinels in errors.go;
// IsRetryable tells the workflow whether to call again later.
package cloud

import (
	"context"
	"time"
)

// Provider is the whole port. Consumers should depend on the smallest interface they
// need (Describer, Surger, Retirer, Lifecycle, DriftChecker).
type Provider interface {
	Describer
	Surger
	Retirer
	Lifecycle
	DriftChecker
}

// Describer looks things up. Read-only; every error except ErrValidation/ErrNotFound
// may be retried.
type Describer interface {
	// Instances describes many instances with a constant number of calls (the AWS
	// provider: one DescribeInstances and one DescribeAutoScalingInstances per 50
	// ids). Ids that do not exist are absent from the result (no error); the result
	// keeps the order of ids. Malformed ids: ErrValidation, nothing is called.
	Instances(ctx context.Context, ids ...string) ([]Instance, error)
	// Instance describes one instance; ErrNotFound if it does not exist.
	Instance(ctx context.Context, id string) (Instance, error)
	// Group describes a group with its launch template versions resolved to numbers
	// and its lifecycle hooks. ErrNotFound if there is no such group.
	Group(ctx context.Context, name string) (Group, error)
	// Recorded describes the instances that carry Recycler's records (a
	// TagExecution tag), whatever group they are in: what recycles changed, found
	// from the cloud alone (e.g. an instance left in Standby by a recycle whose state
	// file is lost).
	Recorded(ctx context.Context) ([]Instance, error)
}

// Surger adds capacity before an instance is taken away, and undoes it.
//
// Every change is recorded on the object it changes before the call that makes it
// (see the Tag* constants): the old instance carries who surged it and when, the
// group carries an AZRebalance suspension or a MaxSize raise of ours, the
// replacement carries whose it is and its protection before. A retry, a resume
// after a crash, and a rollback from the cloud alone (the state file lost) read
// those records, and undo only what they name.
type Surger interface {
	// Surge makes the group launch one replacement per instance while the old ones
	// keep running: EnterStandby without decrementing desired capacity (chunks of
	// ≤ 20), or desired+1 for instances standby does not apply to (Terminating:Wait
	// under a lifecycle hook). It first checks headroom: when the group would exceed
	// MaxSize it returns ErrNoHeadroom and changes nothing, unless
	// opts.AllowRaiseMax (then MaxSize is raised and the old value recorded). It
	// suspends AZRebalance while instances are in standby (recording whether it did).
	//
	// Errors: ErrValidation (malformed ids, no execution id, instance
	// Pending/Detaching/Terminating), ErrNotInGroup (an instance is not in this
	// group), ErrNotFound (no group / no instance), ErrNoHeadroom. Already done
	// (instances already in Standby or EnteringStandby): success, with an equivalent
	// record; no second replacement is requested. A failure before any instance
	// entered standby undoes this call's MaxSize raise and AZRebalance suspension;
	// after that, the returned (partial) record is what Rollback needs. The desired+1
	// path cannot tell a repeat from a new request: a repeated Surge after a lost
	// SetDesiredCapacity answer asks for a second instance.
	Surge(ctx context.Context, group string, instanceIDs []string, opts SurgeOptions) (SurgeRecord, error)
	// FindReplacement checks once for the replacements of a surge: the instances
	// whose launch the surge caused. Those are rec.Replacements once known; before,
	// the group's launch activities since the surge that name a surged instance as
	// their cause, or — by elimination, only when that is unambiguous — the new
	// instances no other cause (a desired-capacity change, a health replacement,
	// another instance's standby) accounts for. Ready when there are at least
	// len(rec.Instances) of them InService; otherwise Pending lists those still on
	// their way and Ambiguous says why a new instance could not be told apart.
	// Returns a *LaunchFailedError (ErrLaunchFailed) when the surge's launch failed,
	// so the caller does not wait for nothing. Read-only.
	FindReplacement(ctx context.Context, rec SurgeRecord) (Replacement, error)
	// ClaimReplacement marks found.InService (a Ready answer of FindReplacement,
	// just made) as the replacements of rec (tags TagReplacementFor, TagExecution
	// and, for those it protects, TagProtectedBefore) and protects them from
	// scale-in, so neither the group nor a cluster autoscaler's scale-in takes them
	// while the recycle needs them. It works from found's look at the group; only a
	// replacement found protected already has its records read (our earlier claim,
	// or someone else's protection). It returns the replacements whose protection
	// this execution set (now or in an earlier attempt): Retire and Rollback lift
	// exactly those. Idempotent.
	ClaimReplacement(ctx context.Context, rec SurgeRecord, found Replacement) ([]string, error)
	// Rollback undoes a surge, as far as the records on the instances and the group
	// say it happened: ExitStandby for the surged instances this execution put in
	// standby, then — unless rec.KeepReplacements — the replacements this surge
	// caused are terminated with decrement (or, when none was launched, desired
	// capacity is given back), MaxSize is restored if the surge raised it,
	// AZRebalance resumed if the surge suspended it and no instance is left in
	// standby, and the replacements' scale-in protection restored. An instance the
	// autoscaler or anybody else launched is never touched.
	//
	// Done is false while an instance is between two states (EnteringStandby, or
	// Pending after ExitStandby): call again; Waiting says what for. Idempotent: a
	// rolled-back (or never applied) surge returns Done. A group that is gone is
	// Done too (nothing left to undo).
	Rollback(ctx context.Context, rec SurgeRecord) (RollbackResult, error)
}

// Retirer takes an old instance away for good.
type Retirer interface {
	// Retire detaches the instance from its group — InService: with desired
	// decremented (so nothing new launches); Standby: without decrement (AWS does not
	// count Standby instances in desired capacity, and decrementing would terminate
	// another instance) — then terminates it (RetireTerminate) or stops it and tags it
	// recycler/retired-at and recycler/execution (RetireStop). With opts.Surge set it
	// also restores MaxSize, AZRebalance and the replacements' protection as
	// Rollback would. The detach is recorded on the instance first (TagExecution,
	// TagDetachedAt), so a retry after a detach whose answer was lost goes on to
	// terminate it.
	//
	// Idempotent: an instance already detached (by this execution), stopped,
	// terminated or gone returns a result with AlreadyDone set and no error. So does
	// an instance the group is terminating itself (Terminating, or Terminating:Wait
	// under a lifecycle hook: the caller completes the lifecycle action with CONTINUE
	// to let it go). A *NotYetError (ErrNotYet) while the instance is EnteringStandby,
	// Pending or Detaching. ErrValidation for a malformed id, an unknown mode or no
	// execution id. ErrNotInGroup when the instance is running in no group and
	// neither this execution's detach record nor opts.Surge names it: Retire never
	// terminates an instance it cannot tell was a group member.
	Retire(ctx context.Context, instanceID string, opts RetireOptions) (RetireResult, error)
}

// Lifecycle answers Auto Scaling lifecycle hooks.
type Lifecycle interface {
	// RecordHeartbeat extends the hook's timeout. ErrNotFound when there is no active
	// lifecycle action any more (completed or timed out): stop heartbeating.
	RecordHeartbeat(ctx context.Context, action LifecycleAction) error
	// CompleteLifecycleAction ends the hook with CONTINUE or ABANDON. Idempotent:
	// "no active lifecycle action" (already completed or timed out) returns nil.
	CompleteLifecycleAction(ctx context.Context, action LifecycleAction, result LifecycleResult) error
}

// DriftChecker compares an instance with its group's current launch configuration.
type DriftChecker interface {
	// Drift resolves $Latest/$Default (also in a mixed-instances policy and its
	// per-instance-type overrides) and compares the instance's launch template id +
	// version (or launch configuration name) with the group's. ErrNotInGroup when
	// inst has no group. Read-only.
	Drift(ctx context.Context, inst Instance) (Drift, error)
}

// Lifecycle states of an instance in an Auto Scaling group (AWS spelling).
const (
	LifecyclePending         = "Pending"
	LifecyclePendingWait     = "Pending:Wait"
	LifecyclePendingProceed  = "Pending:Proceed"
	LifecycleInService       = "InService"
	LifecycleStandby         = "Standby"
	LifecycleEnteringStandby = "EnteringStandby"
	LifecycleDetaching       = "Detaching"
	LifecycleDetached        = "Detached"
	LifecycleTerminating     = "Terminating"
	LifecycleTerminatingWait = "Terminating:Wait"
	LifecycleTerminatingProc = "Terminating:Proceed"
	LifecycleTerminated      = "Terminated"
)

// EC2 instance states (AWS spelling).
const (
	StatePending      = "pending"
	StateRunning      = "running"
	StateShuttingDown = "shutting-down"
	StateTerminated   = "terminated"
	StateStopping     = "stopping"
	StateStopped      = "stopped"
)

// Process names for suspend/resume.
const ProcessAZRebalance = "AZRebalance"

// Records of what Recycler did, written on the object before the call that does
// it. Instance tags (EC2):
const (
	// TagExecution names the execution acting on an instance (the old one, or a
	// replacement it claimed).
	TagExecution = "recycler/execution"
	// TagStandbyAt: when this execution asked EnterStandby for the old instance.
	TagStandbyAt = "recycler/standby-at"
	// TagDesiredRaisedAt: when this execution raised desired capacity by one for an
	// instance standby does not apply to (Terminating:Wait under a lifecycle hook).
	TagDesiredRaisedAt = "recycler/desired-raised-at"
	// TagExitStandbyAt: when its rollback asked ExitStandby.
	TagExitStandbyAt = "recycler/exit-standby-at"
	// TagDesiredReturned: the desired capacity a rollback set because the surge's
	// replacement never launched (the +1 of ExitStandby given back).
	TagDesiredReturned = "recycler/desired-returned"
	// TagDetachedAt: when Retire asked DetachInstances.
	TagDetachedAt = "recycler/detached-at"
	// TagRetiredAt: when Retire stopped the instance (--retire stop).
	TagRetiredAt = "recycler/retired-at"
	// TagReplacementFor, on a replacement: the old instance it replaces.
	TagReplacementFor = "recycler/replacement-for"
	// TagProtectedBefore, on a replacement: its ProtectedFromScaleIn before the claim.
	TagProtectedBefore = "recycler/protected-before"
	// TagTerminatedAt, on a replacement: when a rollback asked to terminate it.
	TagTerminatedAt = "recycler/terminated-at"
)

// Group tags (Auto Scaling, not propagated at launch):
const (
	// TagSuspendedAZRebalance: AZRebalance is suspended by Recycler (execution@time);
	// the last recycle to leave standby resumes it.
	TagSuspendedAZRebalance = "recycler/suspended-azrebalance"
	// TagMaxRaised: "before:after" of a MaxSize Recycler raised.
	TagMaxRaised = "recycler/max-raised"
)

// LaunchTemplate names a launch template and a version. Version is what was
// configured ("$Latest", "$Default" or a number); ResolvedVersion is the number it
// meant when it was described (0 when unknown).
type LaunchTemplate struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Version         string `json:"version"`
	ResolvedVersion int64  `json:"resolvedVersion"`
}

// Instance is one EC2 instance and, if it has one, its place in an Auto Scaling group.
type Instance struct {
	ID             string    `json:"id"`
	State          string    `json:"state"` // EC2 state: pending, running, stopping, stopped, shutting-down, terminated
	AZ             string    `json:"az"`
	LaunchTime     time.Time `json:"launchTime"`
	ImageID        string    `json:"imageId"`
	InstanceType   string    `json:"instanceType"`
	PrivateDNSName string    `json:"privateDnsName"`
	// LaunchTemplate the instance was launched from (nil if none); version resolved.
	LaunchTemplate *LaunchTemplate `json:"launchTemplate"`
	// LaunchConfiguration name, for groups still on launch configurations.
	LaunchConfiguration string `json:"launchConfiguration"`
	// Group is the Auto Scaling group name, "" when the instance is in no group.
	Group string `json:"group"`
	// Lifecycle is the Auto Scaling lifecycle state (InService, Standby, …), "" without group.
	Lifecycle string `json:"lifecycle"`
	// Health is the Auto Scaling health status (Healthy, Unhealthy), "" without group.
	Health string `json:"health"`
	// ProtectedFromScaleIn as set on the group's instance.
	ProtectedFromScaleIn bool              `json:"protectedFromScaleIn"`
	Tags                 map[string]string `json:"tags"`
}

// GroupInstance is an instance as the group lists it.
type GroupInstance struct {
	ID                   string          `json:"id"`
	AZ                   string          `json:"az"`
	Lifecycle            string          `json:"lifecycle"`
	Health               string          `json:"health"`
	InstanceType         string          `json:"instanceType"`
	LaunchTemplate       *LaunchTemplate `json:"launchTemplate"`
	LaunchConfiguration  string          `json:"launchConfiguration"`
	ProtectedFromScaleIn bool            `json:"protectedFromScaleIn,omitempty"`
}

// Override is one entry of a mixed-instances policy: an instance type, optionally
// with its own launch template.
type Override struct {
	InstanceType     string          `json:"instanceType"`
	WeightedCapacity string          `json:"weightedCapacity"`
	LaunchTemplate   *LaunchTemplate `json:"launchTemplate"`
}

// MixedInstances is a group's mixed-instances policy (launch template part).
type MixedInstances struct {
	LaunchTemplate LaunchTemplate `json:"launchTemplate"`
	Overrides      []Override     `json:"overrides"`
}

// LifecycleHook as configured on a group.
type LifecycleHook struct {
	Name             string        `json:"name"`
	Transition       string        `json:"transition"` // autoscaling:EC2_INSTANCE_LAUNCHING | autoscaling:EC2_INSTANCE_TERMINATING
	HeartbeatTimeout time.Duration `json:"heartbeatTimeout"`
	GlobalTimeout    time.Duration `json:"globalTimeout"`
	DefaultResult    string        `json:"defaultResult"`
}

// Group is an Auto Scaling group.
type Group struct {
	Name      string          `json:"name"`
	MinSize   int32           `json:"minSize"`
	MaxSize   int32           `json:"maxSize"`
	Desired   int32           `json:"desired"`
	Instances []GroupInstance `json:"instances"`
	// Exactly one of LaunchTemplate, MixedInstances, LaunchConfiguration is set.
	LaunchTemplate      *LaunchTemplate `json:"launchTemplate"`
	MixedInstances      *MixedInstances `json:"mixedInstances"`
	LaunchConfiguration string          `json:"launchConfiguration"`
	SuspendedProcesses  []string        `json:"suspendedProcesses"`
	LifecycleHooks      []LifecycleHook `json:"lifecycleHooks"`
	AZs                 []string        `json:"azs"`
	// Tags of the group itself (Recycler's records among them).
	Tags map[string]string `json:"tags,omitempty"`
}

// Suspended reports whether process is suspended on the group.
func (g Group) Suspended(process string) bool {
	for _, p := range g.SuspendedProcesses {
		if p == process {
			return true
		}
	}
	return false
}

// Instance returns the group's entry for id.
func (g Group) Instance(id string) (GroupInstance, bool) {
	for _, in := range g.Instances {
		if in.ID == id {
			return in, true
		}
	}
	return GroupInstance{}, false
}

// CountLifecycle counts the group's instances in the given lifecycle state.
func (g Group) CountLifecycle(state string) int {
	n := 0
	for _, in := range g.Instances {
		if in.Lifecycle == state {
			n++
		}
	}
	return n
}

// ScalingActivity is one Auto Scaling activity (launch, terminate, standby, …).
type ScalingActivity struct {
	ID            string    `json:"id"`
	Description   string    `json:"description"`
	Cause         string    `json:"cause"`
	Status        string    `json:"status"` // Successful, Failed, Cancelled, InProgress, …
	StatusMessage string    `json:"statusMessage"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
}

// SurgeMethod says how one instance's replacement was requested.
type SurgeMethod string

const (
	// SurgeStandby: EnterStandby without decrement; the group launches a replacement.
	SurgeStandby SurgeMethod = "standby"
	// SurgeDesired: desired capacity +1 (the instance could not enter standby).
	SurgeDesired SurgeMethod = "desired+1"
)

// SurgeOptions tune Surge.
type SurgeOptions struct {
	// ExecutionID names the execution in the records Surge writes (required).
	ExecutionID string `json:"executionId"`
	// AllowRaiseMax lets Surge raise MaxSize when the group has no headroom; the old
	// value is recorded and restored by Rollback / Retire(opts.Surge).
	AllowRaiseMax bool `json:"allowRaiseMax"`
}

// SurgedInstance is one old instance of a surge and how it was surged.
type SurgedInstance struct {
	ID     string      `json:"id"`
	Method SurgeMethod `json:"method"`
}

// SurgeRecord is everything needed to find the replacement and to undo the surge.
// It is plain data (JSON-friendly) so a workflow can persist it between steps.
type SurgeRecord struct {
	Group string `json:"group"`
	// ExecutionID is the execution that surged (its records on the cloud objects).
	ExecutionID string           `json:"executionId,omitempty"`
	Instances   []SurgedInstance `json:"instances"`
	// Snapshot: ids of every instance of the group before the surge. A replacement
	// is an instance not in this list.
	Snapshot []string `json:"snapshot"`
	// DesiredBefore is the desired capacity before the surge.
	DesiredBefore int32 `json:"desiredBefore"`
	// MaxRaised is true when Surge raised MaxSize from MaxBefore to MaxAfter.
	MaxRaised bool  `json:"maxRaised"`
	MaxBefore int32 `json:"maxBefore"`
	MaxAfter  int32 `json:"maxAfter"`
	// SuspendedAZRebalance is true when this surge (or a concurrent surge of ours
	// with an instance still in standby) suspended AZRebalance, so the last one of
	// ours to finish resumes it. False when someone else had suspended it.
	SuspendedAZRebalance bool `json:"suspendedAZRebalance"`
	// ActivitiesBefore is the id of the group's newest scaling activity before the
	// surge ("" when none): FindReplacement only looks at activities after it.
	ActivitiesBefore string `json:"activitiesBefore"`
	// StandbyActivity is the id of the surge's own EnterStandby activity, from that
	// call's answer (so no activity needs describing first): the launches it caused
	// are the activities after it.
	StandbyActivity string    `json:"standbyActivity,omitempty"`
	StartedAt       time.Time `json:"startedAt"`
	// KeepReplacements is set by the caller before Rollback when workloads may
	// already run on the replacements (the old node was being drained): Rollback
	// then only exits standby and terminates nothing, leaving desired capacity one
	// higher per instance (and a raised MaxSize raised), because terminating a
	// replacement would kill its pods without eviction.
	KeepReplacements bool `json:"keepReplacements,omitempty"`
	// HoldReplacements makes Rollback stop once the surged instances are back in
	// service, leaving the replacements and the group's records as they are: the
	// caller drains the replacements, then calls Rollback again without it.
	HoldReplacements bool `json:"holdReplacements,omitempty"`
	// Replacements are the replacement ids once FindReplacement found them (the
	// caller fills them in, so later checks and the rollback need no search).
	Replacements []string `json:"replacements,omitempty"`
	// Launched are the instances a FindReplacement found launched for this surge,
	// still on their way (the caller fills them in): later checks read the group
	// only, not the activities again, while those instances are in it.
	Launched []string `json:"launched,omitempty"`
	// Claimed is set by the caller once ClaimReplacement answered for
	// Replacements; ProtectedReplacements is that answer (the replacements whose
	// scale-in protection this execution set). Retire and Rollback then lift it
	// without reading the replacements' records first.
	Claimed               bool     `json:"claimed,omitempty"`
	ProtectedReplacements []string `json:"protectedReplacements,omitempty"`
}

// IDs returns the ids of the surged instances.
func (r SurgeRecord) IDs() []string {
	ids := make([]string, len(r.Instances))
	for i, in := range r.Instances {
		ids[i] = in.ID
	}
	return ids
}

// Replacement is the outcome of one FindReplacement check.
type Replacement struct {
	// Ready is true when every surged instance has an InService replacement.
	Ready bool `json:"ready"`
	// InService are new instances (not in the snapshot) that are InService.
	InService []string `json:"inService"`
	// Pending are new instances still launching (Pending, Pending:Wait, …).
	Pending []string `json:"pending"`
	// Protected are the InService ones already protected from scale-in at this
	// look (ClaimReplacement uses the look instead of describing them again).
	Protected []string `json:"protected,omitempty"`
	// Ambiguous, when set, says why new instances could not be told apart from
	// launches of other causes; they are not taken for the replacement.
	Ambiguous string `json:"ambiguous,omitempty"`
}

// RollbackResult reports one Rollback call.
type RollbackResult struct {
	// Done: nothing is left to undo (or to wait for).
	Done bool `json:"done"`
	// Waiting says what a call that is not Done waits for.
	Waiting string `json:"waiting,omitempty"`
	// ExitedStandby: surged instances taken out of standby (this call or before).
	ExitedStandby []string `json:"exitedStandby,omitempty"`
	// Terminated: replacements terminated with decrement (this call or before).
	Terminated []string `json:"terminated,omitempty"`
	// Kept: replacements kept (KeepReplacements).
	Kept []string `json:"kept,omitempty"`
	// Notes explain what was left as it is, in words.
	Notes []string `json:"notes,omitempty"`
}

// RetireMode says what happens to a retired instance after it is detached.
type RetireMode string

const (
	RetireTerminate RetireMode = "terminate"
	RetireStop      RetireMode = "stop"
)

// RetireOptions tune Retire.
type RetireOptions struct {
	Mode RetireMode `json:"mode"` // default RetireTerminate
	// ExecutionID names the execution in the records Retire writes (required).
	ExecutionID string `json:"executionId"`
	// Surge, when set, is the surge this retirement completes: MaxSize is restored and
	// AZRebalance resumed as recorded there.
	Surge *SurgeRecord `json:"surge"`
	// KeepCapacity detaches an InService instance without decrementing desired
	// capacity, so the group launches its replacement: the --no-surge path, for a
	// group without headroom, where the node was drained first.
	KeepCapacity bool `json:"keepCapacity,omitempty"`
}

// RetireResult reports what Retire did.
type RetireResult struct {
	Detached    bool `json:"detached"` // a DetachInstances call was made by this Retire
	Terminated  bool `json:"terminated"`
	Stopped     bool `json:"stopped"`
	AlreadyDone bool `json:"alreadyDone"` // nothing was left to do
}

// LifecycleResult is the result of a lifecycle action.
type LifecycleResult string

const (
	LifecycleContinue LifecycleResult = "CONTINUE"
	LifecycleAbandon  LifecycleResult = "ABANDON"
)

// LifecycleAction identifies one pending lifecycle action. Token is optional (the
// instance id identifies it too).
type LifecycleAction struct {
	Group      string `json:"group"`
	Hook       string `json:"hook"`
	InstanceID string `json:"instanceId"`
	Token      string `json:"token"`
}

// LaunchSpec is what an instance was (or would be) launched from: a launch template
// with a resolved version, or a launch configuration.
type LaunchSpec struct {
	LaunchTemplate      *LaunchTemplate `json:"launchTemplate"`
	LaunchConfiguration string          `json:"launchConfiguration"`
}

// Drift is the answer of DriftChecker.Drift.
type Drift struct {
	Drifted bool `json:"drifted"`
	// Reason says what differs, in words ("launch template lt-… version 3, group wants 4").
	Reason   string     `json:"reason"`
	Instance LaunchSpec `json:"instance"`
	Group    LaunchSpec `json:"group"`
}
