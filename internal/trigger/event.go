// Package trigger turns what arrives from outside — SQS messages fed by EventBridge
// or SNS, node annotations — into recycle requests. Parsing is strict (wrong types
// are refused; unknown fields are tolerated, as AWS adds fields over time) and has no
// side effects, so `recycler serve` and the Step Functions path can share it.
//
// Every trigger becomes one Event, and an Event becomes recycle.Requests through
// Event.Request: one request type whatever the source.
package trigger

import (
	"errors"
	"fmt"
	"time"

	"github.com/recycler/recycler/internal/recycle"
)

// Kind says what started a recycle.
type Kind string

const (
	// KindLifecycleTerminate: an Auto Scaling terminate lifecycle hook (scale-in,
	// Instance Refresh, max instance lifetime). The group replaces the instance
	// itself: the recycle drains only, heartbeats the hook, completes it.
	KindLifecycleTerminate Kind = "lifecycle-terminate"
	// KindAlarm: a CloudWatch alarm went to ALARM for an instance or a group.
	KindAlarm Kind = "alarm"
	// KindScheduledChange: an AWS Health scheduled change for an EC2 instance
	// (retirement, maintenance): recycle before AWS acts.
	KindScheduledChange Kind = "scheduled-change"
	// KindRebalance: EC2 rebalance recommendation (elevated interruption risk).
	KindRebalance Kind = "rebalance"
	// KindAnnotation: the node annotation recycler.io/recycle.
	KindAnnotation Kind = "annotation"
	// KindSchedule: a scheduled rollout (--schedule).
	KindSchedule Kind = "schedule"
)

// Event is one trigger, normalised.
type Event struct {
	// ID identifies the event at its source (EventBridge id, SNS MessageId, the
	// lifecycle action token): the same event delivered twice has the same ID.
	ID   string
	Kind Kind
	// Time the event happened at its source (zero when the source does not say).
	Time time.Time
	// InstanceIDs the event names (one for lifecycle hooks and EC2 events; an alarm
	// over several instances names each).
	InstanceIDs []string
	// Group is set when the event names an Auto Scaling group but no instance (an
	// alarm on a group metric): serve picks the instance.
	Group string
	// Hook is the lifecycle action (KindLifecycleTerminate only).
	Hook *recycle.LifecycleHook
	// Reason is a short human sentence for logs and the execution input.
	Reason string
}

// Request builds the recycle request of one instance of the event from defaults
// (the flags of `recycler serve`). Lifecycle-hook events drain only: the group is
// already replacing the instance (or shrinking on purpose), so a surge would only
// add an instance the group then removes.
func (e Event) Request(defaults recycle.Request, instanceID string) recycle.Request {
	r := defaults
	r.SetTarget(instanceID)
	r.Trigger = &recycle.Trigger{Kind: string(e.Kind), EventID: e.ID, Reason: e.Reason}
	if !e.Time.IsZero() {
		r.Trigger.At = e.Time.UTC()
	}
	if e.Hook != nil {
		h := *e.Hook
		r.LifecycleHook = &h
		r.NoSurge = true
		r.AllowRaiseMax = false
	}
	return r
}

// IgnoredError: the message is well formed but not ours to act on (a launch
// lifecycle action, an alarm leaving ALARM, a test notification, an event type we do
// not handle). It is acknowledged (deleted) with a log line.
type IgnoredError struct{ Reason string }

func (e *IgnoredError) Error() string { return "ignored: " + e.Reason }

// MalformedError: the message cannot be read (not JSON, wrong types, a required
// field missing). It is poison: left on the queue so SQS's redrive policy moves it
// to the dead-letter queue after maxReceiveCount receives.
type MalformedError struct {
	What string // which shape we tried to read
	Err  error
}

func (e *MalformedError) Error() string { return fmt.Sprintf("malformed %s: %v", e.What, e.Err) }
func (e *MalformedError) Unwrap() error { return e.Err }

// IsIgnored reports whether err says "not ours" (acknowledge and move on).
func IsIgnored(err error) bool {
	var ie *IgnoredError
	return errors.As(err, &ie)
}

// IsMalformed reports whether err says the message is poison.
func IsMalformed(err error) bool {
	var me *MalformedError
	return errors.As(err, &me)
}

func ignored(format string, args ...any) error {
	return &IgnoredError{Reason: fmt.Sprintf(format, args...)}
}

func malformed(what string, format string, args ...any) error {
	return &MalformedError{What: what, Err: fmt.Errorf(format, args...)}
}
