// Package kube is the Kubernetes half of a recycle: it resolves a Node by name
// or EC2 instance ID, fences and unfences it (only undoing what it did itself),
// classifies and watches the pods on it, evicts them through the Eviction API
// while honouring PodDisruptionBudgets, and reports Node and workload readiness.
//
// Every operation is idempotent and bounded: none sleeps. Waits are watches
// bounded by the caller's context; eviction back-off is returned to the caller
// as "retry after D" (see docs/kube.md).
package kube
