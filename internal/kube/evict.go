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
	live, pdbs := c.budgetsOf(ctx, pod)
	if done, err := c.completeGranted(ctx, pod, live, pdbs); done || err != nil {
		return err
	}
	blocked := &EvictionBlockedError{Namespace: pod.Namespace, Pod: pod.Name, Message: msg, Attempt: attempt}
	blocked.PDBs = budgetNames(pdbs, msg)
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

// budgetsOf returns the live pod and the PodDisruptionBudgets in its namespace
// whose selector matches it (none when either read fails).
func (c *Client) budgetsOf(ctx context.Context, pod Pod) (*corev1.Pod, []policyv1.PodDisruptionBudget) {
	live, err := c.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return nil, nil
	}
	list, err := c.cs.PolicyV1().PodDisruptionBudgets(pod.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return live, nil
	}
	var out []policyv1.PodDisruptionBudget
	for _, pdb := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		// nil selects nothing, {} everything in the namespace (policy/v1).
		if err == nil && sel.Matches(labels.Set(live.Labels)) {
			out = append(out, pdb)
		}
	}
	return live, out
}

// budgetNames names the budgets, falling back to the name in the server's message.
func budgetNames(pdbs []policyv1.PodDisruptionBudget, msg string) []string {
	var names []string
	for _, pdb := range pdbs {
		names = append(names, pdb.Name)
	}
	for _, m := range budgetNameRE.FindAllStringSubmatch(msg, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

// grantFresh is how long after the API server granted a pod's eviction the grant
// is carried out on the server's word: half the disruption controller's
// DeletionTimeout (2 minutes), after which it counts the pod as healthy again.
const grantFresh = time.Minute

// completeGranted carries out an eviction the API server granted but never
// finished. The eviction handler first decrements the budget and records the pod
// in status.disruptedPods, then deletes it; when that delete fails (the evicting
// process died mid-request, as a killed recycle does mid-Drain) the pod stays, and
// for the next 2 minutes the disruption controller counts it as gone, so every
// eviction of it is refused. Deleting it, UID as precondition, is what the
// server was about to do: the budget already spent its disruption on this pod.
// Only while the grant is fresh, the budget observed, and — the pod counted as
// gone — still met (currentHealthy ≥ desiredHealthy), for every budget of the pod.
func (c *Client) completeGranted(ctx context.Context, pod Pod, live *corev1.Pod, pdbs []policyv1.PodDisruptionBudget) (bool, error) {
	if live == nil || live.UID != pod.UID || live.DeletionTimestamp != nil || len(pdbs) == 0 {
		return false, nil
	}
	now := c.clock.Now()
	for _, pdb := range pdbs {
		at, ok := pdb.Status.DisruptedPods[pod.Name]
		switch {
		case !ok, now.Sub(at.Time) >= grantFresh, at.After(now.Add(grantFresh)),
			pdb.Status.ObservedGeneration < pdb.Generation,
			pdb.Status.CurrentHealthy < pdb.Status.DesiredHealthy:
			return false, nil
		}
	}
	err := c.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	switch {
	case err == nil:
		c.record(ctx, pod.Node, corev1.EventTypeNormal, ReasonEvicted, "Evict",
			fmt.Sprintf("Evicted pod %s (completing the eviction its PodDisruptionBudget had granted; the delete had not happened)", pod), podRef(pod))
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return true, nil
	default:
		return false, fmt.Errorf("evict pod %s: complete the granted eviction: %w", pod, err)
	}
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
