package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/trigger"
)

// AnnotationRecycle on a Node asks serve to recycle it: "requested" (the serve
// defaults) or a JSON object of request options ({"maxWait": "2h", "onTimeout":
// "evict"}). Serve replaces the value with the execution id once the execution is
// durably recorded, and removes the annotation when the execution ends.
const AnnotationRecycle = "recycler.io/recycle"

// ReasonRefused is the Event reason on a Node whose annotation was not acted on.
const ReasonRefused = "RecyclerRefused"

// AnnotationRequested is the value that asks for a recycle with the defaults.
const AnnotationRequested = "requested"

// onNode is the node informer's handler: it runs on the informer's goroutine, so it
// only decides and hands real work to a goroutine of its own.
func (l *leader) onNode(n *corev1.Node) {
	v, ok := n.Annotations[AnnotationRecycle]
	if !ok || n.DeletionTimestamp != nil {
		return
	}
	l.mu.Lock()
	if l.annotating == nil {
		l.annotating = map[string]bool{}
	}
	if l.annotating[n.Name] {
		l.mu.Unlock()
		return
	}
	l.annotating[n.Name] = true
	l.mu.Unlock()
	go func() {
		defer func() {
			l.mu.Lock()
			delete(l.annotating, n.Name)
			l.mu.Unlock()
		}()
		l.annotated(l.ctx, n, v)
	}()
}

func isRequest(v string) bool {
	return v == AnnotationRequested || strings.HasPrefix(strings.TrimSpace(v), "{")
}

func (l *leader) annotated(ctx context.Context, n *corev1.Node, v string) {
	if ctx.Err() != nil {
		return
	}
	log := l.o.Log.With("node", n.Name)
	if !isRequest(v) {
		// Our own value: an execution id. Clean up one that ended while no leader ran.
		l.mu.Lock()
		_, mine := l.running[v]
		l.mu.Unlock()
		if mine {
			return
		}
		if ex, err := l.eng.Describe(ctx, v); err == nil && ex.Status.Done() {
			l.clearAnnotation(ctx, n.Name, v)
		}
		return
	}
	pid, err := kube.ParseProviderID(n.Spec.ProviderID)
	if err != nil {
		l.refuseAnnotation(ctx, n, v, fmt.Sprintf("node has no AWS providerID (%v): Recycler only recycles Auto Scaling group members", err))
		return
	}
	if exec, busy := l.busy(n.Name, pid.InstanceID); busy {
		l.follow(ctx, n.Name, exec)
		return
	}
	req, err := annotationRequest(l.o.Defaults, v)
	if err != nil {
		l.refuseAnnotation(ctx, n, v, err.Error())
		return
	}
	req.SetTarget(n.Name)
	eventID := "annotation:" + n.Name + "@" + n.ResourceVersion
	req.Trigger = &recycle.Trigger{Kind: string(trigger.KindAnnotation), EventID: eventID, Reason: "annotation " + AnnotationRecycle + "=" + v, At: l.o.Clock.Now().UTC()}
	if err := req.Validate(); err != nil {
		l.refuseAnnotation(ctx, n, v, err.Error())
		return
	}
	ex, err := l.start(ctx, pid.InstanceID, req, n.Name)
	if already := (*alreadyError)(nil); errors.As(err, &already) {
		// Another's recycle of the node (a person's, another trigger's), or this
		// annotation's own after a crash.
		log.Info("the annotation follows the recycle already in hand", "detail", already.Error())
		l.follow(ctx, n.Name, ex.ID)
		return
	}
	if err != nil {
		log.Error("start recycle from annotation (retried on the next change of the node)", "err", err)
		return
	}
	l.setAnnotation(ctx, n.Name, ex.ID)
}

// follow makes the annotation on node name execution id, which already recycles
// the node, and go with it: at its end if this process drives it, else when a later
// change of the node finds it ended.
func (l *leader) follow(ctx context.Context, node, id string) {
	l.mu.Lock()
	if r, ok := l.running[id]; ok {
		r.annotation = node
		l.running[id] = r
	}
	l.mu.Unlock()
	l.setAnnotation(ctx, node, id)
}

// annotationRequest reads the annotation's options over the defaults, strictly:
// unknown fields and the fields a trigger sets itself are refused.
func annotationRequest(defaults recycle.Request, v string) (recycle.Request, error) {
	req := defaults
	if v == AnnotationRequested {
		return req, nil
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &keys); err != nil {
		return req, fmt.Errorf("%s is neither %q nor a JSON object of options: %w", AnnotationRecycle, AnnotationRequested, err)
	}
	for _, k := range []string{"node", "instanceId", "lifecycleHook", "trigger"} {
		if _, ok := keys[k]; ok {
			return req, fmt.Errorf("%s: option %q cannot be set from an annotation", AnnotationRecycle, k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("%s options: %w (e.g. {\"maxWait\": \"2h\", \"onTimeout\": \"evict\", \"selector\": \"app=batch\"})", AnnotationRecycle, err)
	}
	return req, nil
}

// refuseAnnotation says once per value, on the Node, why it was not acted on.
func (l *leader) refuseAnnotation(ctx context.Context, n *corev1.Node, v, reason string) {
	key := n.Name + "\x00" + v
	l.mu.Lock()
	if l.refused == nil {
		l.refused = map[string]bool{}
	}
	seen := l.refused[key]
	l.refused[key] = true
	l.mu.Unlock()
	if seen {
		return
	}
	l.o.Log.Warn("annotation refused, nothing changed", "node", n.Name, "value", v, "reason", reason)
	kube.NewEventRecorder(l.o.Kube, "recycler", l.o.Lease.Identity, l.o.Clock).WithLogger(l.o.Log).Record(ctx, kube.Event{
		Node: n.Name, NodeUID: n.UID, Type: corev1.EventTypeWarning, Reason: ReasonRefused, Action: "Recycle",
		Note: fmt.Sprintf("%s=%s not acted on: %s", AnnotationRecycle, v, reason),
	})
}

func (l *leader) setAnnotation(ctx context.Context, node, value string) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationRecycle: value}}})
	if _, err := l.o.Kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		l.o.Log.Warn("set annotation", "node", node, "err", err)
	}
}

// clearAnnotation removes the annotation if it still names execution id (a person
// may have asked again meanwhile). A Node already deleted (Retire) is fine.
func (l *leader) clearAnnotation(ctx context.Context, node, id string) {
	n, err := l.o.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		l.o.Log.Warn("read node to remove annotation", "node", node, "err", err)
		return
	}
	if n.Annotations[AnnotationRecycle] != id {
		return
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": n.ResourceVersion, "annotations": map[string]any{AnnotationRecycle: nil}}})
	if _, err := l.o.Kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		l.o.Log.Warn("remove annotation", "node", node, "err", err)
	}
}

// annotationNode reads the node name back from an annotation trigger's event id.
func annotationNode(eventID string) string {
	s := strings.TrimPrefix(eventID, "annotation:")
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[:i]
	}
	return ""
}
