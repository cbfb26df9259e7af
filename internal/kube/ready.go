package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
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
		match = func(n *corev1.Node) bool {
			if instanceOf(n) == ref {
				// The watch found the instance's node: the next lookup by instance (NodeReady,
				// ResolveNode) is one GET instead of a LIST of every node.
				c.mu.Lock()
				c.byID[ref] = n.Name
				c.mu.Unlock()
				return true
			}
			return n.Name == ref
		}
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
