package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Evict asks the API server to evict pod through policy/v1 Eviction, with the
// pod's UID as precondition (a replacement pod with the same name is never
// touched). nil means the eviction was accepted, or the pod is already gone or
// replaced (404, 409). A PodDisruptionBudget refusal is an *EvictionBlockedError
// naming the budget(s) and when to retry: attempt counts earlier refusals of
// this pod (0 for the first try) and drives the exponential back-off. Evict
// never waits.
func (c *Client) Evict(ctx context.Context, pod Pod, attempt int) error {
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	}
	err := c.cs.CoreV1().Pods(pod.Namespace).EvictV1(ctx, ev)
	switch {
	case err == nil:
		c.record(ctx, pod.Node, corev1.EventTypeNormal, ReasonEvicted, "Evict",
			fmt.Sprintf("Evicted pod %s", pod), podRef(pod))
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or replaced by a pod with another UID
	}
	msg, byBudget := budgetRefusal(err)
	if !byBudget {
		return fmt.Errorf("evict pod %s: %w", pod, err)
	}
	blocked := &EvictionBlockedError{Namespace: pod.Namespace, Pod: pod.Name, Message: msg, Attempt: attempt}
	blocked.PDBs = c.budgetsFor(ctx, pod, msg)
	blocked.RetryAfter = c.backoff.Delay(attempt, c.jitter())
	if s, ok := apierrors.SuggestsClientDelay(err); ok && time.Duration(s)*time.Second > blocked.RetryAfter {
		blocked.RetryAfter = time.Duration(s) * time.Second
	}
	blocked.NotBefore = c.clock.Now().Add(blocked.RetryAfter)
	c.record(ctx, pod.Node, corev1.EventTypeWarning, ReasonEvictionBlocked, "Evict", blocked.Error(), podRef(pod))
	return blocked
}

// budgetRefusal recognises a refusal caused by PodDisruptionBudgets: 429
// (no disruption allowed now, or the budget is not yet processed), 403 with a DisruptionBudget cause (budget in a
// bad state), or the 500 the server returns when several budgets select the pod.
func budgetRefusal(err error) (string, bool) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return "", false
	}
	st := se.Status()
	var causes []string
	if st.Details != nil {
		for _, c := range st.Details.Causes {
			if c.Type == policyv1.DisruptionBudgetCause {
				causes = append(causes, c.Message)
			}
		}
	}
	switch {
	// A 429 without a budget cause is API throttling, not a PodDisruptionBudget.
	case st.Code == http.StatusTooManyRequests && (len(causes) > 0 || strings.Contains(st.Message, "disruption budget")):
	case st.Code == http.StatusForbidden && len(causes) > 0:
	case st.Code == http.StatusInternalServerError && strings.Contains(st.Message, "more than one PodDisruptionBudget"):
		return st.Message, true
	default:
		return "", false
	}
	if len(causes) > 0 {
		return strings.Join(causes, "; "), true
	}
	return st.Message, true
}

var budgetNameRE = regexp.MustCompile(`The disruption budget (\S+) `)

// budgetsFor names the PodDisruptionBudgets in the pod's namespace whose
// selector matches the pod, falling back to the name in the server's message.
func (c *Client) budgetsFor(ctx context.Context, pod Pod, msg string) []string {
	var names []string
	live, err := c.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err == nil {
		pdbs, err := c.cs.PolicyV1().PodDisruptionBudgets(pod.Namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, pdb := range pdbs.Items {
				sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				// nil selects nothing, {} everything in the namespace (policy/v1).
				if err == nil && sel.Matches(labels.Set(live.Labels)) {
					names = append(names, pdb.Name)
				}
			}
		}
	}
	for _, m := range budgetNameRE.FindAllStringSubmatch(msg, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

// ForceDelete deletes pod without the Eviction API (PodDisruptionBudgets are
// not consulted): only for a caller that decided so, past its deadline. The
// grace period is max(1 s, min(pod's grace, maxGrace)), never 0, so the
// kubelet still stops the containers before the name can be reused.
// An absent or replaced pod (404, 409) counts as done.
func (c *Client) ForceDelete(ctx context.Context, pod Pod, maxGrace time.Duration) error {
	grace := min(pod.GracePeriodSeconds, int64(maxGrace/time.Second))
	grace = max(grace, 1)
	err := c.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	switch {
	case err == nil:
		c.record(ctx, pod.Node, corev1.EventTypeWarning, ReasonForceDeleted, "ForceDelete",
			fmt.Sprintf("Deleted pod %s without eviction (grace %ds): its deadline passed", pod, grace), podRef(pod))
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil
	default:
		return fmt.Errorf("force delete pod %s: %w", pod, err)
	}
}

func podRef(p Pod) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}
