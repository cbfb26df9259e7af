package sim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// SNS, the subset serve's notifications use: topics, SQS subscriptions and Publish,
// which delivers to each subscribed queue in SNS's JSON envelope (or raw, with
// RawMessageDelivery) as AWS does. Nothing else of SNS (HTTP/email endpoints,
// filter policies, FIFO topics) is simulated.

type snsTopic struct {
	Name, ARN string
	Subs      []snsSubscription
}

type snsSubscription struct {
	ARN, QueueARN string
	Raw           bool
}

// snsMaxMessage is Publish's limit on the message (256 KiB).
const snsMaxMessage = 256 * 1024

var snsTopicName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

func (s *Server) snsOps() map[string]func(form) (any, *apiError) {
	return map[string]func(form) (any, *apiError){
		"CreateTopic": s.snsCreateTopic,
		"Subscribe":   s.snsSubscribe,
		"Publish":     s.snsPublish,
	}
}

func snsInvalid(format string, args ...any) *apiError {
	return &apiError{Status: 400, Code: "InvalidParameter", Message: "Invalid parameter: " + fmt.Sprintf(format, args...)}
}

func snsNoTopic() *apiError {
	return &apiError{Status: 404, Code: "NotFound", Message: "Topic does not exist"}
}

func (s *Server) topicLocked(arn string) *snsTopic {
	for _, t := range s.topics {
		if t.ARN == arn {
			return t
		}
	}
	return nil
}

type xCreateTopic struct {
	TopicArn string
}

func (s *Server) snsCreateTopic(f form) (any, *apiError) {
	name := f.str("Name")
	if !snsTopicName.MatchString(name) {
		return nil, snsInvalid("Topic Name: must be 1-256 letters, digits, hyphens or underscores, got %q", name)
	}
	if s.topics == nil {
		s.topics = map[string]*snsTopic{}
	}
	t := s.topics[name]
	if t == nil { // CreateTopic is idempotent by name
		t = &snsTopic{Name: name, ARN: fmt.Sprintf("arn:aws:sns:%s:%s:%s", s.opts.Region, s.opts.AccountID, name)}
		s.topics[name] = t
	}
	return xCreateTopic{TopicArn: t.ARN}, nil
}

type xSubscribe struct {
	SubscriptionArn string
}

func (s *Server) snsSubscribe(f form) (any, *apiError) {
	t := s.topicLocked(f.str("TopicArn"))
	if t == nil {
		return nil, snsNoTopic()
	}
	if p := f.str("Protocol"); p != "sqs" {
		return nil, snsInvalid("Protocol: the simulated SNS delivers only to sqs, got %q", p)
	}
	q := s.queueByARNLocked(f.str("Endpoint"))
	if q == nil {
		return nil, snsInvalid("SQS endpoint ARN %q: no such queue", f.str("Endpoint"))
	}
	sub := snsSubscription{QueueARN: q.ARN}
	for _, e := range f.sub("Attributes").structs("entry") {
		if e.str("key") == "RawMessageDelivery" {
			sub.Raw = strings.EqualFold(e.str("value"), "true")
		}
	}
	for _, old := range t.Subs {
		if old.QueueARN == sub.QueueARN { // Subscribe is idempotent per endpoint
			return xSubscribe{SubscriptionArn: old.ARN}, nil
		}
	}
	sub.ARN = t.ARN + ":" + s.uuidLocked()
	t.Subs = append(t.Subs, sub)
	return xSubscribe{SubscriptionArn: sub.ARN}, nil
}

type xPublish struct {
	MessageID string `xml:"MessageId"`
}

func (s *Server) snsPublish(f form) (any, *apiError) {
	t := s.topicLocked(f.str("TopicArn"))
	if t == nil {
		return nil, snsNoTopic()
	}
	msg, subject := f.str("Message"), f.str("Subject")
	switch {
	case msg == "":
		return nil, snsInvalid("Empty message")
	case len(msg) > snsMaxMessage:
		return nil, snsInvalid("Message too long")
	case len(subject) > 100:
		return nil, snsInvalid("Subject: must be less than 100 characters")
	}
	id := s.uuidLocked()
	envelope, _ := json.Marshal(map[string]string{
		"Type": "Notification", "MessageId": id, "TopicArn": t.ARN, "Subject": subject, "Message": msg,
		"Timestamp": ts(s.clock.Now()), "SignatureVersion": "1", "Signature": "c2ltdWxhdGVk",
		"SigningCertURL": "https://sns." + s.opts.Region + ".amazonaws.com/SimpleNotificationService.pem",
		"UnsubscribeURL": "https://sns." + s.opts.Region + ".amazonaws.com/?Action=Unsubscribe",
	})
	for _, sub := range t.Subs {
		q := s.queueByARNLocked(sub.QueueARN)
		if q == nil {
			continue // the queue was deleted: SNS drops the delivery
		}
		body := string(envelope)
		if sub.Raw {
			body = msg
		}
		// SNS delivers after Publish has answered: a delivery the queue refuses (the
		// envelope over its MaximumMessageSize) is dropped, never Publish's error.
		_, _ = s.enqueueLocked(q, body, nil)
	}
	return xPublish{MessageID: id}, nil
}
