package kube

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// NodeCache is a Client whose Nodes come from memory: one LIST and one WATCH of all
// Nodes (a client-go informer), kept up to date. For a caller that looks at the whole
// fleet before every step — a rollout's gate before each recycle — a LIST per look
// costs O(fleet) requests and memory each time; the cache costs one copy of the fleet
// (managedFields dropped). Everything else is the Client's.
type NodeCache struct {
	*Client
	once   sync.Once
	stop   chan struct{}
	lister listersv1.NodeLister
	synced cache.InformerSynced

	mu       sync.Mutex
	informer cache.SharedIndexInformer
}

// NewNodeCache wraps c; the informer starts on the first Nodes call. Close stops it.
// From then on c itself finds a node by instance id in the cache's index (verified
// by a GET) instead of listing every node: every recycle of a rollout does that for
// its replacement.
func (c *Client) NewNodeCache() *NodeCache {
	nc := &NodeCache{Client: c, stop: make(chan struct{})}
	c.mu.Lock()
	c.lookup = nc.instanceNode
	c.mu.Unlock()
	return nc
}

const instanceIndex = "instance"

// instanceNode is the cached node name of an instance ("" when the cache has not
// started or synced, or does not know it).
func (nc *NodeCache) instanceNode(id string) string {
	nc.mu.Lock()
	inf := nc.informer
	nc.mu.Unlock()
	if inf == nil || !inf.HasSynced() {
		return ""
	}
	objs, err := inf.GetIndexer().ByIndex(instanceIndex, id)
	if err != nil || len(objs) != 1 {
		return ""
	}
	if n, ok := objs[0].(*corev1.Node); ok {
		return n.Name
	}
	return ""
}

// Nodes lists the cached Nodes matching a label selector ("" = all), after the first
// complete LIST has arrived. They share their maps and slices with the cache (which
// replaces objects, never changes them): read them, do not modify them.
func (nc *NodeCache) Nodes(ctx context.Context, selector string) ([]corev1.Node, error) {
	nc.once.Do(func() {
		f := informers.NewSharedInformerFactoryWithOptions(nc.cs, 0, informers.WithTransform(func(obj any) (any, error) {
			if a, err := meta.Accessor(obj); err == nil {
				a.SetManagedFields(nil)
			}
			return obj, nil
		}))
		inf := f.Core().V1().Nodes()
		_ = inf.Informer().AddIndexers(cache.Indexers{instanceIndex: func(obj any) ([]string, error) {
			if n, ok := obj.(*corev1.Node); ok && instanceOf(n) != "" {
				return []string{instanceOf(n)}, nil
			}
			return nil, nil
		}})
		nc.lister, nc.synced = inf.Lister(), inf.Informer().HasSynced
		nc.mu.Lock()
		nc.informer = inf.Informer()
		nc.mu.Unlock()
		f.Start(nc.stop)
	})
	if !cache.WaitForCacheSync(ctx.Done(), nc.synced) {
		return nil, fmt.Errorf("list nodes: the node cache did not sync: %w", context.Cause(ctx))
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("list nodes: selector %q: %w", selector, err)
	}
	cached, err := nc.lister.List(sel)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]corev1.Node, len(cached))
	for i, n := range cached {
		out[i] = *n
	}
	return out, nil
}

// Close stops the informer.
func (nc *NodeCache) Close() {
	select {
	case <-nc.stop:
	default:
		close(nc.stop)
	}
}
