package recycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// The loop period. Each wait of the workflow (replacement, drain, moved
// workloads) is a Task → Choice → Wait(1 s) loop whose check blocks on a watch
// and returns at once when its condition holds; so how long one check may block
// changes no reaction time, only how often the loop goes round — and each round
// writes 9 history events (Step Functions fails an execution outright at 25,000).
// A check therefore blocks for a quarter of the time its wait has already
// lasted, at least minCheck and at most the request's --check-seconds: early
// rounds are short (fresh status while most waits end), a long wait settles at
// the ceiling. docs/recycle.md has the arithmetic; HistoryEvents applies it.
const (
	minCheck    = 5 * time.Second
	checkGrowth = 4 // a check blocks for waited/checkGrowth
	// loopPause is the Wait state of each loop (Seconds: 1).
	loopPause = time.Second
)

// CheckPeriod is how long one check may block after its wait has lasted waited,
// with --check-seconds ceiling: waited/4, clamped to [min(5 s, ceiling), ceiling].
func CheckPeriod(waited time.Duration, checkSeconds int) time.Duration {
	ceiling := time.Duration(checkSeconds) * time.Second
	return min(max(waited/checkGrowth, minCheck), ceiling)
}

// bound limits one "done yet?" check, of a wait that began at since, to
// CheckPeriod on the injected clock, and to deadline when it is set, so a check
// answers "not yet" instead of blocking long. The one place the loop's period is decided.
func (t *Tasks) bound(ctx context.Context, checkSeconds int, since, deadline time.Time) (context.Context, context.CancelFunc) {
	now := t.Clock.Now()
	at := now.Add(CheckPeriod(now.Sub(since), checkSeconds))
	if !deadline.IsZero() && deadline.Before(at) {
		at = deadline
	}
	return t.until(ctx, at)
}

// until returns a context that ends at instant at of the injected clock (never, for
// the zero time). context.WithDeadline would use the wall clock, which tests cannot step.
func (t *Tasks) until(ctx context.Context, at time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if at.IsZero() {
		return ctx, cancel
	}
	d := at.Sub(t.Clock.Now())
	if d <= 0 {
		cancel()
		return ctx, cancel
	}
	timer := t.Clock.NewTimer(d)
	go func() {
		select {
		case <-timer.C():
			cancel()
		case <-ctx.Done():
			timer.Stop()
		}
	}()
	return ctx, cancel
}

func needTarget(s State) (*Target, error) {
	if s.Target == nil {
		return nil, newError(ErrBadInput, "state has no target: Resolve must run first")
	}
	return s.Target, nil
}

func firstOf(lists ...[]string) string {
	for _, l := range lists {
		if len(l) > 0 {
			return l[0]
		}
	}
	return ""
}

// badInputIf names errors that mean "the request points at nothing usable" as
// ErrBadInput, and wraps everything else with context.
func badInputIf(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, kube.ErrNodeNotFound), errors.Is(err, kube.ErrInvalidProviderID),
		errors.Is(err, kube.ErrInvalidInstanceID), errors.Is(err, kube.ErrAmbiguousInstance), errors.Is(err, cloud.ErrNotFound),
		errors.Is(err, cloud.ErrValidation), errors.Is(err, cloud.ErrNotInGroup):
		return &Error{Name: ErrBadInput, Err: fmt.Errorf("%s: %w", msg, err)}
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// classify gives an error from a port its ASL name: transient ones are retried by
// the state machine, refused preconditions end it without rollback, the rest are
// caught and rolled back.
func classify(task string, err error) error {
	var named *Error
	switch {
	case errors.As(err, &named):
		return err
	case errors.Is(err, kube.ErrNodeHeld), errors.Is(err, cloud.ErrNoHeadroom):
		return &Error{Name: ErrPrecondition, Err: fmt.Errorf("%s: %w", task, err)}
	case cloud.IsRetryable(err), apierrors.IsConflict(err), apierrors.IsServerTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsTimeout(err), apierrors.IsUnexpectedServerError(err),
		isNetworkError(err):
		return &Error{Name: ErrTransient, Err: fmt.Errorf("%s: %w", task, err)}
	}
	return fmt.Errorf("%s: %w", task, err)
}

// isNetworkError reports an error of the connection rather than an answer of the API
// (the Kubernetes client returns these unnamed): refused, reset, dropped mid-answer,
// an HTTP/2 connection lost or closed, a dial/TLS/read timeout, a network or host
// unreachable. kube-apiserver restarting — an EKS control-plane upgrade — produces
// them for seconds to minutes. A context that ended (the task's own deadline or an
// abort) is not one: it keeps its own meaning (States.Timeout, a stop).
func isNetworkError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var dns *net.DNSError
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		utilnet.IsHTTP2ConnectionLost(err), utilnet.IsTimeout(err),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &dns):
		return dns.IsTimeout || dns.IsTemporary
	}
	// The HTTP/2 transports (x/net's, net/http's) word a GOAWAY-closed connection
	// "http2 server sent GOAWAY" or "http2: server sent GOAWAY"; no stable type.
	return strings.Contains(err.Error(), "server sent GOAWAY")
}
