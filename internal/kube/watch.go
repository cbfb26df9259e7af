package kube

import (
	"context"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/watch"
)

// watchLoop keeps local state in step with the API server until done reports
// true or ctx ends: list (when rv is empty), then watch from rv, re-watching
// when the server closes the stream and re-listing when rv has expired (410).
// It returns whether done became true and the last resourceVersion seen;
// ctx ending is not an error.
type watchLoop struct {
	list  func(ctx context.Context) (rv string, err error) // replaces the state
	watch func(ctx context.Context, rv string) (watch.Interface, error)
	apply func(ev watch.Event) // applies one Added/Modified/Deleted event
	done  func() bool
}

func (l watchLoop) run(ctx context.Context, rv string) (bool, string, error) {
	done, err := l.loop(ctx, &rv)
	return done, rv, err
}

func (l watchLoop) loop(ctx context.Context, rvp *string) (bool, error) {
	rv := *rvp
	defer func() { *rvp = rv }()
	relist := func() error {
		var err error
		rv, err = l.list(ctx)
		return err
	}
	if rv == "" {
		if err := relist(); err != nil {
			return false, ctxOr(ctx, err)
		}
	}
	for {
		if l.done() {
			return true, nil
		}
		if ctx.Err() != nil {
			return false, nil
		}
		w, err := l.watch(ctx, rv)
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			if err := relist(); err != nil {
				return false, ctxOr(ctx, err)
			}
			continue
		}
		if err != nil {
			return false, ctxOr(ctx, err)
		}
		expired, err := l.drain(ctx, w, &rv)
		w.Stop()
		if err != nil {
			return false, ctxOr(ctx, err)
		}
		if expired {
			if err := relist(); err != nil {
				return false, ctxOr(ctx, err)
			}
		}
	}
}

// drain consumes one watch stream until done, ctx end, stream end, or an error
// event; expired reports a 410 that needs a re-list.
func (l watchLoop) drain(ctx context.Context, w watch.Interface, rv *string) (expired bool, err error) {
	for {
		if l.done() {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil // server closed the stream: re-watch from rv
			}
			switch ev.Type {
			case watch.Error:
				status := apierrors.FromObject(ev.Object)
				if se, ok := status.(apierrors.APIStatus); ok && se.Status().Code == http.StatusGone {
					return true, nil
				}
				return false, fmt.Errorf("watch: %w", status)
			case watch.Bookmark:
			default:
				l.apply(ev)
			}
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetResourceVersion() != "" {
				*rv = m.GetResourceVersion()
			}
		}
	}
}

// ctxOr hides errors caused by the caller's context ending.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // the point of ctxOr: a watch cut by the caller's ctx ending is no error to that caller
	}
	return err
}
