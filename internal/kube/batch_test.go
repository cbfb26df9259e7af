package kube_test

import (
	"context"
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/testenv"
)

// A rollout's up-front cordon and a recycle's fence on the same node: each undoes
// only its own part, so the node ends exactly as it started.
func TestBatchCordonAndFenceUndoOnlyTheirOwn(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	c := kube.New(env.Client)
	get := func(name string) (unschedulable bool, bc kube.BatchCordon, batched bool) {
		t.Helper()
		n, err := env.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bc, batched = kube.BatchCordonOf(n)
		return n.Spec.Unschedulable, bc, batched
	}

	n := newNode(t, env, "free", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + instanceID(t)})
	for range 2 { // idempotent
		if err := c.CordonForBatch(ctx, n.Name, "rollout-a"); err != nil {
			t.Fatal(err)
		}
	}
	if u, bc, ok := get(n.Name); !u || !ok || bc.Rollout != "rollout-a" || !bc.Cordoned {
		t.Fatalf("after the batch cordon: unschedulable=%v record=%+v (%v)", u, bc, ok)
	}
	var held *kube.NodeHeldError
	if err := c.CordonForBatch(ctx, n.Name, "rollout-b"); !errors.As(err, &held) || held.HeldBy != "rollout-a" {
		t.Errorf("another rollout's batch cordon: %v, want NodeHeldError by rollout-a", err)
	}
	// The recycle fences the cordoned node: the cordon is not its own.
	rec, err := c.Fence(ctx, n.Name, "exec-1")
	if err != nil || rec.Cordoned {
		t.Fatalf("fence on a batch-cordoned node: %+v %v, want cordoned=false (not ours)", rec, err)
	}
	if err := c.Unfence(ctx, n.Name, "exec-1"); err != nil {
		t.Fatal(err)
	}
	if u, _, ok := get(n.Name); !u || !ok {
		t.Fatalf("the recycle's rollback lifted the rollout's cordon (unschedulable=%v, record %v)", u, ok)
	}
	if err := c.UncordonForBatch(ctx, n.Name, "rollout-b"); err != nil {
		t.Fatal(err)
	}
	if u, _, ok := get(n.Name); !u || !ok {
		t.Fatal("another rollout lifted rollout-a's cordon")
	}
	for range 2 {
		if err := c.UncordonForBatch(ctx, n.Name, "rollout-a"); err != nil {
			t.Fatal(err)
		}
	}
	if u, _, ok := get(n.Name); u || ok {
		t.Fatalf("after the rollout lifted its cordon: unschedulable=%v, record left=%v", u, ok)
	}

	// A node an admin cordoned first stays cordoned.
	admin := newNode(t, env, "admin", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + instanceID(t), Unschedulable: true})
	if err := c.CordonForBatch(ctx, admin.Name, "rollout-a"); err != nil {
		t.Fatal(err)
	}
	if _, bc, _ := get(admin.Name); bc.Cordoned {
		t.Error("a cordon that was there first was recorded as the rollout's")
	}
	if err := c.UncordonForBatch(ctx, admin.Name, "rollout-a"); err != nil {
		t.Fatal(err)
	}
	if u, _, ok := get(admin.Name); !u || ok {
		t.Errorf("admin's cordon: unschedulable=%v record=%v, want cordoned, no record", u, ok)
	}
	// Gone nodes are done.
	if err := c.UncordonForBatch(ctx, "no-such-node", "rollout-a"); err != nil {
		t.Errorf("uncordon of a missing node: %v", err)
	}
	nodes, err := c.Nodes(ctx, "")
	if err != nil || len(nodes) < 2 {
		t.Errorf("Nodes: %d, %v", len(nodes), err)
	}
}
