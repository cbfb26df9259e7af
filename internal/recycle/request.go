// Package recycle is the domain of one node recycle: the request and its validation,
// the ASL state machine that orders the steps, and the task functions both engines
// (AWS Step Functions + Lambda, and the embedded engine) call.
package recycle

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/recycler/recycler/internal/cloud"
)

// OnTimeout says what a drain deadline does to the pods still standing at it
// (docs/recycle.md, "Draining").
type OnTimeout string

const (
	OnTimeoutFail  OnTimeout = "fail"  // roll back; the node stays in service
	OnTimeoutEvict OnTimeout = "evict" // evict the remaining selected pods too, PDBs honoured; fail if still refused at the drain's end
	OnTimeoutForce OnTimeout = "force" // delete what stands with a capped grace period (≥ 1 s), PDBs not consulted
)

// RetireMode says what happens to the old instance after it is detached.
type RetireMode string

const (
	RetireTerminate RetireMode = "terminate"
	RetireStop      RetireMode = "stop" // kept for forensics, tagged
)

// Request is one recycle, as every trigger (CLI, event, policy) builds it. It is the
// execution input of the state machine, so its JSON form is a public contract.
type Request struct {
	// Target: exactly one of Node (a Kubernetes node name) or InstanceID (i-…).
	Node       string `json:"node,omitempty"`
	InstanceID string `json:"instanceId,omitempty"`

	// The pods to wait for (long jobs): a label selector and namespaces, both optional.
	// No selector and no namespaces: nothing is waited for, every pod is evicted.
	Selector   string   `json:"selector,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`

	// MaxWait is the drain's deadline for every pod on the node, from the drain's
	// start; EvictTimeout (0: none) an earlier one for the pods not waited for.
	MaxWait      Duration  `json:"maxWait"`
	EvictTimeout Duration  `json:"evictTimeout,omitempty"`
	OnTimeout    OnTimeout `json:"onTimeout"`
	EvictOthers  bool      `json:"evictOthers"`
	// DeleteUnmanaged allows evicting pods without a controller (refused otherwise, as kubectl drain does).
	DeleteUnmanaged    bool       `json:"deleteUnmanaged,omitempty"`
	ReplacementTimeout Duration   `json:"replacementTimeout"`
	WorkloadTimeout    Duration   `json:"workloadTimeout"`
	ForceGrace         Duration   `json:"forceGrace"`
	Retire             RetireMode `json:"retire"`
	NoSurge            bool       `json:"noSurge"`
	AllowRaiseMax      bool       `json:"allowRaiseMax,omitempty"`
	// KeepReplacement makes a rollback keep a replacement that was already Ready
	// (the group stays one larger) instead of draining and terminating it.
	KeepReplacement bool `json:"keepReplacement,omitempty"`
	// ReadyLabels must be on the replacement Node before it counts as ready.
	ReadyLabels map[string]string `json:"readyLabels,omitempty"`

	// CheckSeconds is the longest one "done yet?" check may block on a watch before
	// it answers "not yet" and the state machine loops (CheckPeriod: a check blocks
	// for a quarter of the time already waited, up to this). Checks return as soon
	// as their condition holds, so it changes no reaction time; longer means fewer
	// history events (see HistoryEvents), shorter a fresher `recycler status`.
	CheckSeconds int `json:"checkSeconds"`

	// RollbackTimeout bounds how long a rollback waits for AWS to leave its
	// in-between states (EnteringStandby lasts up to the load balancers'
	// deregistration delay, at most an hour). 0 means DefaultRollbackTimeout.
	RollbackTimeout Duration `json:"rollbackTimeout,omitempty"`

	// LifecycleHook is set when an Auto Scaling lifecycle hook started this recycle:
	// the recycle drains, heartbeats the action while it works, and completes it with
	// CONTINUE (also after a rollback: see rollback in tasks.go).
	LifecycleHook *LifecycleHook `json:"lifecycleHook,omitempty"`

	// Trigger says what started this recycle when it was not a person (an event, an
	// annotation, a schedule); for logs, metrics and `recycler list`.
	Trigger *Trigger `json:"trigger,omitempty"`
}

// LifecycleHook identifies one pending lifecycle action.
type LifecycleHook struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	Token string `json:"token,omitempty"`
	// StartedAt is when Auto Scaling started the action (the event's time): the
	// hook's global timeout counts from it. Zero: unknown (Resolve's time is used).
	StartedAt time.Time `json:"startedAt,omitzero"`
}

// Trigger records what started a recycle.
type Trigger struct {
	Kind    string    `json:"kind"`              // lifecycle-terminate, alarm, scheduled-change, rebalance, annotation, schedule
	EventID string    `json:"eventId,omitempty"` // the event's id at its source
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// Defaults used by every trigger; the CLI shows them in --help.
const (
	DefaultMaxWait            = 24 * time.Hour
	DefaultReplacementTimeout = 15 * time.Minute
	DefaultWorkloadTimeout    = 10 * time.Minute
	DefaultForceGrace         = 30 * time.Second
	DefaultCheckSeconds       = 300
	DefaultRollbackTimeout    = time.Hour
	// MaxRollbackTimeout: AWS's longest in-between state is an hour (the load
	// balancers' deregistration delay); a rollback also drains the replacement,
	// PDBs honoured. Longer than this is a person's job, and the rollback's loop
	// stays well inside the history budget.
	MaxRollbackTimeout = 6 * time.Hour
)

// RollbackTimeoutError explains a --rollback-timeout (rollbackTimeout) out of range.
func RollbackTimeoutError(d time.Duration) error {
	return fmt.Errorf("--rollback-timeout must be a positive duration of at most %s (how long a rollback may wait for AWS and drain the replacement before it needs a person), such as 30m or 2h, got %s",
		strings.TrimSuffix(MaxRollbackTimeout.String(), "0m0s"), d)
}

// NewRequest returns a request for target with every default filled in.
func NewRequest(target string) Request {
	r := Request{
		MaxWait:            Duration(DefaultMaxWait),
		OnTimeout:          OnTimeoutFail,
		EvictOthers:        true,
		ReplacementTimeout: Duration(DefaultReplacementTimeout),
		WorkloadTimeout:    Duration(DefaultWorkloadTimeout),
		ForceGrace:         Duration(DefaultForceGrace),
		Retire:             RetireTerminate,
		CheckSeconds:       DefaultCheckSeconds,
	}
	r.SetTarget(target)
	return r
}

// SetTarget sets Node or InstanceID depending on the shape of target.
func (r *Request) SetTarget(target string) {
	if strings.HasPrefix(target, "i-") {
		r.InstanceID, r.Node = target, ""
	} else {
		r.Node, r.InstanceID = target, ""
	}
}

// Target is the node or instance the request names, for messages and locks.
func (r Request) Target() string {
	if r.InstanceID != "" {
		return r.InstanceID
	}
	return r.Node
}

// Validate checks every field and returns all problems at once, each saying what is
// wrong and what to do. It has no side effects; it runs before anything changes.
func (r Request) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch {
	case r.Node == "" && r.InstanceID == "":
		bad("no target: name a node (e.g. ip-10-0-1-23.eu-west-1.compute.internal) or an instance id (i-0123456789abcdef0)")
	case r.Node != "" && r.InstanceID != "":
		bad("both node %q and instance %q given: name exactly one target", r.Node, r.InstanceID)
	case r.InstanceID != "" && !cloud.IsInstanceID(r.InstanceID):
		bad("instance id %q is malformed: expected i- followed by 8 or 17 hexadecimal digits", r.InstanceID)
	case r.Node != "":
		if msgs := validation.IsDNS1123Subdomain(r.Node); len(msgs) > 0 {
			bad("node name %q is not a valid Kubernetes node name: %s", r.Node, strings.Join(msgs, "; "))
		}
	}
	if r.Selector != "" {
		if _, err := labels.Parse(r.Selector); err != nil {
			bad("--selector %q is not a valid label selector: %v (example: app=airflow-worker,tier in (batch))", r.Selector, err)
		}
	}
	seen := map[string]bool{}
	for _, ns := range r.Namespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			bad("--namespace %q is not a valid namespace name: %s", ns, strings.Join(msgs, "; "))
		}
		if seen[ns] {
			bad("--namespace %q given twice", ns)
		}
		seen[ns] = true
	}
	positive := func(flag string, d Duration) {
		if d <= 0 {
			bad("%s must be a positive duration such as 90m or 24h, got %s", flag, time.Duration(d))
		}
	}
	errs = append(errs, r.validateDrain()...)
	positive("--replacement-timeout", r.ReplacementTimeout)
	positive("--workload-timeout", r.WorkloadTimeout)
	if r.RollbackTimeout < 0 || time.Duration(r.RollbackTimeout) > MaxRollbackTimeout {
		errs = append(errs, RollbackTimeoutError(time.Duration(r.RollbackTimeout)))
	}
	if time.Duration(r.ForceGrace) < time.Second {
		bad("--force-grace must be at least 1s (a zero grace period can leave two copies of a pod running), got %s", time.Duration(r.ForceGrace))
	}
	switch r.OnTimeout {
	case OnTimeoutFail, OnTimeoutEvict, OnTimeoutForce:
	default:
		bad("--on-timeout %q is not one of fail, evict, force", r.OnTimeout)
	}
	switch r.Retire {
	case RetireTerminate, RetireStop:
	default:
		bad("--retire %q is not one of terminate, stop", r.Retire)
	}
	if r.CheckSeconds < 1 || r.CheckSeconds > maxCheckSeconds {
		bad("--check-seconds must be between 1 and 600 (seconds one check may wait before the state machine loops), got %d", r.CheckSeconds)
	}
	for k, v := range r.ReadyLabels {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad("--ready-label key %q is invalid: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			bad("--ready-label %s value %q is invalid: %s", k, v, strings.Join(msgs, "; "))
		}
	}
	if h := r.LifecycleHook; h != nil && (h.Group == "" || h.Name == "") {
		bad("lifecycleHook needs both group and name")
	}
	return r.withBudget(errs)
}

// withBudget checks the history budget of a request whose fields are valid.
func (r Request) withBudget(errs []error) error {
	if len(errs) == 0 {
		if err := r.checkHistoryBudget(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validateDrain checks the drain's deadlines (docs/recycle.md, "Draining").
func (r Request) validateDrain() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if r.MaxWait <= 0 {
		bad("--max-wait must be a positive duration such as 90m or 24h, got %s (it is the drain's deadline for every pod; there is no \"wait forever\")", time.Duration(r.MaxWait))
	}
	switch {
	case r.EvictTimeout < 0:
		bad("--evict-timeout must be 0 (none: --max-wait applies to every pod) or a positive duration, got %s", time.Duration(r.EvictTimeout))
	case r.EvictTimeout > r.MaxWait && r.MaxWait > 0:
		bad("--evict-timeout %s is longer than --max-wait %s, the drain's deadline for every pod: give a shorter one, or 0 for none", time.Duration(r.EvictTimeout), time.Duration(r.MaxWait))
	case r.EvictTimeout > 0 && r.OnTimeout == OnTimeoutEvict:
		bad("--evict-timeout with --on-timeout evict would change nothing (the other pods are evicted from the start, PDBs honoured): use --on-timeout fail or force, or drop --evict-timeout")
	case r.EvictTimeout > 0 && !r.EvictOthers:
		bad("--evict-timeout with --evict-others=false would change nothing (the other pods are not evicted): drop one of them")
	}
	return errs
}

// Duration is a time.Duration that reads and writes Go duration strings ("90m") in
// JSON, so execution inputs stay readable in Step Functions' console.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %s: use Go syntax such as 90s, 15m or 24h: %w", b, err)
	}
	*d = Duration(v)
	return nil
}
