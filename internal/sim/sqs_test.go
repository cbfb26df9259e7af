package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

func sqsClient(h *harness) *sqs.Client {
	return sqs.New(sqs.Options{
		Region: h.sim.Region(), BaseEndpoint: aws.String(h.sim.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "secret", ""),
	})
}

// queues makes a work queue whose messages move to a dead-letter queue after
// maxReceive receives, as a user would with two CreateQueue calls.
func queues(t *testing.T, h *harness, c *sqs.Client, maxReceive int) (work, dlq string) {
	const name = "events"
	t.Helper()
	d, err := c.CreateQueue(h.ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := c.GetQueueAttributes(h.ctx, &sqs.GetQueueAttributesInput{QueueUrl: d.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"%d"}`, attrs.Attributes["QueueArn"], maxReceive)
	w, err := c.CreateQueue(h.ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{"RedrivePolicy": policy, "VisibilityTimeout": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	return *w.QueueUrl, *d.QueueUrl
}

func TestSQSSendReceiveDeleteThroughTheSDK(t *testing.T) {
	h := newHarness(t, Options{})
	c := sqsClient(h)
	work, _ := queues(t, h, c, 3)

	// The SDK checks MD5OfMessageBody and MD5OfBody: a wrong digest would fail here.
	if _, err := c.SendMessage(h.ctx, &sqs.SendMessageInput{QueueUrl: &work, MessageBody: aws.String(`{"hello":"wörld"}`)}); err != nil {
		t.Fatal(err)
	}
	out, err := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work, MaxNumberOfMessages: 10,
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{"ApproximateReceiveCount"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 1 || *out.Messages[0].Body != `{"hello":"wörld"}` || out.Messages[0].Attributes["ApproximateReceiveCount"] != "1" {
		t.Fatalf("received %+v", out.Messages)
	}
	// In flight: invisible until the visibility timeout passes on the clock.
	again, _ := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work})
	if len(again.Messages) != 0 {
		t.Fatalf("in-flight message delivered again: %+v", again.Messages)
	}
	attrs, _ := c.GetQueueAttributes(h.ctx, &sqs.GetQueueAttributesInput{QueueUrl: &work, AttributeNames: []sqstypes.QueueAttributeName{"All"}})
	if attrs.Attributes["ApproximateNumberOfMessagesNotVisible"] != "1" || attrs.Attributes["ApproximateNumberOfMessages"] != "0" {
		t.Fatalf("attributes %v", attrs.Attributes)
	}
	h.step(30 * time.Second)
	again, _ = c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work})
	if len(again.Messages) != 1 {
		t.Fatalf("message not visible again after its visibility timeout")
	}
	if _, err := c.DeleteMessage(h.ctx, &sqs.DeleteMessageInput{QueueUrl: &work, ReceiptHandle: again.Messages[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Minute)
	if left := h.sim.QueueMessages("events"); len(left) != 0 {
		t.Fatalf("deleted message still on the queue: %v", left)
	}

	// Refusals, as SQS words them.
	_, err = c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(h.sim.URL() + "/123456789012/nope")})
	var qne *sqstypes.QueueDoesNotExist
	if !errors.As(err, &qne) {
		t.Fatalf("unknown queue: %v", err)
	}
	_, err = c.DeleteMessage(h.ctx, &sqs.DeleteMessageInput{QueueUrl: &work, ReceiptHandle: aws.String("bogus")})
	var rhi *sqstypes.ReceiptHandleIsInvalid
	if !errors.As(err, &rhi) {
		t.Fatalf("bogus receipt handle: %v", err)
	}
	_, err = c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work, WaitTimeSeconds: 21})
	wantAPIError(t, err, "InvalidParameterValue", "WaitTimeSeconds")
}

func TestSQSLongPollWaitsOnTheInjectedClock(t *testing.T) {
	h := newHarness(t, Options{})
	c := sqsClient(h)
	work, _ := queues(t, h, c, 3)
	got := make(chan *sqs.ReceiveMessageOutput, 1)
	go func() {
		out, err := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work, WaitTimeSeconds: 20})
		if err != nil {
			t.Error(err)
		}
		got <- out
	}()
	waitFor(t, func() bool { return h.clock.HasWaiters() })
	h.clock.Step(10 * time.Second) // half the wait: still polling
	select {
	case out := <-got:
		t.Fatalf("long poll returned early with %d messages", len(out.Messages))
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.SendMessage(h.ctx, &sqs.SendMessageInput{QueueUrl: &work, MessageBody: aws.String("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-got:
		if len(out.Messages) != 1 {
			t.Fatalf("long poll returned %d messages, want the one sent meanwhile", len(out.Messages))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not return when a message arrived")
	}

	// With nothing sent, it returns empty once WaitTimeSeconds passed on the clock.
	go func() {
		out, _ := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work, WaitTimeSeconds: 5})
		got <- out
	}()
	waitFor(t, func() bool { return h.clock.HasWaiters() })
	h.clock.Step(5 * time.Second)
	select {
	case out := <-got:
		if len(out.Messages) != 0 {
			t.Fatalf("got %d messages from an empty queue", len(out.Messages))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not end at WaitTimeSeconds")
	}
}

func TestSQSRedriveMovesPoisonToTheDeadLetterQueue(t *testing.T) {
	h := newHarness(t, Options{})
	c := sqsClient(h)
	work, dlq := queues(t, h, c, 2)
	if _, err := c.SendMessage(h.ctx, &sqs.SendMessageInput{QueueUrl: &work, MessageBody: aws.String("poison")}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		out, err := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("receive %d: %v %+v", i, err, out)
		}
		// Give up on it at once (visibility 0), as a consumer that cannot read it does.
		if _, err := c.ChangeMessageVisibility(h.ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &work, ReceiptHandle: out.Messages[0].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work})
	if len(out.Messages) != 0 {
		t.Fatalf("received a third time past maxReceiveCount 2")
	}
	d, err := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &dlq, MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{"All"}})
	if err != nil || len(d.Messages) != 1 || *d.Messages[0].Body != "poison" || d.Messages[0].Attributes["DeadLetterQueueSourceArn"] == "" {
		t.Fatalf("dead-letter queue: %v %+v", err, d)
	}
}

func TestScaleInWithTerminateHookPutsTheEventOnTheQueue(t *testing.T) {
	h := newHarness(t, Options{})
	c := sqsClient(h)
	work, _ := queues(t, h, c, 3)
	h.seed(1, 4, 2)
	if err := h.sim.PutEventRule(EventRule{Name: "hooks", DetailTypes: []string{detailTerminateAction}, Queue: "events"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.PutLifecycleHook(h.ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("ng"), LifecycleHookName: aws.String("drain"),
		LifecycleTransition: aws.String(transitionTerminating), HeartbeatTimeout: aws.Int32(300), DefaultResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.asg.SetDesiredCapacity(h.ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("ng"), DesiredCapacity: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	out, err := c.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &work})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("receive: %v %+v", err, out)
	}
	var ev struct {
		DetailType string `json:"detail-type"`
		Source     string `json:"source"`
		Detail     struct {
			LifecycleActionToken, AutoScalingGroupName, LifecycleHookName, LifecycleTransition string
			EC2InstanceID                                                                      string `json:"EC2InstanceId"`
		} `json:"detail"`
	}
	if err := json.Unmarshal([]byte(*out.Messages[0].Body), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.DetailType != detailTerminateAction || ev.Source != "aws.autoscaling" || ev.Detail.AutoScalingGroupName != "ng" ||
		ev.Detail.LifecycleHookName != "drain" || ev.Detail.LifecycleActionToken == "" || ev.Detail.LifecycleTransition != transitionTerminating {
		t.Fatalf("event %+v", ev)
	}
	// The token in the event is the live action's: a heartbeat with it extends the deadline.
	before := h.sim.HookDeadline(ev.Detail.EC2InstanceID, "drain")
	h.clock.Step(time.Minute)
	if _, err := h.asg.RecordLifecycleActionHeartbeat(h.ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("ng"),
		LifecycleHookName: aws.String("drain"), LifecycleActionToken: &ev.Detail.LifecycleActionToken}); err != nil {
		t.Fatal(err)
	}
	if after := h.sim.HookDeadline(ev.Detail.EC2InstanceID, "drain"); !after.Equal(before.Add(time.Minute)) {
		t.Fatalf("deadline %v after heartbeat, want %v", after, before.Add(time.Minute))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met within 30s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
