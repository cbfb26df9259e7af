package scenario

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// WaitSettled waits until every pod of namespace ns is Running and Ready (or has
// finished) and every PodDisruptionBudget there is observed and satisfied: a recycle
// measured against workloads still starting would blame itself for their start.
func WaitSettled(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) error {
	var why string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			if !podReady(&p) {
				why = fmt.Sprintf("pod %s is %s", p.Name, p.Status.Phase)
				return false, nil
			}
		}
		pdbs, err := cs.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, b := range pdbs.Items {
			if b.Status.ObservedGeneration < b.Generation || b.Status.CurrentHealthy < b.Status.DesiredHealthy {
				why = fmt.Sprintf("PDB %s has %d healthy of %d", b.Name, b.Status.CurrentHealthy, b.Status.DesiredHealthy)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("workloads in %s not settled within %s (%s): %w", ns, timeout, why, err)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
