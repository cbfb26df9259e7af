package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestProtectFromScaleDownOnlyLiftsItsOwnValue(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "admins", Annotations: map[string]string{AnnotationScaleDownDisabled: "false"}}},
	)
	c := New(cs, WithRecorder(&fakeRecorder{}))
	get := func(name string) (string, bool) {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := n.Annotations[AnnotationScaleDownDisabled]
		return v, ok
	}
	if err := c.ProtectFromScaleDown(ctx, "fresh", true); err != nil {
		t.Fatal(err)
	}
	if v, _ := get("fresh"); v != "true" {
		t.Fatalf("protect: annotation %q, want true", v)
	}
	if err := c.ProtectFromScaleDown(ctx, "fresh", false); err != nil {
		t.Fatal(err)
	}
	if v, ok := get("fresh"); ok {
		t.Fatalf("lift: annotation still %q", v)
	}
	if err := c.ProtectFromScaleDown(ctx, "admins", false); err != nil {
		t.Fatal(err)
	}
	if v, _ := get("admins"); v != "false" {
		t.Fatalf("lift removed an admin's value: now %q", v)
	}
	if err := c.ProtectFromScaleDown(ctx, "gone", false); err != nil {
		t.Fatalf("a missing node must count as done: %v", err)
	}
}
