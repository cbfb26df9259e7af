package recycle

import (
	"time"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// State is the execution's data as it flows through the state machine: the request,
// then one field per step (the step's ResultPath). Every task receives the whole
// State and returns its own field. Keep it small: Step Functions caps payloads at
// 256 KiB, so pod lists are capped (see maxListed).
type State struct {
	Request     Request            `json:"request"`
	Target      *Target            `json:"target,omitempty"`
	Fence       *kube.FenceRecord  `json:"fence,omitempty"`
	Surge       *SurgeStatus       `json:"surge,omitempty"`
	Replacement *ReplacementStatus `json:"replacement,omitempty"`
	Drain       *DrainStatus       `json:"drain,omitempty"`
	Workloads   *WorkloadsStatus   `json:"workloads,omitempty"`
	Retire      *RetireStatus      `json:"retire,omitempty"`
	Rollback    *RollbackStatus    `json:"rollback,omitempty"`
	// Answer: AnswerHook's result, when Resolve found a lifecycle action that only
	// needs an answer (Target.HookOnly).
	Answer *HookAnswer `json:"answer,omitempty"`
	// Error is what a Catch stored: the error that sent the execution to Rollback.
	Error *StepError `json:"error,omitempty"`
}

// StepError is the shape Step Functions gives a caught error.
type StepError struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Target is what Resolve found, including what Rollback needs when a step died
// before it could record its own result (the group as it was at the start).
type Target struct {
	Node       string    `json:"node"`
	InstanceID string    `json:"instanceId"`
	AZ         string    `json:"az"`
	Group      string    `json:"group"`
	Desired    int32     `json:"desired"`
	MaxSize    int32     `json:"maxSize"`
	InService  int32     `json:"inService"` // the group's InService instances at Resolve
	Instances  []string  `json:"instances"` // the group's instance ids at Resolve
	Suspended  []string  `json:"suspended,omitempty"`
	ResolvedAt time.Time `json:"resolvedAt"`
	// Hook is set when a lifecycle hook started the recycle (its timeouts, Resolve's heartbeat).
	Hook *HookTiming `json:"hook,omitempty"`
	// HookOnly: that lifecycle action only needs an answer (our own termination, or
	// a node another recycle holds); the state machine goes to AnswerHook.
	HookOnly *HookOnly `json:"hookOnly,omitempty"`
}

// SurgeStatus is Surge's result.
type SurgeStatus struct {
	Record   cloud.SurgeRecord `json:"record"`
	Deadline time.Time         `json:"deadline"` // for the replacement to be Ready
}

// ReplacementStatus is CheckReplacement's result.
type ReplacementStatus struct {
	Done      bool      `json:"done"`
	Instances []string  `json:"instances,omitempty"` // InService replacements
	Nodes     []string  `json:"nodes,omitempty"`     // their Ready Nodes (protected from autoscaler scale-down until Retire)
	Pending   []string  `json:"pending,omitempty"`
	Reason    string    `json:"reason,omitempty"` // why not yet
	ReadyAt   time.Time `json:"readyAt,omitzero"`
	// Watch maps a replacement instance to the name of its Node, once known, so the
	// next check watches that one Node by name.
	Watch map[string]string `json:"watch,omitempty"`
	// Protected: InService replacements already protected from scale-in at this
	// look; the claim works from it.
	Protected []string `json:"protected,omitempty"`
	// Claimed once ClaimReplacement answered; ProtectedByUs is its answer (the
	// replacements whose protection Retire or Rollback lifts).
	Claimed       bool     `json:"claimed,omitempty"`
	ProtectedByUs []string `json:"protectedByUs,omitempty"`
	// LookedAt is when AWS was last asked (FindReplacement); a check whose Node is
	// not Ready yet asks again only lookEvery after it.
	LookedAt time.Time `json:"lookedAt,omitzero"`
}

// DrainStatus is Drain's result; it carries the drain's deadlines, its record of
// the workloads it moves and its eviction attempts from one pass to the next.
type DrainStatus struct {
	Done bool `json:"done"`
	// Passes counts the passes so far; the first (1) only records and evicts nothing.
	Passes    int       `json:"passes"`
	StartedAt time.Time `json:"startedAt"`
	// Deadline (--max-wait) is the drain's deadline for every pod on the node;
	// OthersDeadline (--evict-timeout), when set, an earlier one for the pods that
	// are not waited for; End (Deadline + --force-grace) is when the drain ends
	// whatever stands. OnTimeout is what the deadlines do (docs/recycle.md).
	Deadline       time.Time `json:"deadline"`
	OthersDeadline time.Time `json:"othersDeadline,omitzero"`
	End            time.Time `json:"end"`
	OnTimeout      OnTimeout `json:"onTimeout,omitempty"`
	TimedOut       bool      `json:"timedOut,omitempty"`       // Deadline passed; OnTimeout applied
	OthersTimedOut bool      `json:"othersTimedOut,omitempty"` // OthersDeadline passed
	Selected       []string  `json:"selected,omitempty"`       // selected pods still running (namespace/name and age)
	Remaining      int       `json:"remaining"`                // pods still holding the node
	// Workloads are the controllers of the pods the drain may move, with their
	// availability when the drain started: what CheckWorkloads compares with.
	Workloads []kube.Workload      `json:"workloads,omitempty"`
	Unchecked []string             `json:"unchecked,omitempty"` // moved pods no controller of which can be checked
	Evicted   []kube.Pod           `json:"evicted,omitempty"`   // pods this recycle evicted or deleted
	Blocked   map[string]BlockInfo `json:"blocked,omitempty"`   // pod UID → latest PDB refusal
	// Refused: a budget has refused an eviction in this drain (the pass that
	// first saw it returned at once, so the status named the budget).
	Refused    bool      `json:"refused,omitempty"`
	ForcedPods int       `json:"forced,omitempty"`
	Left       []string  `json:"left,omitempty"` // still terminating at End: left to the instance's end
	DoneAt     time.Time `json:"doneAt,omitzero"`
	// HeartbeatAt is the last lifecycle-hook heartbeat a Drain call recorded.
	HeartbeatAt time.Time `json:"heartbeatAt,omitzero"`
}

// BlockInfo says which budget refused a pod's eviction and when to try again.
type BlockInfo struct {
	Pod       string    `json:"pod"`
	PDBs      []string  `json:"pdbs"`
	Attempts  int       `json:"attempts"`
	NotBefore time.Time `json:"notBefore"`
}

// WorkloadsStatus is CheckWorkloads' result.
type WorkloadsStatus struct {
	Done        bool      `json:"done"`
	StartedAt   time.Time `json:"startedAt"`
	Deadline    time.Time `json:"deadline"`
	NotReady    []string  `json:"notReady,omitempty"`
	HeartbeatAt time.Time `json:"heartbeatAt,omitzero"`
}

// RetireStatus is Retire's result.
type RetireStatus struct {
	cloud.RetireResult
	// Done is false while AWS holds the old instance between two states
	// (EnteringStandby, Detaching): the state machine asks again, until Deadline.
	Done              bool      `json:"done"`
	Reason            string    `json:"reason,omitempty"`
	Deadline          time.Time `json:"deadline"`
	NodeDeleted       bool      `json:"nodeDeleted"`
	LifecycleComplete bool      `json:"lifecycleComplete,omitempty"`
	At                time.Time `json:"at"`
}

// RollbackStatus is Rollback's result. The state machine calls Rollback again
// (after a pause) until Done; Deadline bounds that loop.
type RollbackStatus struct {
	Done     bool      `json:"done"`
	Reason   string    `json:"reason,omitempty"` // what a rollback not done waits for
	Deadline time.Time `json:"deadline"`
	Unfenced bool      `json:"unfenced"`
	// Drain is the drain of the replacement before it is terminated (the same drain
	// as the recycle's, PDBs honoured), carried from one pass to the next.
	Drain *DrainStatus `json:"drain,omitempty"`
	// DrainNode is the replacement's Node being drained.
	DrainNode   string `json:"drainNode,omitempty"`
	SurgeUndone bool   `json:"surgeUndone"`
	// LifecycleComplete: the hook that started it was answered CONTINUE.
	LifecycleComplete bool `json:"lifecycleComplete,omitempty"`
	// Before and After are the group's desired and InService counts at Resolve and
	// once the rollback is done.
	Before *GroupCounts `json:"before,omitempty"`
	After  *GroupCounts `json:"after,omitempty"`
	Notes  []string     `json:"notes,omitempty"`
	At     time.Time    `json:"at"`
}

// GroupCounts are what a person compares before and after: the group's desired
// capacity and how many instances are InService.
type GroupCounts struct {
	Desired   int32 `json:"desired"`
	InService int32 `json:"inService"`
}

// maxListed caps pod lists kept in the State.
const maxListed = 50
