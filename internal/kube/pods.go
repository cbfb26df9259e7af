package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
)

// PodSelector says which pods are *selected*: waited for until they finish,
// never evicted. Both parts are optional: a label selector alone matches in
// every namespace, namespaces alone match every pod in them, and neither
// selects nothing. The zero value selects nothing.
type PodSelector struct {
	selector   labels.Selector // nil: no label criterion
	namespaces []string        // empty: every namespace
}

// NewPodSelector validates a label selector ("" = none) and namespace names.
// Bad input is a *SelectorError.
func NewPodSelector(selector string, namespaces []string) (PodSelector, error) {
	var s PodSelector
	if strings.TrimSpace(selector) != "" {
		sel, err := labels.Parse(selector)
		if err != nil {
			return PodSelector{}, &SelectorError{Field: "selector", Value: selector, Reason: err.Error() + " (use Kubernetes label-selector syntax, e.g. app=airflow,tier in (worker))"}
		}
		s.selector = sel
	}
	for _, ns := range namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return PodSelector{}, &SelectorError{Field: "namespace", Value: ns, Reason: strings.Join(errs, "; ")}
		}
		if !slices.Contains(s.namespaces, ns) {
			s.namespaces = append(s.namespaces, ns)
		}
	}
	return s, nil
}

// Empty reports whether the selector selects nothing.
func (s PodSelector) Empty() bool { return s.selector == nil && len(s.namespaces) == 0 }

// String describes the selector for messages.
func (s PodSelector) String() string {
	if s.Empty() {
		return "no pods"
	}
	sel := "all pods"
	if s.selector != nil {
		sel = "pods matching " + s.selector.String()
	}
	if len(s.namespaces) == 0 {
		return sel + " in every namespace"
	}
	return sel + " in namespaces " + strings.Join(s.namespaces, ", ")
}

// Matches reports whether pod is selected (before ignoring DaemonSet, mirror and finished pods).
func (s PodSelector) Matches(pod *corev1.Pod) bool {
	if s.Empty() {
		return false
	}
	if len(s.namespaces) > 0 && !slices.Contains(s.namespaces, pod.Namespace) {
		return false
	}
	return s.selector == nil || s.selector.Matches(labels.Set(pod.Labels))
}

// Class is how a recycle treats a pod on the old node.
type Class string

const (
	Selected  Class = "selected"  // waited for until it finishes; never evicted (the selector's pods, and those annotated do-not-disrupt)
	Evictable Class = "evictable" // evicted through the Eviction API
	Ignored   Class = "ignored"   // DaemonSet, mirror (static) or finished: never counted
)

// Pod is a classified pod; JSON-serialisable so an engine can keep it.
type Pod struct {
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	UID         types.UID `json:"uid"`
	Node        string    `json:"node"`
	Class       Class     `json:"class"`
	Why         string    `json:"why,omitempty"`         // Ignored: DaemonSet, mirror, Succeeded, Failed; Selected without matching the selector: the annotation that keeps it
	Terminating bool      `json:"terminating,omitempty"` // deletion requested, still counted as remaining
	// DeleteAt is the pod's deletionTimestamp: when its grace period ends (set while Terminating).
	DeleteAt time.Time `json:"deleteAt,omitzero"`
	Owner    *Owner    `json:"owner,omitempty"` // the controller, if any
	// GracePeriodSeconds is the pod's terminationGracePeriodSeconds (default 30).
	GracePeriodSeconds int64 `json:"gracePeriodSeconds"`
	// Started is when the kubelet started the pod (zero if not yet): a drain shows
	// how long the pods it waits for have been running.
	Started time.Time `json:"started,omitzero"`
}

// Owner is a pod's controlling owner.
type Owner struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// Unmanaged reports whether no controller would recreate the pod once it is
// evicted (kubectl drain refuses such pods unless told --force).
func (p Pod) Unmanaged() bool { return p.Owner == nil && p.Class != Ignored }

// Annotations by which other tools say "do not disrupt this pod". A drain treats
// such a pod like a selected one: waited for until the deadline, never evicted before.
const (
	AnnotationDoNotDisrupt = "karpenter.sh/do-not-disrupt"                    // "true"
	AnnotationSafeToEvict  = "cluster-autoscaler.kubernetes.io/safe-to-evict" // "false"
)

// keptBy names the annotation that asks for pod to be left alone, or "".
func keptBy(pod *corev1.Pod) string {
	switch {
	case pod.Annotations[AnnotationDoNotDisrupt] == "true":
		return AnnotationDoNotDisrupt + "=true"
	case pod.Annotations[AnnotationSafeToEvict] == "false":
		return AnnotationSafeToEvict + "=false"
	}
	return ""
}

// PodSet is the classified pods on a node at ResourceVersion.
type PodSet struct {
	Node      string `json:"node"`
	Selected  []Pod  `json:"selected"`
	Evictable []Pod  `json:"evictable"`
	Ignored   []Pod  `json:"ignored"`
	// ResourceVersion of the pod list this set reflects; WaitPodsChange
	// continues from it (an expired one is re-listed).
	ResourceVersion string `json:"resourceVersion"`
}

// Remaining is the number of live pods still on the node (selected + evictable,
// terminating ones included).
func (s PodSet) Remaining() int { return len(s.Selected) + len(s.Evictable) }

// Terminating returns the remaining pods whose deletion is under way.
func (s PodSet) Terminating() []Pod {
	var out []Pod
	for _, p := range append(slices.Clone(s.Selected), s.Evictable...) {
		if p.Terminating {
			out = append(out, p)
		}
	}
	return out
}

// Classify classifies one pod.
func Classify(pod *corev1.Pod, sel PodSelector) Pod {
	p := Pod{
		Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Node: pod.Spec.NodeName,
		Terminating:        pod.DeletionTimestamp != nil,
		GracePeriodSeconds: corev1.DefaultTerminationGracePeriodSeconds,
	}
	if pod.DeletionTimestamp != nil {
		p.DeleteAt = pod.DeletionTimestamp.Time
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		p.GracePeriodSeconds = *g
	}
	if pod.Status.StartTime != nil {
		p.Started = pod.Status.StartTime.Time
	}
	if ref := metav1.GetControllerOf(pod); ref != nil {
		p.Owner = &Owner{Kind: ref.Kind, Name: ref.Name}
	}
	switch {
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		p.Class, p.Why = Ignored, string(pod.Status.Phase)
	case pod.Annotations[corev1.MirrorPodAnnotationKey] != "":
		p.Class, p.Why = Ignored, "mirror"
	case p.Owner != nil && p.Owner.Kind == "DaemonSet":
		p.Class, p.Why = Ignored, "DaemonSet"
	case sel.Matches(pod):
		p.Class = Selected
	case keptBy(pod) != "":
		p.Class, p.Why = Selected, keptBy(pod)
	default:
		p.Class = Evictable
	}
	return p
}

func nodeFieldSelector(node string) string {
	return fields.OneTermEqualSelector("spec.nodeName", node).String()
}

// PodsOnNode lists and classifies the pods bound to node (server-side field
// selector spec.nodeName, one list over all namespaces).
func (c *Client) PodsOnNode(ctx context.Context, node string, sel PodSelector) (PodSet, error) {
	state, rv, err := c.listPods(ctx, node, sel)
	if err != nil {
		return PodSet{}, err
	}
	return podSet(node, state, rv), nil
}

func (c *Client) listPods(ctx context.Context, node string, sel PodSelector) (map[types.UID]Pod, string, error) {
	list, err := c.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: nodeFieldSelector(node)})
	if err != nil {
		return nil, "", fmt.Errorf("list pods on node %s: %w", node, err)
	}
	state := make(map[types.UID]Pod, len(list.Items))
	for i := range list.Items {
		p := Classify(&list.Items[i], sel)
		state[p.UID] = p
	}
	return state, list.ResourceVersion, nil
}

func podSet(node string, state map[types.UID]Pod, rv string) PodSet {
	s := PodSet{Node: node, ResourceVersion: rv}
	for _, p := range state {
		switch p.Class {
		case Selected:
			s.Selected = append(s.Selected, p)
		case Evictable:
			s.Evictable = append(s.Evictable, p)
		default:
			s.Ignored = append(s.Ignored, p)
		}
	}
	for _, l := range [][]Pod{s.Selected, s.Evictable, s.Ignored} {
		slices.SortFunc(l, func(a, b Pod) int { return strings.Compare(a.String(), b.String()) })
	}
	return s
}

// remainingKey identifies the set of remaining pods (and their class).
func remainingKey(s PodSet) string {
	keys := make([]string, 0, s.Remaining())
	for _, p := range s.Selected {
		keys = append(keys, "s:"+string(p.UID))
	}
	for _, p := range s.Evictable {
		keys = append(keys, "e:"+string(p.UID))
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// WaitPodsChange returns as soon as the set of remaining (selected and
// evictable) pods on node differs from prev, or when ctx ends (changed false,
// no error: "not yet"). It uses one watch on pods with field selector
// spec.nodeName, starting from prev.ResourceVersion when prev has one (no list
// at all) and re-listing only when that version has expired (410 Gone).
// Pass a zero PodSet to get the current set at once; pass the same sel that
// produced prev (pods are reclassified only when they change).
func (c *Client) WaitPodsChange(ctx context.Context, node string, sel PodSelector, prev PodSet) (cur PodSet, changed bool, err error) {
	want := remainingKey(prev)
	state := map[types.UID]Pod{}
	rv := ""
	if prev.Node == node && prev.ResourceVersion != "" {
		for _, l := range [][]Pod{prev.Selected, prev.Evictable, prev.Ignored} {
			for _, p := range l {
				state[p.UID] = p
			}
		}
		rv = prev.ResourceVersion
	}
	loop := watchLoop{
		list: func(ctx context.Context) (string, error) {
			s, v, err := c.listPods(ctx, node, sel)
			if err != nil {
				return "", err
			}
			state = s
			return v, nil
		},
		watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			return c.cs.CoreV1().Pods(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{
				FieldSelector: nodeFieldSelector(node), ResourceVersion: rv, AllowWatchBookmarks: true,
			})
		},
		apply: func(ev watch.Event) {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return
			}
			if ev.Type == watch.Deleted {
				delete(state, pod.UID)
				return
			}
			state[pod.UID] = Classify(pod, sel)
		},
		done: func() bool { return remainingKey(podSet(node, state, "")) != want },
	}
	changed, lastRV, err := loop.run(ctx, rv)
	if err != nil {
		return PodSet{}, false, fmt.Errorf("watch pods on node %s: %w", node, err)
	}
	return podSet(node, state, lastRV), changed, nil
}
