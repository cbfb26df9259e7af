package sim

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// A delivery that a queue refuses (here: the envelope is over the queue's
// MaximumMessageSize) is dropped, as SNS drops it after Publish has answered: Publish
// still succeeds and the other subscribed queues still get the message.
func TestSNSPublishDropsADeliveryTheQueueRefuses(t *testing.T) {
	h := newHarness(t, Options{})
	q := sqsClient(h)
	n := sns.New(sns.Options{
		Region: h.sim.Region(), BaseEndpoint: aws.String(h.sim.URL()),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "secret", ""),
	})
	topic, err := n.CreateTopic(h.ctx, &sns.CreateTopicInput{Name: aws.String("events")})
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func(name string, attrs map[string]string) string {
		t.Helper()
		c, err := q.CreateQueue(h.ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
		if err != nil {
			t.Fatal(err)
		}
		a, err := q.GetQueueAttributes(h.ctx, &sqs.GetQueueAttributesInput{QueueUrl: c.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Subscribe(h.ctx, &sns.SubscribeInput{TopicArn: topic.TopicArn, Protocol: aws.String("sqs"), Endpoint: aws.String(a.Attributes["QueueArn"])}); err != nil {
			t.Fatal(err)
		}
		return *c.QueueUrl
	}
	subscribe("small", map[string]string{"MaximumMessageSize": "1024"}) // the envelope of a 1,000-byte message is larger
	big := subscribe("big", nil)

	msg := strings.Repeat("x", 1000)
	if _, err := n.Publish(h.ctx, &sns.PublishInput{TopicArn: topic.TopicArn, Message: aws.String(msg)}); err != nil {
		t.Fatalf("Publish: %v, want success (SNS delivers after answering)", err)
	}
	out, err := q.ReceiveMessage(h.ctx, &sqs.ReceiveMessageInput{QueueUrl: &big, MaxNumberOfMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 1 || !strings.Contains(*out.Messages[0].Body, msg) {
		t.Fatalf("queue big got %d messages, want the one envelope", len(out.Messages))
	}
}
