package kube

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Event reasons Recycler records on a Node (`kubectl describe node` lists them).
const (
	ReasonFenced          = "RecyclerFenced"
	ReasonUnfenced        = "RecyclerUnfenced"
	ReasonEvicted         = "RecyclerEvicted"
	ReasonEvictionBlocked = "RecyclerEvictionBlocked"
	ReasonForceDeleted    = "RecyclerForceDeleted"
	ReasonExcludedFromLB  = "RecyclerExcludedFromLoadBalancers"
)

// Event is one thing Recycler did to (or on) a Node.
type Event struct {
	Node    string
	NodeUID types.UID
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string // one of the Reason* constants
	Action  string // what was done, e.g. "Fence", "Evict"
	Note    string // human-readable, names pods and budgets
	Pod     *corev1.ObjectReference
}

// Recorder records Events. Recording is best effort: an operation never fails
// because its Event could not be written.
type Recorder interface {
	Record(ctx context.Context, e Event)
}

// EventRecorder writes events.k8s.io/v1 Events regarding the Node (in the
// "default" namespace, where node events live).
type EventRecorder struct {
	cs         kubernetes.Interface
	controller string
	instance   string
	clock      clock.PassiveClock
	log        *slog.Logger
}

// NewEventRecorder returns a recorder reporting as controller "recycler.io/<component>"
// from instance (e.g. the pod name; defaults to the component).
func NewEventRecorder(cs kubernetes.Interface, component, instance string, clk clock.PassiveClock) *EventRecorder {
	if instance == "" {
		instance = component
	}
	return &EventRecorder{cs: cs, controller: "recycler.io/" + component, instance: instance, clock: clk, log: slog.Default()}
}

// WithLogger sets where failures to write an Event are logged.
func (r *EventRecorder) WithLogger(l *slog.Logger) *EventRecorder { r.log = l; return r }

// Record implements Recorder.
func (r *EventRecorder) Record(ctx context.Context, e Event) {
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{GenerateName: e.Node + "-", Namespace: metav1.NamespaceDefault},
		EventTime:           metav1.NewMicroTime(r.clock.Now()),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              e.Action,
		Reason:              e.Reason,
		Type:                e.Type,
		Note:                truncate(e.Note, 1024),
		Regarding:           corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: e.Node, UID: e.NodeUID},
		Related:             e.Pod,
	}
	if _, err := r.cs.EventsV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		r.log.Warn("record event", "node", e.Node, "reason", e.Reason, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// record sends an Event about node, looking up its UID once if needed.
func (c *Client) record(ctx context.Context, node, typ, reason, action, note string, pod *corev1.ObjectReference) {
	if node == "" {
		return // a pod not bound to a node: nothing to describe
	}
	// The operation happened; tell the story even if the caller's context ended.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c.mu.Lock()
	uid := c.nodeUIDs[node]
	c.mu.Unlock()
	if uid == "" {
		if n, err := c.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			uid = n.UID
			c.rememberNode(node, uid)
		}
	}
	c.recorder.Record(ctx, Event{Node: node, NodeUID: uid, Type: typ, Reason: reason, Action: action, Note: note, Pod: pod})
}
