package kube

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/recycler/recycler/internal/cloud"
)

// ResolveNode finds a Node from what a user typed: a node name, an EC2 instance
// ID (i-…) or a provider ID (aws:///<az>/<instance-id>). Malformed input gets a
// typed error and no API call.
func (c *Client) ResolveNode(ctx context.Context, ref string) (*corev1.Node, error) {
	switch {
	case strings.Contains(ref, "://"):
		pid, err := ParseProviderID(ref)
		if err != nil {
			return nil, err
		}
		return c.NodeByInstanceID(ctx, pid.InstanceID)
	case cloud.IsInstanceID(ref):
		n, err := c.NodeByInstanceID(ctx, ref)
		if err == nil {
			return n, nil
		}
		// Some clusters name nodes after their instance.
		if byName, nerr := c.NodeByName(ctx, ref); nerr == nil {
			return byName, nil
		}
		return nil, err
	default:
		return c.NodeByName(ctx, ref)
	}
}

// NodeByName gets a Node; a missing node is a *NodeNotFoundError.
func (c *Client) NodeByName(ctx context.Context, name string) (*corev1.Node, error) {
	if err := validateNodeName(name); err != nil {
		return nil, err
	}
	n, err := c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, &NodeNotFoundError{Name: name}
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	c.rememberNode(n.Name, n.UID)
	return n, nil
}

// NodeByInstanceID finds the Node whose spec.providerID names instanceID.
//
// There is no field selector for spec.providerID. A remembered name is tried
// first (one GET, checked against the providerID); on a miss, one LIST with
// resourceVersion=0 is served from the API server's watch cache (no etcd read)
// and refreshes the whole instance→node index, so resolving many instances
// costs one list, not one per call.
func (c *Client) NodeByInstanceID(ctx context.Context, instanceID string) (*corev1.Node, error) {
	if err := ValidateInstanceID(instanceID); err != nil {
		return nil, err
	}
	c.mu.Lock()
	hints := []string{c.byID[instanceID]}
	lookup := c.lookup
	c.mu.Unlock()
	if lookup != nil {
		// A node cache (NodeCache) knows the name without a request; still verified by a GET.
		if name := lookup(instanceID); name != hints[0] {
			hints = append(hints, name)
		}
	}
	for _, hint := range hints {
		if hint == "" {
			continue
		}
		n, err := c.cs.CoreV1().Nodes().Get(ctx, hint, metav1.GetOptions{})
		if err == nil && instanceOf(n) == instanceID {
			c.rememberNode(n.Name, n.UID)
			return n, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get node %s for instance %s: %w", hint, instanceID, err)
		}
	}
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("list nodes to find instance %s: %w", instanceID, err)
	}
	var found []*corev1.Node
	index := make(map[string]string, len(list.Items))
	for i := range list.Items {
		n := &list.Items[i]
		id := instanceOf(n)
		if id == "" {
			continue
		}
		index[id] = n.Name
		if id == instanceID {
			found = append(found, n)
		}
	}
	c.mu.Lock()
	c.byID = index
	c.mu.Unlock()
	switch len(found) {
	case 0:
		return nil, &NodeNotFoundError{InstanceID: instanceID}
	case 1:
		c.rememberNode(found[0].Name, found[0].UID)
		return found[0], nil
	default:
		names := make([]string, len(found))
		for i, n := range found {
			names[i] = n.Name
		}
		return nil, fmt.Errorf("instance %s is the providerID of %d nodes (%s): delete the stale Node objects: %w", instanceID, len(found), strings.Join(names, ", "), ErrAmbiguousInstance)
	}
}

// InstanceID returns the EC2 instance ID in the node's spec.providerID.
func InstanceID(n *corev1.Node) (string, error) {
	pid, err := ParseProviderID(n.Spec.ProviderID)
	if err != nil {
		return "", fmt.Errorf("node %s: %w", n.Name, err)
	}
	return pid.InstanceID, nil
}

func instanceOf(n *corev1.Node) string {
	pid, err := ParseProviderID(n.Spec.ProviderID)
	if err != nil {
		return ""
	}
	return pid.InstanceID
}

func validateNodeName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("%w %q: %s", ErrInvalidNodeName, name, strings.Join(errs, "; "))
	}
	return nil
}
