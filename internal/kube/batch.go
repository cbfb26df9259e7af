package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// A rollout may cordon a whole batch of nodes before their recycles start
// (--fence-batch), so that pods evicted from the first node of a batch do not land on
// the next one. That cordon belongs to the rollout, not to any recycle: it is
// recorded in its own annotation, and only the rollout lifts it.

// AnnotationBatchCordon records, as JSON BatchCordon, a rollout's up-front cordon.
const AnnotationBatchCordon = "recycler.io/batch-cordon"

// BatchCordon is the content of the recycler.io/batch-cordon annotation.
type BatchCordon struct {
	Rollout  string    `json:"rollout"`
	Cordoned bool      `json:"cordoned"` // the rollout flipped spec.unschedulable (it was false)
	At       time.Time `json:"at"`
}

// Nodes lists the cluster's Nodes matching a label selector ("" = all), from the API
// server's watch cache.
func (c *Client) Nodes(ctx context.Context, selector string) ([]corev1.Node, error) {
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return list.Items, nil
}

// FenceOf returns the recycle fence recorded on n, if any.
func FenceOf(n *corev1.Node) (FenceRecord, bool) {
	rec, ok, err := fenceRecord(n)
	return rec, ok && err == nil
}

// BatchCordonOf returns the rollout cordon recorded on n, if any.
func BatchCordonOf(n *corev1.Node) (BatchCordon, bool) {
	raw, ok := n.Annotations[AnnotationBatchCordon]
	if !ok {
		return BatchCordon{}, false
	}
	var bc BatchCordon
	if json.Unmarshal([]byte(raw), &bc) != nil || bc.Rollout == "" {
		return BatchCordon{}, false
	}
	return bc, true
}

// CordonForBatch cordons node on behalf of rollout and records whether the cordon is
// the rollout's (a cordon that was there already is not). Idempotent; a node already
// cordoned for another rollout is left as it is and reported as held.
func (c *Client) CordonForBatch(ctx context.Context, node, rollout string) error {
	return c.batchPatch(ctx, node, func(n *corev1.Node) (map[string]any, bool, error) {
		if bc, ok := BatchCordonOf(n); ok {
			if bc.Rollout != rollout {
				return nil, false, &NodeHeldError{Node: node, HeldBy: bc.Rollout, Since: bc.At, ExecutionID: rollout}
			}
			return nil, false, nil
		}
		rec := BatchCordon{Rollout: rollout, Cordoned: !n.Spec.Unschedulable, At: c.clock.Now().UTC()}
		b, _ := json.Marshal(rec)
		patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationBatchCordon: string(b)}}}
		if rec.Cordoned {
			patch["spec"] = map[string]any{"unschedulable": true}
		}
		return patch, true, nil
	})
}

// UncordonForBatch lifts rollout's cordon from node: the annotation goes, and the
// cordon too if the rollout set it. A node without the rollout's record, or gone, is
// done.
func (c *Client) UncordonForBatch(ctx context.Context, node, rollout string) error {
	return c.batchPatch(ctx, node, func(n *corev1.Node) (map[string]any, bool, error) {
		bc, ok := BatchCordonOf(n)
		if !ok || bc.Rollout != rollout {
			return nil, false, nil
		}
		patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationBatchCordon: nil}}}
		if bc.Cordoned {
			patch["spec"] = map[string]any{"unschedulable": false}
		}
		return patch, true, nil
	})
}

// batchPatch reads the node, lets change decide, and applies its merge patch with the
// read resourceVersion as precondition (a conflict re-reads and decides again).
func (c *Client) batchPatch(ctx context.Context, node string, change func(*corev1.Node) (map[string]any, bool, error)) error {
	if err := validateNodeName(node); err != nil {
		return err
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		patch, do, err := change(n)
		if err != nil || !do {
			return err
		}
		patch["metadata"].(map[string]any)["resourceVersion"] = n.ResourceVersion
		body, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		_, err = c.cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body, metav1.PatchOptions{})
		return err
	})
	var held *NodeHeldError
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case errors.As(err, &held):
		return err
	}
	return fmt.Errorf("batch cordon of node %s: %w", node, err)
}
