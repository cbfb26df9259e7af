package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/recycler/recycler/internal/cloud"
)

// NodeIsReady reports whether n is Ready, not being deleted, and carries every
// required label; otherwise it says why not.
func NodeIsReady(n *corev1.Node, requiredLabels map[string]string) (bool, string) {
	if n.DeletionTimestamp != nil {
		return false, fmt.Sprintf("node %s is being deleted", n.Name)
	}
	ready := false
	reason := "has no Ready condition yet"
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		ready = c.Status == corev1.ConditionTrue
		reason = fmt.Sprintf("Ready=%s", c.Status)
		if c.Reason != "" {
			reason += " (" + c.Reason + ")"
		}
	}
	if !ready {
		return false, fmt.Sprintf("node %s %s", n.Name, reason)
	}
	var missing []string
	for k, v := range requiredLabels {
		if got, ok := n.Labels[k]; !ok || got != v {
			missing = append(missing, k+"="+v)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return false, fmt.Sprintf("node %s is Ready but lacks labels %s", n.Name, strings.Join(missing, ", "))
	}
	return true, fmt.Sprintf("node %s is Ready", n.Name)
}

// NodeReady looks the node up (name, instance ID or provider ID, as
// ResolveNode) and reports NodeIsReady. A node that does not exist (yet) is
// not ready, not an error.
func (c *Client) NodeReady(ctx context.Context, ref string, requiredLabels map[string]string) (bool, string, error) {
	n, err := c.ResolveNode(ctx, ref)
	var nf *NodeNotFoundError
	if errors.As(err, &nf) {
		return false, nf.Error(), nil
	}
	if err != nil {
		return false, "", err
	}
	ready, why := NodeIsReady(n, requiredLabels)
	return ready, why, nil
}

// WaitNodeReady returns as soon as the node named by ref (name, instance ID or
// provider ID) is Ready with the required labels, or when ctx ends (false and
// the last reason, no error). It watches one node by name, or, for an
// instance, the Node list (there is no field selector for spec.providerID),
// so a node that registers during the wait is seen.
func (c *Client) WaitNodeReady(ctx context.Context, ref string, requiredLabels map[string]string) (bool, string, error) {
	var (
		match    func(*corev1.Node) bool
		selector string
	)
	switch {
	case strings.Contains(ref, "://"):
		pid, err := ParseProviderID(ref)
		if err != nil {
			return false, "", err
		}
		match = func(n *corev1.Node) bool { return instanceOf(n) == pid.InstanceID }
	case cloud.IsInstanceID(ref):
		match = func(n *corev1.Node) bool { return instanceOf(n) == ref || n.Name == ref }
	default:
		if err := validateNodeName(ref); err != nil {
			return false, "", err
		}
		match = func(n *corev1.Node) bool { return n.Name == ref }
		selector = fields.OneTermEqualSelector("metadata.name", ref).String()
	}
	nodes := map[string]*corev1.Node{}
	why := fmt.Sprintf("no node for %s has registered", ref)
	loop := watchLoop{
		list: func(ctx context.Context) (string, error) {
			l, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: selector})
			if err != nil {
				return "", err
			}
			nodes = map[string]*corev1.Node{}
			for i := range l.Items {
				if match(&l.Items[i]) {
					nodes[l.Items[i].Name] = &l.Items[i]
				}
			}
			return l.ResourceVersion, nil
		},
		watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			return c.cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
		},
		apply: func(ev watch.Event) {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || !match(n) {
				return
			}
			if ev.Type == watch.Deleted {
				delete(nodes, n.Name)
				return
			}
			nodes[n.Name] = n
		},
		done: func() bool {
			for _, n := range nodes {
				ready, reason := NodeIsReady(n, requiredLabels)
				why = reason
				if ready {
					return true
				}
			}
			return false
		},
	}
	ready, _, err := loop.run(ctx, "")
	if err != nil {
		return false, "", fmt.Errorf("wait for node %s: %w", ref, err)
	}
	return ready, why, nil
}

// WorkloadStatus says whether the controllers of evicted pods are back to full
// availability.
type WorkloadStatus struct {
	Ready     bool
	NotReady  []string // e.g. "Deployment ns/web: 2 of 3 replicas available"
	Unchecked []string // pods with no controller Recycler can check (bare pods, Jobs, custom kinds)
}

// WorkloadsReady checks, for pods evicted from the old node, that their
// controllers have all desired replicas available again: the Deployment
// owning a ReplicaSet (or the ReplicaSet itself), or the StatefulSet. Other
// owners are listed as unchecked and do not block.
func (c *Client) WorkloadsReady(ctx context.Context, pods []Pod) (WorkloadStatus, error) {
	var st WorkloadStatus
	seen := map[string]bool{}
	for _, p := range pods {
		if p.Owner == nil {
			st.Unchecked = append(st.Unchecked, "pod "+p.String()+" has no controller")
			continue
		}
		key := p.Namespace + "/" + p.Owner.Kind + "/" + p.Owner.Name
		if seen[key] {
			continue
		}
		seen[key] = true
		msg, err := c.workloadNotReady(ctx, p.Namespace, p.Owner.Kind, p.Owner.Name)
		if err != nil {
			return WorkloadStatus{}, err
		}
		switch {
		case msg == "":
		case strings.HasPrefix(msg, "unchecked: "):
			st.Unchecked = append(st.Unchecked, strings.TrimPrefix(msg, "unchecked: "))
		default:
			st.NotReady = append(st.NotReady, msg)
		}
	}
	slices.Sort(st.NotReady)
	st.Ready = len(st.NotReady) == 0
	return st, nil
}

// workloadNotReady returns "" when ready, else why not ("unchecked: …" for kinds it cannot judge).
func (c *Client) workloadNotReady(ctx context.Context, ns, kind, name string) (string, error) {
	apps := c.cs.AppsV1()
	switch kind {
	case "ReplicaSet":
		rs, err := apps.ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", nil // replaced (a rollout) or deleted: nothing to wait for
		}
		if err != nil {
			return "", fmt.Errorf("get replicaset %s/%s: %w", ns, name, err)
		}
		if owner := metav1.GetControllerOf(rs); owner != nil && owner.Kind == "Deployment" {
			return c.workloadNotReady(ctx, ns, "Deployment", owner.Name)
		}
		return replicasMsg("ReplicaSet", ns, name, rs.Generation, rs.Status.ObservedGeneration, rs.Spec.Replicas, rs.Status.AvailableReplicas), nil
	case "Deployment":
		d, err := apps.Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("get deployment %s/%s: %w", ns, name, err)
		}
		return replicasMsg("Deployment", ns, name, d.Generation, d.Status.ObservedGeneration, d.Spec.Replicas, d.Status.AvailableReplicas), nil
	case "StatefulSet":
		s, err := apps.StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("get statefulset %s/%s: %w", ns, name, err)
		}
		return replicasMsg("StatefulSet", ns, name, s.Generation, s.Status.ObservedGeneration, s.Spec.Replicas, s.Status.AvailableReplicas), nil
	default:
		return fmt.Sprintf("unchecked: %s %s/%s", kind, ns, name), nil
	}
}

func replicasMsg(kind, ns, name string, gen, observed int64, desired *int32, available int32) string {
	want := int32(1)
	if desired != nil {
		want = *desired
	}
	if observed < gen {
		return fmt.Sprintf("%s %s/%s: controller has not yet observed generation %d", kind, ns, name, gen)
	}
	if available < want {
		return fmt.Sprintf("%s %s/%s: %d of %d replicas available", kind, ns, name, available, want)
	}
	return ""
}
