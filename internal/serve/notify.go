package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

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
