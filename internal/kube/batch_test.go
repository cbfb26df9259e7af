package kube_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

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

func TestNodeCacheFollowsTheCluster(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs, lists := countingClient(t, env)
	c := kube.New(cs)
	nc := c.NewNodeCache()
	defer nc.Close()
	id := instanceID(t)
	n := newNode(t, env, "cached", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + id, Labels: map[string]string{"fleet-test": "yes"}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := nc.Nodes(ctx, "fleet-test=yes")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].Name == n.Name {
			if len(got[0].ManagedFields) != 0 {
				t.Error("cached nodes keep their managedFields")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache never showed node %s: %v", n.Name, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The client behind the cache finds the node by instance from the cache's index.
	before := lists.Load()
	if got, err := c.NodeByInstanceID(ctx, id); err != nil || got.Name != n.Name {
		t.Fatalf("NodeByInstanceID: %v %v", got, err)
	}
	if d := lists.Load() - before; d != 0 {
		t.Errorf("NodeByInstanceID with a node cache listed the nodes %d time(s)", d)
	}
	if err := nc.CordonForBatch(ctx, n.Name, "rollout-c"); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := nc.Nodes(ctx, "fleet-test=yes")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].Spec.Unschedulable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never saw the cordon")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := nc.UncordonForBatch(ctx, n.Name, "rollout-c"); err != nil {
		t.Fatal(err)
	}
}

// A node found by WaitNodeReady for an instance is remembered: looking the instance
// up again (as the recycle does right after) is one GET, not a LIST of every node.
func TestWaitNodeReadyRemembersTheInstancesNode(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs, lists := countingClient(t, env)
	c := kube.New(cs)
	id := instanceID(t)
	newNode(t, env, "remembered", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + id})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if ready, why, err := c.WaitNodeReady(wctx, id, nil); err != nil || !ready {
		t.Fatalf("WaitNodeReady: %v %s %v", ready, why, err)
	}
	before := lists.Load()
	if _, err := c.NodeByInstanceID(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load() - before; n != 0 {
		t.Errorf("NodeByInstanceID after WaitNodeReady listed the nodes %d time(s), want a GET", n)
	}
}

// countingClient is a clientset that counts the LISTs of Nodes it sends.
func countingClient(t *testing.T, env *testenv.Env) (kubernetes.Interface, *atomic.Int64) {
	t.Helper()
	lists := &atomic.Int64{}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/nodes") && r.URL.Query().Get("watch") != "true" {
				lists.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, lists
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Waiting for an instance's node from the cache: it returns as soon as the node that
// registers later is Ready, and says why not when the wait ends first.
func TestNodeCacheWaitsForAnInstancesNode(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	nc := kube.New(env.Client).NewNodeCache()
	defer nc.Close()
	id := instanceID(t)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ready, why, err := nc.WaitNodeReady(short, id, nil); err != nil || ready || !strings.Contains(why, "no node for "+id) {
		t.Fatalf("before the node exists: %v %q %v", ready, why, err)
	}
	done := make(chan string, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ready, why, err := nc.WaitNodeReady(wctx, "aws:///us-east-1a/"+id, nil)
		done <- fmt.Sprintf("%v %s %v", ready, why, err)
	}()
	n := newNode(t, env, "later", testenv.NodeSpec{ProviderID: "aws:///us-east-1a/" + id})
	if got := <-done; !strings.HasPrefix(got, "true node "+n.Name+" is Ready") {
		t.Errorf("WaitNodeReady = %s", got)
	}
	if _, _, err := nc.WaitNodeReady(ctx, "Bad_Name", nil); err == nil {
		t.Error("a malformed node name was accepted")
	}
}
