package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// Workload is a controller whose pods ran on a drained node, with its
// availability at one moment: recorded before the drain, it is what the
// moved-workloads check compares with.
type Workload struct {
	Kind      string `json:"kind"` // Deployment, StatefulSet or ReplicaSet (one without a Deployment)
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Desired   int32  `json:"desired"`
	Available int32  `json:"available"`
}

func (w Workload) String() string { return w.Kind + " " + w.Namespace + "/" + w.Name }

// WorkloadStatus says whether the controllers of moved pods are back to the
// availability they had before the drain.
type WorkloadStatus struct {
	Ready     bool
	NotReady  []string // e.g. "Deployment ns/web: 2 of 3 replicas available (3 before the drain)"
	Unchecked []string // pods with no controller Recycler can check (bare pods, Jobs, custom kinds)
}

// workloadState is one controller as read now.
type workloadState struct {
	gen, observed      int64
	desired, available int32
	deployment         string // for a ReplicaSet: the Deployment that controls it
}

// WorkloadsOf returns the controllers of pods with their availability now — a
// ReplicaSet is followed to its Deployment — each once. Pods without a
// controller Recycler can judge (bare pods, Jobs, custom kinds) are listed in
// unchecked; a controller that no longer exists is left out.
func (c *Client) WorkloadsOf(ctx context.Context, pods []Pod) ([]Workload, []string, error) {
	var out []Workload
	var unchecked []string
	seen := map[string]bool{}
	for _, p := range pods {
		if p.Owner == nil {
			unchecked = append(unchecked, "pod "+p.String()+" has no controller")
			continue
		}
		kind, name := p.Owner.Kind, p.Owner.Name
		if !checkable(kind) {
			if key := kind + " " + p.Namespace + "/" + name; !seen[key] {
				seen[key] = true
				unchecked = append(unchecked, key)
			}
			continue
		}
		st, found, err := c.readWorkload(ctx, kind, p.Namespace, name)
		if err != nil {
			return nil, nil, err
		}
		if found && st.deployment != "" {
			kind, name = "Deployment", st.deployment
			if st, found, err = c.readWorkload(ctx, kind, p.Namespace, name); err != nil {
				return nil, nil, err
			}
		}
		w := Workload{Kind: kind, Namespace: p.Namespace, Name: name, Desired: st.desired, Available: st.available}
		if !found || seen[w.String()] {
			continue
		}
		seen[w.String()] = true
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Workload) int { return strings.Compare(a.String(), b.String()) })
	slices.Sort(unchecked)
	return out, unchecked, nil
}

func checkable(kind string) bool {
	return kind == "Deployment" || kind == "StatefulSet" || kind == "ReplicaSet"
}

// WorkloadsReady checks that every workload of before is back to the
// availability it had then: its controller has observed its latest generation
// and has at least min(desired now, available before) replicas available. So a
// workload already degraded before the drain is not held against it, and one
// scaled meanwhile is judged by its new size. A workload deleted meanwhile is
// done.
func (c *Client) WorkloadsReady(ctx context.Context, before []Workload) (WorkloadStatus, error) {
	st, _, err := c.workloadsReady(ctx, before)
	return st, err
}

// workloadsReady is WorkloadsReady, also returning the first workload of before
// that is not ready (-1 when all are), from the same reads.
func (c *Client) workloadsReady(ctx context.Context, before []Workload) (WorkloadStatus, int, error) {
	var st WorkloadStatus
	first := -1
	for i, w := range before {
		msg, err := c.workloadNotReady(ctx, w)
		if err != nil {
			return WorkloadStatus{}, -1, err
		}
		if msg != "" {
			st.NotReady = append(st.NotReady, msg)
			if first < 0 {
				first = i
			}
		}
	}
	slices.Sort(st.NotReady)
	st.Ready = len(st.NotReady) == 0
	return st, first, nil
}

// WaitWorkloadsReady returns as soon as WorkloadsReady says ready, or when ctx
// ends (the last status, no error). It watches one workload at a time — the
// first that is not ready, by name — so it costs one watch, not a poll.
func (c *Client) WaitWorkloadsReady(ctx context.Context, before []Workload) (WorkloadStatus, error) {
	var last WorkloadStatus
	for {
		st, first, err := c.workloadsReady(ctx, before)
		if err != nil {
			return last, ctxOr(ctx, err) // cut by ctx: the last full answer stands
		}
		if st.Ready {
			return st, nil
		}
		last = st
		if err := c.waitWorkload(ctx, before[first]); err != nil {
			return last, err
		}
	}
}

func (c *Client) workloadNotReady(ctx context.Context, w Workload) (string, error) {
	st, found, err := c.readWorkload(ctx, w.Kind, w.Namespace, w.Name)
	if err != nil || !found {
		return "", err
	}
	return st.notReady(w), nil
}

// notReady says why w is not back, or "".
func (s workloadState) notReady(w Workload) string {
	if s.observed < s.gen {
		return fmt.Sprintf("%s: controller has not yet observed generation %d", w, s.gen)
	}
	if want := min(s.desired, w.Available); s.available < want {
		return fmt.Sprintf("%s: %d of %d replicas available (%d before the drain)", w, s.available, s.desired, w.Available)
	}
	return ""
}

func (c *Client) readWorkload(ctx context.Context, kind, ns, name string) (workloadState, bool, error) {
	apps := c.cs.AppsV1()
	var (
		st  workloadState
		err error
	)
	switch kind {
	case "Deployment":
		var d *appsv1.Deployment
		if d, err = apps.Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			st = deploymentState(d)
		}
	case "StatefulSet":
		var s *appsv1.StatefulSet
		if s, err = apps.StatefulSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			st = statefulSetState(s)
		}
	case "ReplicaSet":
		var rs *appsv1.ReplicaSet
		if rs, err = apps.ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			st = replicaSetState(rs)
		}
	default:
		return st, false, fmt.Errorf("workload kind %s cannot be checked", kind)
	}
	if apierrors.IsNotFound(err) {
		return st, false, nil // replaced (a rollout) or deleted: nothing to wait for
	}
	if err != nil {
		return st, false, fmt.Errorf("get %s %s/%s: %w", strings.ToLower(kind), ns, name, err)
	}
	return st, true, nil
}

func deploymentState(d *appsv1.Deployment) workloadState {
	return workloadState{gen: d.Generation, observed: d.Status.ObservedGeneration, desired: replicas(d.Spec.Replicas), available: d.Status.AvailableReplicas}
}

func statefulSetState(s *appsv1.StatefulSet) workloadState {
	return workloadState{gen: s.Generation, observed: s.Status.ObservedGeneration, desired: replicas(s.Spec.Replicas), available: s.Status.AvailableReplicas}
}

func replicaSetState(rs *appsv1.ReplicaSet) workloadState {
	st := workloadState{gen: rs.Generation, observed: rs.Status.ObservedGeneration, desired: replicas(rs.Spec.Replicas), available: rs.Status.AvailableReplicas}
	if owner := metav1.GetControllerOf(rs); owner != nil && owner.Kind == "Deployment" {
		st.deployment = owner.Name
	}
	return st
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// waitWorkload watches w by name until it is ready or gone, or ctx ends.
func (c *Client) waitWorkload(ctx context.Context, w Workload) error {
	apps := c.cs.AppsV1()
	byName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", w.Name).String()}
	var cur *workloadState // nil: gone
	loop := watchLoop{
		list: func(ctx context.Context) (string, error) {
			st, found, err := c.readWorkload(ctx, w.Kind, w.Namespace, w.Name)
			if err != nil {
				return "", err
			}
			cur = nil
			if found {
				cur = &st
			}
			// Watch from "now": the read above is newer than any event before it.
			return "", nil
		},
		watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			opts := byName
			opts.ResourceVersion, opts.AllowWatchBookmarks = rv, true
			switch w.Kind {
			case "Deployment":
				return apps.Deployments(w.Namespace).Watch(ctx, opts)
			case "StatefulSet":
				return apps.StatefulSets(w.Namespace).Watch(ctx, opts)
			default:
				return apps.ReplicaSets(w.Namespace).Watch(ctx, opts)
			}
		},
		apply: func(ev watch.Event) {
			if ev.Type == watch.Deleted {
				cur = nil
				return
			}
			var st workloadState
			switch o := ev.Object.(type) {
			case *appsv1.Deployment:
				st = deploymentState(o)
			case *appsv1.StatefulSet:
				st = statefulSetState(o)
			case *appsv1.ReplicaSet:
				st = replicaSetState(o)
			default:
				return
			}
			cur = &st
		},
		done: func() bool { return cur == nil || cur.notReady(w) == "" },
	}
	if _, _, err := loop.run(ctx, ""); err != nil {
		return fmt.Errorf("watch %s: %w", w, err)
	}
	return nil
}
