package serve

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/recycler/recycler/internal/kube"
)

func metav1ObjectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}

// nodeIndex watches Nodes (one informer, trimmed to what serve reads: name, uid,
// annotations, creation time, providerID) so an event's instance id maps to its
// Node without an API call, and annotation requests are seen as they are made.
// Trimming keeps 1,000 nodes in a few MB.
type nodeIndex struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	onChange func(*corev1.Node)
	stopCh   chan struct{}
	once     sync.Once
}

const byInstance = "instance"

func newNodeIndex(cs kubernetes.Interface, onChange func(*corev1.Node)) *nodeIndex {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(trimNode))
	inf := f.Core().V1().Nodes().Informer()
	_ = inf.AddIndexers(cache.Indexers{byInstance: func(obj any) ([]string, error) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return nil, nil
		}
		if pid, err := kube.ParseProviderID(n.Spec.ProviderID); err == nil {
			return []string{pid.InstanceID}, nil
		}
		return nil, nil // not an AWS node: not indexed
	}})
	return &nodeIndex{factory: f, informer: inf, onChange: onChange, stopCh: make(chan struct{})}
}

// trimNode keeps only what serve reads.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
			Annotations: n.Annotations, CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp},
		Spec: corev1.NodeSpec{ProviderID: n.Spec.ProviderID},
	}, nil
}

func (x *nodeIndex) start(ctx context.Context) error {
	if x.onChange != nil {
		_, _ = x.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { x.changed(obj) },
			UpdateFunc: func(_, obj any) { x.changed(obj) },
		})
	}
	x.factory.Start(x.stopCh)
	syncCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), x.informer.HasSynced) {
		x.stop()
		return fmt.Errorf("watch nodes: the node list did not sync within 2m (check RBAC: nodes list/watch)")
	}
	return nil
}

func (x *nodeIndex) changed(obj any) {
	if n, ok := obj.(*corev1.Node); ok {
		x.onChange(n)
	}
}

func (x *nodeIndex) stop() {
	x.once.Do(func() {
		close(x.stopCh)
		x.factory.Shutdown()
	})
}

// byInstanceID returns the Node of an instance, nil when the cluster has none.
func (x *nodeIndex) byInstanceID(id string) *corev1.Node {
	objs, err := x.informer.GetIndexer().ByIndex(byInstance, id)
	if err != nil || len(objs) != 1 {
		return nil
	}
	n, _ := objs[0].(*corev1.Node)
	return n
}
