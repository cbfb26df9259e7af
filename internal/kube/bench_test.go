package kube

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// BenchmarkNodeByInstanceID resolves every instance of a 500-node cluster and
// reports the API requests it took: the index makes it one list plus one GET
// per instance, instead of a list per instance.
func BenchmarkNodeByInstanceID(b *testing.B) {
	const nodes = 500
	var objs []runtime.Object
	ids := make([]string, nodes)
	for i := range nodes {
		ids[i] = fmt.Sprintf("i-%017x", i+1)
		objs = append(objs, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ip-10-0-%d-%d.ec2.internal", i/250, i%250)},
			Spec:       corev1.NodeSpec{ProviderID: "aws:///us-east-1a/" + ids[i]},
		})
	}
	var requests, lists int
	for b.Loop() {
		cs := fake.NewClientset(objs...)
		requests, lists = 0, 0
		cs.PrependReactor("*", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			requests++
			if a.GetVerb() == "list" {
				lists++
			}
			return false, nil, nil
		})
		c := New(cs, WithRecorder(&fakeRecorder{}))
		for _, id := range ids {
			if _, err := c.NodeByInstanceID(context.Background(), id); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(requests)/nodes, "requests/resolve")
	b.ReportMetric(float64(lists), "lists/500-resolves")
}
