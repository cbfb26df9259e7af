package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/metrics"
	"github.com/recycler/recycler/internal/recycle"
)

// NotifyKind says what a notification is about.
type NotifyKind string

// What serve notifies about.
const (
	NotifyStarted     NotifyKind = "started"
	NotifyDone        NotifyKind = "done"
	NotifyRolledBack  NotifyKind = "rolled-back"
	NotifyNeedsPerson NotifyKind = "needs-person"
	NotifyBlocked     NotifyKind = "blocked" // in one step longer than --notify-blocked-after
)

// Notification is one message to people.
type Notification struct {
	Kind      NotifyKind `json:"kind"`
	Execution string     `json:"execution"`
	Target    string     `json:"target"`
	Text      string     `json:"text"`
}

// Notifier delivers notifications; best effort (a failure is logged and counted,
// never fails a recycle).
type Notifier interface {
	Notify(ctx context.Context, n Notification)
}

// Webhook posts Slack-compatible JSON ({"text": …} plus our fields) to a URL.
type Webhook struct {
	URL     string
	Client  *http.Client
	Log     *slog.Logger
	Metrics *metrics.Metrics
}

// Notify implements Notifier.
func (w *Webhook) Notify(ctx context.Context, n Notification) {
	body, _ := json.Marshal(struct {
		Text string `json:"text"`
		Notification
	}{Text: "recycler: " + n.Text, Notification: n})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		w.Log.Warn("notification", "err", err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.Client.Do(req)
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode >= 300 {
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
	}
	if err != nil {
		w.Log.Warn("notification not delivered", "kind", n.Kind, "execution", n.Execution, "err", err)
		w.Metrics.Notification("webhook", "failed")
		return
	}
	w.Metrics.Notification("webhook", "sent")
}

// Notifiers delivers each notification to every channel, in order.
type Notifiers []Notifier

// Notify implements Notifier.
func (ns Notifiers) Notify(ctx context.Context, n Notification) {
	for _, c := range ns {
		c.Notify(ctx, n)
	}
}

// Publisher is what the SNS channel needs of an SNS client.
type Publisher interface {
	Publish(ctx context.Context, in *sns.PublishInput, opts ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// SNS publishes each notification to a topic: the subject for people (email), the
// message the notification as JSON (for Lambda, SQS or chat subscribers).
type SNS struct {
	Client   Publisher
	TopicARN string
	Log      *slog.Logger
	Metrics  *metrics.Metrics
}

// snsMaxSubject is Publish's limit on Subject (ASCII, under 100 characters).
const snsMaxSubject = 99

// Notify implements Notifier.
func (s *SNS) Notify(ctx context.Context, n Notification) {
	msg, _ := json.Marshal(n)
	subject := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e { // SNS refuses control and non-ASCII characters in a subject
			return '?'
		}
		return r
	}, fmt.Sprintf("recycler: %s %s", n.Kind, n.Target))
	if len(subject) > snsMaxSubject {
		subject = subject[:snsMaxSubject]
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Client.Publish(ctx, &sns.PublishInput{TopicArn: &s.TopicARN, Subject: &subject, Message: aws.String(string(msg))}); err != nil {
		s.Log.Warn("notification not delivered", "kind", n.Kind, "execution", n.Execution, "channel", "sns", "err", err)
		s.Metrics.Notification("sns", "failed")
		return
	}
	s.Metrics.Notification("sns", "sent")
}

func endNotification(ex engine.Execution, target string) Notification {
	n := Notification{Execution: ex.ID, Target: target}
	switch {
	case ex.Status == engine.StatusSucceeded:
		n.Kind, n.Text = NotifyDone, fmt.Sprintf("recycle of %s succeeded (execution %s)", target, ex.ID)
	case ex.Error == recycle.ErrRollbackFailed:
		n.Kind, n.Text = NotifyNeedsPerson, fmt.Sprintf("recycle of %s failed and its rollback did not finish: a person must look (execution %s: %s)", target, ex.ID, ex.Cause)
	default:
		n.Kind, n.Text = NotifyRolledBack, fmt.Sprintf("recycle of %s ended %s (%s: %s), rolled back (execution %s)", target, ex.Status, ex.Error, ex.Cause, ex.ID)
	}
	return n
}
