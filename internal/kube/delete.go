package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonNodeDeleted is recorded when Recycler deletes a retired node's object.
const ReasonNodeDeleted = "RecyclerNodeDeleted"

// DeleteNode deletes the Node object of a retired instance, as the cloud controller
// would once the instance is gone (a stopped instance would otherwise leave it
// behind). A node that is already gone counts as done.
func (c *Client) DeleteNode(ctx context.Context, name string) error {
	c.record(ctx, name, corev1.EventTypeNormal, ReasonNodeDeleted, "Delete", "the instance was retired; deleting its Node object", nil)
	err := c.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}
