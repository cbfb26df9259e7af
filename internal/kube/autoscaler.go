package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AnnotationScaleDownDisabled tells the cluster autoscaler not to remove a node. A
// fresh replacement is nearly empty until the old node's pods arrive: without it the
// autoscaler may scale the replacement down in the middle of a drain.
const AnnotationScaleDownDisabled = "cluster-autoscaler.kubernetes.io/scale-down-disabled"

// ProtectFromScaleDown sets (protect=true) or removes the autoscaler annotation on a
// node. Removing it leaves a value someone else set ("false", or none) alone, and a
// node that is gone counts as done.
func (c *Client) ProtectFromScaleDown(ctx context.Context, node string, protect bool) error {
	n, err := c.NodeByName(ctx, node)
	if err != nil {
		if errors.Is(err, ErrNodeNotFound) {
			return nil
		}
		return err
	}
	var value any // nil removes the key in a merge patch
	switch cur, ok := n.Annotations[AnnotationScaleDownDisabled]; {
	case protect && cur == "true":
		return nil
	case protect:
		value = "true"
	case !ok || cur != "true":
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationScaleDownDisabled: value}}})
	if err != nil {
		return err
	}
	if _, err := c.cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("set %s=%v on node %s: %w", AnnotationScaleDownDisabled, value, node, err)
	}
	return nil
}
