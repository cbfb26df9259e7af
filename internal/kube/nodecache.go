package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/recycler/recycler/internal/cloud"
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
	changed  chan struct{} // closed (and replaced) whenever a cached Node changes
}

// NewNodeCache wraps c; the informer starts on the first Nodes call. Close stops it.
// From then on c itself finds a node by instance id in the cache's index (verified
// by a GET) instead of listing every node: every recycle of a rollout does that for
// its replacement.
func (c *Client) NewNodeCache() *NodeCache {
	nc := &NodeCache{Client: c, stop: make(chan struct{}), changed: make(chan struct{})}
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
	if n := byInstance(inf, id); n != nil {
		return n.Name
	}
	return ""
}

// Nodes lists the cached Nodes matching a label selector ("" = all), after the first
// complete LIST has arrived. They share their maps and slices with the cache (which
// replaces objects, never changes them): read them, do not modify them.
func (nc *NodeCache) Nodes(ctx context.Context, selector string) ([]corev1.Node, error) {
	if err := nc.sync(ctx); err != nil {
		return nil, err
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

// WaitNodeReady is Client.WaitNodeReady answered from the cache: it returns as soon as
// the node named by ref (name, instance ID or provider ID) is Ready with the labels,
// or when ctx ends (false and the last reason). Many recycles waiting at once share
// the cache's one watch instead of a LIST and a watch of every node each.
func (nc *NodeCache) WaitNodeReady(ctx context.Context, ref string, requiredLabels map[string]string) (bool, string, error) {
	var find func() *corev1.Node
	switch {
	case strings.Contains(ref, "://"):
		pid, err := ParseProviderID(ref)
		if err != nil {
			return false, "", err
		}
		find = func() *corev1.Node { return byInstance(nc.informer, pid.InstanceID) }
	case cloud.IsInstanceID(ref):
		find = func() *corev1.Node { return byInstance(nc.informer, ref) }
	default:
		if err := validateNodeName(ref); err != nil {
			return false, "", err
		}
		find = func() *corev1.Node {
			n, err := nc.lister.Get(ref)
			if err != nil {
				return nil
			}
			return n
		}
	}
	if err := nc.sync(ctx); err != nil {
		return false, "", fmt.Errorf("wait for node %s: %w", ref, err)
	}
	why := fmt.Sprintf("no node for %s has registered", ref)
	for {
		nc.mu.Lock()
		changed := nc.changed
		nc.mu.Unlock()
		if n := find(); n != nil {
			ready, reason := NodeIsReady(n, requiredLabels)
			if ready {
				return true, reason, nil
			}
			why = reason
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false, why, nil
		}
	}
}

// byInstance is the one cached node of instance id, or nil.
func byInstance(inf cache.SharedIndexInformer, id string) *corev1.Node {
	objs, err := inf.GetIndexer().ByIndex(instanceIndex, id)
	if err != nil || len(objs) != 1 {
		return nil
	}
	n, _ := objs[0].(*corev1.Node)
	return n
}

// sync starts the informer once and waits for its first complete LIST.
func (nc *NodeCache) sync(ctx context.Context) error {
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
		notify := func(any) {
			nc.mu.Lock()
			close(nc.changed)
			nc.changed = make(chan struct{})
			nc.mu.Unlock()
		}
		_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, n any) { notify(n) },
		})
		nc.lister, nc.synced = inf.Lister(), inf.Informer().HasSynced
		nc.mu.Lock()
		nc.informer = inf.Informer()
		nc.mu.Unlock()
		f.Start(nc.stop)
	})
	if !cache.WaitForCacheSync(ctx.Done(), nc.synced) {
		return fmt.Errorf("the node cache did not sync: %w", context.Cause(ctx))
	}
	return nil
}

// Close stops the informer.
func (nc *NodeCache) Close() {
	select {
	case <-nc.stop:
	default:
		close(nc.stop)
	}
}
