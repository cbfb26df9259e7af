package serve_test

// The SNS notification channel's contract, against the simulated AWS and moto:
// a notification published to a topic reaches an SQS subscriber in SNS's envelope,
// subject for people and message the notification as JSON; a missing topic is a
// logged, counted failure that never panics or blocks.

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/recycler/recycler/internal/metrics"
	"github.com/recycler/recycler/internal/serve"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

func TestSNSChannelContract(t *testing.T) {
	t.Run("simulated", func(t *testing.T) {
		srv := sim.New(sim.Options{Region: "eu-west-1", Seed: 5})
		if err := srv.Start(""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close(context.Background()) })
		snsContract(t, awsConfig(t, srv.URL(), "eu-west-1"))
	})
	t.Run("moto", func(t *testing.T) {
		m := testenv.MotoFor(t)
		snsContract(t, awsConfig(t, m.URL, "us-east-1"))
	})
}

func awsConfig(t *testing.T, endpoint, region string) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion(region), config.WithBaseEndpoint(endpoint),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// snsSubscriber makes a topic and a queue subscribed to it; it returns the topic
// ARN and a function that receives one message's body (the SNS envelope).
func snsSubscriber(t *testing.T, cfg aws.Config, name string) (string, func() string) {
	t.Helper()
	ctx := t.Context()
	topics, queues := sns.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	topic, err := topics.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queues.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := queues.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topics.Subscribe(ctx, &sns.SubscribeInput{TopicArn: topic.TopicArn, Protocol: aws.String("sqs"), Endpoint: aws.String(attrs.Attributes["QueueArn"])}); err != nil {
		t.Fatal(err)
	}
	return *topic.TopicArn, func() string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			out, err := queues.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Messages) > 0 {
				if _, err := queues.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: out.Messages[0].ReceiptHandle}); err != nil {
					t.Fatal(err)
				}
				return *out.Messages[0].Body
			}
		}
		t.Fatal("no message on the subscribed queue within 30s")
		return ""
	}
}

// snsEnvelope is what an SQS subscriber of a topic receives (raw delivery off).
type snsEnvelope struct {
	Type, TopicArn, Subject, Message string
}

func snsContract(t *testing.T, cfg aws.Config) {
	topic, receive := snsSubscriber(t, cfg, "recycler-notifications")
	var logs strings.Builder
	ch := &serve.SNS{Client: sns.NewFromConfig(cfg), TopicARN: topic, Log: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: metrics.New()}
	n := serve.Notification{Kind: serve.NotifyBlocked, Execution: "exec-1", Target: "ip-10-0-1-7.ec2.internal",
		Text: "recycle of ip-10-0-1-7.ec2.internal has been in Drain for 45m0s: shop/web-0 blocked by PDB web — ünïcode"}
	ch.Notify(t.Context(), n)
	if logs.Len() > 0 {
		t.Fatalf("publish logged: %s", logs.String())
	}
	var env snsEnvelope
	if err := json.Unmarshal([]byte(receive()), &env); err != nil {
		t.Fatalf("the subscriber's message is not SNS's envelope: %v", err)
	}
	var got serve.Notification
	if err := json.Unmarshal([]byte(env.Message), &got); err != nil {
		t.Fatalf("the message is not the notification as JSON: %v (%q)", err, env.Message)
	}
	if env.Type != "Notification" || env.TopicArn != topic || got != n {
		t.Errorf("envelope %+v carrying %+v, want a Notification from %s carrying %+v", env, got, topic, n)
	}
	if env.Subject != "recycler: blocked ip-10-0-1-7.ec2.internal" {
		t.Errorf("subject %q", env.Subject)
	}
	// A long target is cut to the subject's limit, never refused.
	long := n
	long.Target = strings.Repeat("node-", 40)
	ch.Notify(t.Context(), long)
	if logs.Len() > 0 {
		t.Fatalf("a long subject was refused: %s", logs.String())
	}
	_ = receive()

	missing := &serve.SNS{Client: sns.NewFromConfig(cfg), TopicARN: topic + "-gone", Log: ch.Log, Metrics: ch.Metrics}
	missing.Notify(t.Context(), n)
	if !strings.Contains(logs.String(), "notification not delivered") || !strings.Contains(logs.String(), "NotFound") {
		t.Errorf("a missing topic logged %q, want a NotFound delivery failure", logs.String())
	}
}
