package kube

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonNodeDeleted is recorded when Recycler deletes a retired node's object.
const ReasonNodeDeleted = "RecyclerNodeDeleted"

// DeleteNode deletes the Node object of a retired instance. Only a node that
// Recycler has fenced (it carries the recycler.io/fenced annotation) is
// deleted, with its UID as precondition so a node re-registered under the same
// name is never touched; an absent node counts as deleted.
func (c *Client) DeleteNode(ctx context.Context, name string) error {
	n, err := c.NodeByName(ctx, name)
	if errors.Is(err, ErrNodeNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete node: %w", err)
	}
	rec, ok, err := fenceRecord(n)
	if err != nil {
		return fmt.Errorf("delete node: %w", err)
	}
	if !ok {
		return fmt.Errorf("delete node %s: %w", name, ErrNotFenced)
	}
	uid := n.UID
	err = c.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case err == nil:
		c.record(ctx, name, corev1.EventTypeNormal, ReasonNodeDeleted, "DeleteNode",
			fmt.Sprintf("Recycler execution %s deleted the Node object of the retired instance", rec.ExecutionID), nil)
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or a new node with this name: not ours to delete
	default:
		return fmt.Errorf("delete node %s: %w", name, err)
	}
}
