package testenv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations understood by the embedded kwok stages (kwok/*.yaml).
const (
	// NodeReadyDelayAnnotation delays a Node's NotReady→Ready transition
	// (Go duration such as "5s", or an RFC 3339 time).
	NodeReadyDelayAnnotation = "node-initialize.stage.kwok.x-k8s.io/delay"
	// NodeNeverReadyAnnotation keeps a Node NotReady (a kubelet that never comes up).
	NodeNeverReadyAnnotation = "testenv.recycler.io/never-ready"
	// PodCompleteDelayAnnotation makes a pod exit 0 (phase Succeeded) that
	// long after it became Ready (Go duration such as "30s", or an RFC 3339 time).
	PodCompleteDelayAnnotation = "pod-complete.stage.kwok.x-k8s.io/delay"
	// PodDeleteDelayAnnotation is how long a deleted pod takes to go away
	// (default 500ms); keep it below the pod's grace period.
	PodDeleteDelayAnnotation = "pod-delete.stage.kwok.x-k8s.io/delay"
)

// NodeSpec describes a kwok-managed Node. Zero values get defaults.
type NodeSpec struct {
	Name          string
	ProviderID    string // e.g. aws:///us-east-1a/i-0123456789abcdef0
	Labels        map[string]string
	Annotations   map[string]string
	Taints        []corev1.Taint
	Unschedulable bool
	CPU           string // capacity and allocatable; default "4"
	Memory        string // default "16Gi"
	Pods          int    // default 110
	// ReadyAfter keeps the Node NotReady this long after creation (0: kwok
	// marks it Ready at once).
	ReadyAfter time.Duration
	// NotReady keeps the Node NotReady for good.
	NotReady bool
}

// CreateNode registers a Node that kwok manages like a kubelet would: it is
// created NotReady with the node.kubernetes.io/not-ready:NoSchedule taint,
// kwok turns it Ready (the controller-manager then lifts the taint), renews
// its Lease and runs the pods bound to it. CreateNode does not wait for Ready.
func (e *Env) CreateNode(ctx context.Context, spec NodeSpec) (*corev1.Node, error) {
	node, err := nodeFromSpec(spec)
	if err != nil {
		return nil, err
	}
	created, err := e.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Name, err)
	}
	return created, nil
}

// DeleteNode deletes a Node; a Node that does not exist counts as deleted.
// As in a real cluster, pods still bound to it are removed by the
// controller-manager's pod GC after its 40 s quarantine.
func (e *Env) DeleteNode(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("delete node: empty name")
	}
	err := e.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}

func nodeFromSpec(spec NodeSpec) (*corev1.Node, error) {
	if spec.Name == "" {
		return nil, errors.New("create node: NodeSpec.Name is empty")
	}
	cpu, err := quantity(spec.CPU, "4", "CPU")
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Name, err)
	}
	mem, err := quantity(spec.Memory, "16Gi", "Memory")
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Name, err)
	}
	pods := spec.Pods
	if pods < 0 {
		return nil, fmt.Errorf("create node %s: NodeSpec.Pods is %d, want ≥ 0", spec.Name, pods)
	}
	if pods == 0 {
		pods = 110
	}
	if spec.ReadyAfter < 0 {
		return nil, fmt.Errorf("create node %s: NodeSpec.ReadyAfter is %s, want ≥ 0", spec.Name, spec.ReadyAfter)
	}

	labels := map[string]string{
		corev1.LabelHostname:   spec.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: "amd64",
		"type":                 "kwok",
	}
	maps.Copy(labels, spec.Labels)
	annotations := map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	maps.Copy(annotations, spec.Annotations)
	annotations[KwokNodeAnnotation] = KwokNodeAnnotationValue
	if spec.ReadyAfter > 0 {
		annotations[NodeReadyDelayAnnotation] = spec.ReadyAfter.String()
	}
	if spec.NotReady {
		annotations[NodeNeverReadyAnnotation] = "true"
	}

	// A kubelet registers its Node with this taint; node-lifecycle removes it
	// once the Node is Ready, so nothing lands on a node that is not up yet.
	taints := append([]corev1.Taint(nil), spec.Taints...)
	hasNotReady := false
	for _, t := range taints {
		if t.Key == corev1.TaintNodeNotReady && t.Effect == corev1.TaintEffectNoSchedule {
			hasNotReady = true
		}
	}
	if !hasNotReady {
		taints = append(taints, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})
	}

	res := corev1.ResourceList{
		corev1.ResourceCPU:    cpu,
		corev1.ResourceMemory: mem,
		corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
	}
	now := metav1.Now()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Labels: labels, Annotations: annotations},
		Spec: corev1.NodeSpec{
			ProviderID:    spec.ProviderID,
			Unschedulable: spec.Unschedulable,
			Taints:        taints,
		},
		// Nodes may carry status on create (as kubelets do at registration).
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res.DeepCopy(),
			Conditions: []corev1.NodeCondition{{
				Type:               corev1.NodeReady,
				Status:             corev1.ConditionFalse,
				Reason:             "KubeletNotReady",
				Message:            "kubelet is starting",
				LastHeartbeatTime:  now,
				LastTransitionTime: now,
			}},
		},
	}, nil
}

func quantity(v, def, field string) (resource.Quantity, error) {
	if v == "" {
		v = def
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("NodeSpec.%s %q is not a quantity (e.g. %q): %w", field, v, def, err)
	}
	return q, nil
}
