package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/trigger"
)

// Outcomes of one SQS message (metric label and log value).
const (
	outcomeStarted   = "started"   // an execution is durably recorded; message deleted
	outcomeDuplicate = "duplicate" // the event (or a recycle of its node) is already in hand; deleted
	outcomeCooldown  = "cooldown"  // the node was recycled by an event less than --cooldown ago; deleted
	outcomeIgnored   = "ignored"   // well formed, not ours; deleted
	outcomeMalformed = "malformed" // poison: left for the redrive policy to move to the dead-letter queue
	outcomeFailed    = "failed"    // could not be recorded (transient): left to be received again
	outcomeCompleted = "completed" // a lifecycle action for an instance without a Node: answered CONTINUE at once
)

// pollQueue long-polls the queue until ctx ends.
func (l *leader) pollQueue(ctx context.Context) {
	log := l.o.Log.With("queue", l.o.QueueURL)
	log.Info("polling the queue")
	backoff := time.Second
	for ctx.Err() == nil {
		out, err := l.o.Queue.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(l.o.QueueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 20,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("receive messages", "err", err, "retry_in", backoff)
			l.sleep(ctx, backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		for _, m := range out.Messages {
			if ctx.Err() != nil {
				return // not acknowledged: it comes back after its visibility timeout
			}
			l.handleMessage(ctx, m)
		}
	}
}

func (l *leader) sleep(ctx context.Context, d time.Duration) {
	t := l.o.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}

// handleMessage: parse, normalise, act, then acknowledge.
func (l *leader) handleMessage(ctx context.Context, m sqstypes.Message) {
	receives, _ := strconv.Atoi(m.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)])
	log := l.o.Log.With("message", aws.ToString(m.MessageId), "receive_count", receives)
	outcome, detail := l.actOn(ctx, aws.ToString(m.Body))
	l.o.Metrics.SQS(outcome)
	switch outcome {
	case outcomeMalformed, outcomeFailed:
		// Not deleted. Back off (2^n s, ≤ 15 min) so a message we cannot handle is not
		// spun on; after maxReceiveCount receives the queue's redrive policy moves it
		// to the dead-letter queue.
		vis := int32(min(900, 1<<min(receives, 10)))
		if outcome == outcomeMalformed {
			log.Error("poison message left for the dead-letter queue", "outcome", outcome, "reason", detail, "visible_in_s", vis)
		} else {
			log.Warn("message not handled; it will be received again", "outcome", outcome, "reason", detail, "visible_in_s", vis)
		}
		if _, err := l.o.Queue.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(l.o.QueueURL), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: vis,
		}); err != nil && ctx.Err() == nil {
			log.Warn("change message visibility", "err", err)
		}
		return
	}
	log.Info("message handled", "outcome", outcome, "detail", detail)
	if _, err := l.o.Queue.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(l.o.QueueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
		// Received again later: its execution is found by the event id it carries.
		log.Warn("delete message", "err", err)
	}
}

// actOn turns one message body into at most one recycle per named instance.
func (l *leader) actOn(ctx context.Context, body string) (outcome, detail string) {
	ev, err := trigger.Parse([]byte(body))
	switch {
	case trigger.IsIgnored(err):
		return outcomeIgnored, err.Error()
	case err != nil:
		return outcomeMalformed, err.Error()
	}
	if l.dedup.SeenEvent(ev.ID) {
		return outcomeDuplicate, "event " + ev.ID + " was handled already"
	}
	instances := ev.InstanceIDs
	if len(instances) == 0 && ev.Group != "" {
		id, err := l.pickFromGroup(ctx, ev.Group)
		if err != nil {
			return outcomeFailed, err.Error()
		}
		if id == "" {
			return outcomeIgnored, fmt.Sprintf("alarm on group %s: no instance of it has a Node that is free to recycle", ev.Group)
		}
		instances = []string{id}
	}
	outcome = "" // the most consequential outcome of its instances wins
	var details []string
	for _, id := range instances {
		o, d := l.actOnInstance(ctx, ev, id)
		details = append(details, d)
		if o == outcomeFailed {
			return o, d // the message comes back; what was started is found by its event id
		}
		if rank(o) > rank(outcome) {
			outcome = o
		}
	}
	l.dedup.MarkEvent(ev.ID)
	return outcome, fmt.Sprint(details)
}

func rank(o string) int {
	return slices.Index([]string{outcomeIgnored, outcomeDuplicate, outcomeCooldown, outcomeCompleted, outcomeStarted}, o)
}

func (l *leader) actOnInstance(ctx context.Context, ev trigger.Event, id string) (string, string) {
	node := l.nodes.byInstanceID(id)
	if node == nil {
		if ev.Hook != nil {
			// Nothing of ours to drain (never joined, or already gone): answer now so
			// the termination does not wait out the heartbeat timeout.
			act := cloud.LifecycleAction{Group: ev.Hook.Group, Hook: ev.Hook.Name, InstanceID: id, Token: ev.Hook.Token}
			if err := l.o.Tasks.Cloud.CompleteLifecycleAction(ctx, act, cloud.LifecycleContinue); err != nil {
				return outcomeFailed, fmt.Sprintf("complete lifecycle action of %s (no Node): %v", id, err)
			}
			return outcomeCompleted, fmt.Sprintf("instance %s has no Node in this cluster: lifecycle action completed with CONTINUE", id)
		}
		return outcomeIgnored, fmt.Sprintf("instance %s has no Node in this cluster", id)
	}
	// A terminate hook goes on to start: the recycle holding the node cannot answer
	// that action, an execution of its own does (start).
	if exec, ok := l.busy(node.Name, id); ok && ev.Hook == nil {
		return l.alreadyRecycled(node.Name, "execution "+exec)
	}
	if ev.Hook == nil {
		if on, until := l.dedup.CoolingDown(node.Name); on {
			return outcomeCooldown, fmt.Sprintf("node %s had a recycle started by an event; cool-down until %s", node.Name, until.Format(time.RFC3339))
		}
	}
	req := ev.Request(l.o.Defaults, id)
	if err := req.Validate(); err != nil {
		return outcomeMalformed, fmt.Sprintf("request for %s: %v", id, err)
	}
	ex, err := l.start(ctx, id, req, "")
	var already *alreadyError
	switch {
	case errors.As(err, &already) && already.Event != "":
		return outcomeDuplicate, already.Error() // delivered again: its execution is found
	case errors.As(err, &already):
		return l.alreadyRecycled(node.Name, already.Error())
	case err != nil:
		return outcomeFailed, fmt.Sprintf("start recycle of %s: %v", id, err)
	}
	l.dedup.MarkNode(node.Name, l.o.Clock.Now())
	return outcomeStarted, fmt.Sprintf("execution %s recycles node %s (instance %s)", ex.ID, node.Name, id)
}

// alreadyRecycled acknowledges an event for a node that a running recycle (by) has
// in hand.
func (l *leader) alreadyRecycled(node, by string) (string, string) {
	return outcomeDuplicate, fmt.Sprintf("node %s is being recycled: %s", node, by)
}

// pickFromGroup chooses the instance an alarm on a whole group recycles: the
// InService member with the oldest Node that is neither being recycled nor cooling
// down. "" when none qualifies.
func (l *leader) pickFromGroup(ctx context.Context, group string) (string, error) {
	g, err := l.o.Tasks.Cloud.Group(ctx, group)
	if errors.Is(err, cloud.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("describe group %s: %w", group, err)
	}
	var best *corev1.Node
	bestID := ""
	for _, in := range g.Instances {
		if in.Lifecycle != cloud.LifecycleInService {
			continue
		}
		n := l.nodes.byInstanceID(in.ID)
		if n == nil {
			continue
		}
		if _, busy := l.busy(n.Name, in.ID); busy {
			continue
		}
		if on, _ := l.dedup.CoolingDown(n.Name); on {
			continue
		}
		if best == nil || n.CreationTimestamp.Before(&best.CreationTimestamp) {
			best, bestID = n, in.ID
		}
	}
	return bestID, nil
}
