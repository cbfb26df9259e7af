package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/client-go/util/retry"
)

// RecycleInfo is what a recycle records on the Node it fenced about what it changed
// elsewhere: enough, with the records on the instances and the group, to roll the
// recycle back from the cluster and the group alone when its state file is lost.
type RecycleInfo struct {
	// Request is the recycle's request as it was started (JSON of recycle.Request).
	Request   json.RawMessage `json:"request,omitempty"`
	Instance  string          `json:"instance,omitempty"`
	Group     string          `json:"group,omitempty"`
	AZ        string          `json:"az,omitempty"`
	Desired   int32           `json:"desired"`   // the group's desired capacity before
	MaxSize   int32           `json:"maxSize"`   // its MaxSize before
	InService int32           `json:"inService"` // its InService instances before
	// Suspended are the group's suspended processes before (what is suspended
	// now and not here, a surge of ours suspended: the group's records say which).
	Suspended []string `json:"suspended,omitempty"`
	// SurgedAt: when the surge was asked for (nil: no surge happened).
	SurgedAt *time.Time `json:"surgedAt,omitempty"`
	// Replacement and its Node, once the recycle found them.
	Replacement     string `json:"replacement,omitempty"`
	ReplacementNode string `json:"replacementNode,omitempty"`
}

// NoteFence updates the RecycleInfo on a node fenced by executionID. A node that
// is not fenced gives an error (nothing to note on); one fenced by another
// execution a *NodeHeldError. Conflicting writers are retried.
func (c *Client) NoteFence(ctx context.Context, node, executionID string, update func(*RecycleInfo)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.NodeByName(ctx, node)
		if err != nil {
			return err
		}
		rec, ok, err := fenceRecord(n)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("node %s carries no %s annotation: fence it first", node, AnnotationFenced)
		case rec.ExecutionID != executionID:
			return &NodeHeldError{Node: node, HeldBy: rec.ExecutionID, Since: rec.At, ExecutionID: executionID}
		}
		if rec.Recycle == nil {
			rec.Recycle = &RecycleInfo{}
		}
		before, _ := json.Marshal(rec.Recycle)
		update(rec.Recycle)
		if after, _ := json.Marshal(rec.Recycle); string(after) == string(before) {
			return nil
		}
		return c.patchNode(ctx, n, nil, nil, &rec)
	})
	if err != nil {
		return fmt.Errorf("record on node %s: %w", node, err)
	}
	return nil
}
