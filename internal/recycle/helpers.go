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

// bound limits one "done yet?" check to checkSeconds on the injected clock, and to
// deadline when it is set, so a check answers "not yet" instead of blocking long.
func (t *Tasks) bound(ctx context.Context, checkSeconds int, deadline time.Time) (context.Context, context.CancelFunc) {
	at := t.Clock.Now().Add(time.Duration(checkSeconds) * time.Second)
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

// notTerminating returns the pods whose deletion has not started: the ones an
// eviction can still be asked for.
func notTerminating(pods []kube.Pod) []kube.Pod {
	var out []kube.Pod
	for _, p := range pods {
		if !p.Terminating {
			out = append(out, p)
		}
	}
	return out
}

func podNames(pods []kube.Pod) []string {
	names := make([]string, 0, min(len(pods), maxListed))
	for _, p := range pods {
		if len(names) == maxListed {
			break
		}
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

// podAges names the pods with how long they have been running, for the progress view.
func podAges(pods []kube.Pod, now time.Time) []string {
	out := podNames(pods)
	for i := range out {
		if started := pods[i].Started; !started.IsZero() {
			out[i] += fmt.Sprintf(" (running %s)", now.Sub(started).Truncate(time.Second))
		}
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func cloneDrain(d *DrainStatus) *DrainStatus {
	c := *d
	c.Evicted = append([]kube.Pod(nil), d.Evicted...)
	c.Blocked = make(map[string]BlockInfo, len(d.Blocked))
	for k, v := range d.Blocked {
		c.Blocked[k] = v
	}
	return &c
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
