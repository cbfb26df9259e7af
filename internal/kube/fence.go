package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
)

const (
	// TaintKey is Recycler's NoSchedule taint; its value names the execution.
	TaintKey = "recycler.io/recycling"
	// AnnotationFenced records, as JSON FenceRecord, what Recycler itself set on the node.
	AnnotationFenced = "recycler.io/fenced"
)

// FenceRecord is the content of the recycler.io/fenced annotation: which parts
// of the fence this execution set, so that Unfence removes only those.
type FenceRecord struct {
	ExecutionID string    `json:"executionID"`
	TaintAdded  bool      `json:"taintAdded"` // we added the recycler.io/recycling taint
	Cordoned    bool      `json:"cordoned"`   // we set spec.unschedulable (it was false)
	At          time.Time `json:"at"`         // when the fence was first set
	// LBExcluded: we added the label node.kubernetes.io/exclude-from-external-load-balancers
	// (when the drain started); Unfence removes it. False when it was there before us.
	LBExcluded bool `json:"lbExcluded,omitempty"`
	// Recycle is what the recycle changed elsewhere (records.go), kept beside the
	// fence so a lost state file loses nothing.
	Recycle *RecycleInfo `json:"recycle,omitempty"`
}

// FencedNode is a node carrying Recycler's fence annotation.
type FencedNode struct {
	Node   string
	Record FenceRecord
}

// TaintValue is the value of Recycler's taint for an execution: the ID itself
// when it is a valid label value, else "sha256-" and a prefix of its hash.
func TaintValue(executionID string) string {
	if len(validation.IsValidLabelValue(executionID)) == 0 {
		return executionID
	}
	sum := sha256.Sum256([]byte(executionID))
	return "sha256-" + hex.EncodeToString(sum[:])[:32]
}

// Fence makes node unschedulable for executionID: Recycler's NoSchedule taint
// plus a cordon, recording in an annotation which of the two it set. Calling it
// again for the same execution is a no-op (and re-adds a part someone removed).
// A node fenced by another execution gives a *NodeHeldError and is not changed.
// Concurrent calls are serialised by the node's resourceVersion: exactly one
// execution wins.
func (c *Client) Fence(ctx context.Context, node, executionID string) (FenceRecord, error) {
	if strings.TrimSpace(executionID) == "" {
		return FenceRecord{}, errors.New("fence: empty execution id")
	}
	var rec FenceRecord
	var did []string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		did = nil
		n, err := c.NodeByName(ctx, node)
		if err != nil {
			return err
		}
		rec = FenceRecord{ExecutionID: executionID, At: c.clock.Now().UTC().Truncate(time.Second)}
		if prev, ok, err := fenceRecord(n); err != nil {
			return err
		} else if ok {
			if prev.ExecutionID != executionID {
				return &NodeHeldError{Node: node, HeldBy: prev.ExecutionID, Since: prev.At, ExecutionID: executionID}
			}
			rec = prev
		} else {
			// Taint and annotation always change together, so a taint with our
			// key but no annotation was set by hand: adopt it, the key is ours.
			rec.TaintAdded = true
		}
		spec := map[string]any{}
		taints, changed := withOurTaint(n.Spec.Taints, executionID)
		if changed {
			spec["taints"] = taints
			rec.TaintAdded = true
			did = append(did, "tainted "+TaintKey+"="+TaintValue(executionID)+":NoSchedule")
		}
		if !n.Spec.Unschedulable {
			spec["unschedulable"] = true
			rec.Cordoned = true
			did = append(did, "cordoned")
		}
		if len(did) == 0 {
			return nil // already fenced by us
		}
		return c.patchNode(ctx, n, spec, nil, &rec)
	})
	if err != nil {
		return FenceRecord{}, fmt.Errorf("fence node %s: %w", node, err)
	}
	if len(did) > 0 {
		note := fmt.Sprintf("Recycler execution %s %s", executionID, strings.Join(did, " and "))
		if !rec.Cordoned {
			note += "; the node was already cordoned, that cordon is kept on unfence"
		}
		c.record(ctx, node, corev1.EventTypeNormal, ReasonFenced, "Fence", note, nil)
	}
	return rec, nil
}

// Unfence removes what Fence set for executionID: its taint, and the cordon
// only if Fence set it. An admin's cordon or taints are never touched. A node
// without the annotation is left as is (no-op); one fenced by another execution
// gives a *NodeHeldError. A missing node gives a *NodeNotFoundError (callers
// rolling back may treat it as done).
func (c *Client) Unfence(ctx context.Context, node, executionID string) error {
	var did []string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		did = nil
		n, rec, ok, err := c.ourFence(ctx, node, executionID)
		if err != nil || !ok {
			return err
		}
		spec := map[string]any{}
		if rec.TaintAdded {
			kept := make([]corev1.Taint, 0, len(n.Spec.Taints))
			for _, t := range n.Spec.Taints {
				if t.Key != TaintKey {
					kept = append(kept, t)
				}
			}
			if len(kept) != len(n.Spec.Taints) {
				did = append(did, "removed taint "+TaintKey)
				if len(kept) == 0 {
					spec["taints"] = nil
				} else {
					spec["taints"] = kept
				}
			}
		}
		if rec.Cordoned && n.Spec.Unschedulable {
			spec["unschedulable"] = nil
			did = append(did, "uncordoned")
		}
		var labels map[string]any
		if _, ok := n.Labels[corev1.LabelNodeExcludeBalancers]; ok && rec.LBExcluded {
			labels = map[string]any{corev1.LabelNodeExcludeBalancers: nil}
			did = append(did, "removed label "+corev1.LabelNodeExcludeBalancers)
		}
		did = append(did, "removed annotation "+AnnotationFenced)
		return c.patchNode(ctx, n, spec, labels, nil)
	})
	if err != nil {
		return fmt.Errorf("unfence node %s: %w", node, err)
	}
	if len(did) > 0 {
		c.record(ctx, node, corev1.EventTypeNormal, ReasonUnfenced, "Unfence",
			fmt.Sprintf("Recycler execution %s %s", executionID, strings.Join(did, ", ")), nil)
	}
	return nil
}

// ExcludeFromLoadBalancers labels node node.kubernetes.io/exclude-from-external-load-balancers,
// so service load balancers stop sending it traffic before its pods move. The node
// must be fenced by executionID; the fence record notes that the label is ours (in
// the same patch), so Unfence removes it and nothing else. A label that was already
// there is left alone and not recorded. Calling it again is a no-op.
func (c *Client) ExcludeFromLoadBalancers(ctx context.Context, node, executionID string) error {
	added := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		added = false
		n, rec, ok, err := c.ourFence(ctx, node, executionID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("node %s: %w", node, ErrNotFenced)
		}
		if _, has := n.Labels[corev1.LabelNodeExcludeBalancers]; has {
			return nil // ours already, or someone else's: either way nothing to do
		}
		rec.LBExcluded, added = true, true
		return c.patchNode(ctx, n, nil, map[string]any{corev1.LabelNodeExcludeBalancers: "true"}, &rec)
	})
	if err != nil {
		return fmt.Errorf("exclude node %s from load balancers: %w", node, err)
	}
	if added {
		c.record(ctx, node, corev1.EventTypeNormal, ReasonExcludedFromLB, "ExcludeFromLoadBalancers",
			fmt.Sprintf("Recycler execution %s labelled the node %s before draining it", executionID, corev1.LabelNodeExcludeBalancers), nil)
	}
	return nil
}

// ourFence reads node and its fence record (ok false: none). A record of
// another execution is a *NodeHeldError.
func (c *Client) ourFence(ctx context.Context, node, executionID string) (*corev1.Node, FenceRecord, bool, error) {
	n, err := c.NodeByName(ctx, node)
	if err != nil {
		return nil, FenceRecord{}, false, err
	}
	rec, ok, err := fenceRecord(n)
	if err != nil || !ok {
		return n, rec, false, err
	}
	if rec.ExecutionID != executionID {
		return n, rec, true, &NodeHeldError{Node: node, HeldBy: rec.ExecutionID, Since: rec.At, ExecutionID: executionID}
	}
	return n, rec, true, nil
}

// FencedNodes lists the nodes carrying Recycler's fence annotation (from the API
// server's cache), e.g. to unfence those whose execution is no longer running.
func (c *Client) FencedNodes(ctx context.Context) ([]FencedNode, error) {
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("list fenced nodes: %w", err)
	}
	var out []FencedNode
	for i := range list.Items {
		rec, ok, err := fenceRecord(&list.Items[i])
		if err != nil || !ok {
			continue // a corrupt annotation is reported by Fence/Unfence on that node
		}
		out = append(out, FencedNode{Node: list.Items[i].Name, Record: rec})
	}
	return out, nil
}

func fenceRecord(n *corev1.Node) (FenceRecord, bool, error) {
	raw, ok := n.Annotations[AnnotationFenced]
	if !ok {
		return FenceRecord{}, false, nil
	}
	var rec FenceRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.ExecutionID == "" {
		return FenceRecord{}, false, fmt.Errorf("annotation %s on node %s is not a Recycler fence record (%q); fix or remove it by hand", AnnotationFenced, n.Name, raw)
	}
	return rec, true, nil
}

// withOurTaint returns taints with Recycler's taint for executionID, and whether
// that changed anything. Our key is ours alone: a leftover with another value
// (only possible by hand, since taint and annotation change together) is replaced.
func withOurTaint(taints []corev1.Taint, executionID string) ([]corev1.Taint, bool) {
	want := corev1.Taint{Key: TaintKey, Value: TaintValue(executionID), Effect: corev1.TaintEffectNoSchedule}
	out := make([]corev1.Taint, 0, len(taints)+1)
	found := false
	for _, t := range taints {
		if t.Key == TaintKey && t.Effect == corev1.TaintEffectNoSchedule {
			if found || t.Value != want.Value {
				continue
			}
			found = true
		}
		out = append(out, t)
	}
	if found && len(out) == len(taints) {
		return taints, false
	}
	if !found {
		out = append(out, want)
	}
	return out, true
}

// patchNode applies a JSON merge patch to spec and labels (a nil value removes a
// label) and sets (rec != nil) or removes the fence annotation, with the read
// resourceVersion as precondition: a concurrent writer makes it fail with a
// Conflict, which callers retry.
func (c *Client) patchNode(ctx context.Context, n *corev1.Node, spec, labels map[string]any, rec *FenceRecord) error {
	var ann any
	if rec != nil {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		ann = string(b)
	}
	meta := map[string]any{
		"resourceVersion": n.ResourceVersion,
		"annotations":     map[string]any{AnnotationFenced: ann},
	}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	patch := map[string]any{"metadata": meta}
	if len(spec) > 0 {
		patch["spec"] = spec
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.cs.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, body, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return &NodeNotFoundError{Name: n.Name}
	}
	return err
}
