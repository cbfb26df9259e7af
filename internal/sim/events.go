package sim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// EventRule stands for an EventBridge rule on the default bus whose target is an
// SQS queue: every event the simulation emits with one of DetailTypes (all when
// empty) is put on Queue. Only Auto Scaling lifecycle actions are emitted.
type EventRule struct {
	Name        string   `json:"name"`
	DetailTypes []string `json:"detailTypes,omitempty"`
	Queue       string   `json:"queue"` // queue name
}

// PutEventRule adds (or replaces, by name) a rule. The queue must exist.
func (s *Server) PutEventRule(r EventRule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Name == "" {
		return fmt.Errorf("event rule: name is empty")
	}
	if s.queues[r.Queue] == nil {
		return fmt.Errorf("event rule %s: queue %q does not exist (create it with CreateQueue first)", r.Name, r.Queue)
	}
	for i, old := range s.rules {
		if old.Name == r.Name {
			s.rules[i] = r
			return nil
		}
	}
	s.rules = append(s.rules, r)
	return nil
}

// Detail types of Auto Scaling's lifecycle events on EventBridge.
const (
	detailLaunchAction    = "EC2 Instance-launch Lifecycle Action"
	detailTerminateAction = "EC2 Instance-terminate Lifecycle Action"
)

// emitLifecycleLocked publishes a new lifecycle action the two ways Auto Scaling
// does: as an EventBridge event (to the rules that match) and, when the hook has a
// notification target that is one of our queues, as a hook notification.
// Shapes: https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pools-eventbridge-events.html
// and .../prepare-for-lifecycle-notifications.html.
func (s *Server) emitLifecycleLocked(g *group, inst *instance, h *lifecycleHook, a *hookAction, at time.Time) {
	detailType, origin, dest := detailTerminateAction, "AutoScalingGroup", "EC2"
	if h.Transition == transitionLaunching {
		detailType, origin, dest = detailLaunchAction, "EC2", "AutoScalingGroup"
	}
	detail := map[string]string{
		"LifecycleActionToken": a.Token,
		"AutoScalingGroupName": g.Name,
		"LifecycleHookName":    h.Name,
		"EC2InstanceId":        inst.ID,
		"LifecycleTransition":  h.Transition,
		"Origin":               origin,
		"Destination":          dest,
	}
	if h.Metadata != "" {
		detail["NotificationMetadata"] = h.Metadata
	}
	ev := map[string]any{
		"version":     "0",
		"id":          s.uuidLocked(),
		"detail-type": detailType,
		"source":      "aws.autoscaling",
		"account":     s.opts.AccountID,
		"time":        at.UTC().Format(time.RFC3339Nano),
		"region":      s.opts.Region,
		"resources":   []string{g.ARN},
		"detail":      detail,
	}
	body, _ := json.Marshal(ev)
	for _, r := range s.rules {
		if len(r.DetailTypes) > 0 && !contains(r.DetailTypes, detailType) {
			continue
		}
		if q := s.queues[r.Queue]; q != nil {
			if _, err := s.enqueueLocked(q, string(body), nil); err != nil {
				s.log.Error("simulated aws: event rule target", "rule", r.Name, "err", err)
			}
		}
	}
	if q := s.queueByARNLocked(h.TargetARN); q != nil && strings.HasPrefix(h.TargetARN, "arn:aws:sqs:") {
		note := map[string]string{
			"Origin": origin, "Destination": dest, "LifecycleHookName": h.Name, "AccountId": s.opts.AccountID,
			"RequestId": s.uuidLocked(), "LifecycleTransition": h.Transition, "AutoScalingGroupName": g.Name,
			"Service": "AWS Auto Scaling", "Time": at.UTC().Format("2006-01-02T15:04:05.000Z"), "EC2InstanceId": inst.ID,
			"LifecycleActionToken": a.Token,
		}
		if h.Metadata != "" {
			note["NotificationMetadata"] = h.Metadata
		}
		b, _ := json.Marshal(note)
		_, _ = s.enqueueLocked(q, string(b), nil)
	}
}

// emitTestNotificationLocked: a hook created with a notification target gets a
// test message first (documented for SNS/SQS targets).
func (s *Server) emitTestNotificationLocked(g *group, h *lifecycleHook) {
	q := s.queueByARNLocked(h.TargetARN)
	if q == nil {
		return
	}
	b, _ := json.Marshal(map[string]string{
		"AccountId": s.opts.AccountID, "RequestId": s.uuidLocked(), "AutoScalingGroupARN": g.ARN,
		"AutoScalingGroupName": g.Name, "Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION",
		"Time": s.clock.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
	})
	_, _ = s.enqueueLocked(q, string(b), nil)
}

// HookDeadline returns when the lifecycle action of hook on instance id times out
// (zero when there is none): tests watch heartbeats extend it.
func (s *Server) HookDeadline(id, hook string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst := s.instances[id]; inst != nil {
		for _, a := range inst.Actions {
			if a.Hook == hook && !a.Done {
				return a.Deadline
			}
		}
	}
	return time.Time{}
}

// LifecycleAnswers returns the CompleteLifecycleAction answers given for instance
// id, in order ("hook=CONTINUE"): tests check who answered what, after the
// instance is gone too.
func (s *Server) LifecycleAnswers(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.answers[id])
}
