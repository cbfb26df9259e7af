package lambda

import rbacv1 "k8s.io/api/rbac/v1"

// RBAC is what the task functions need in the cluster: the rules of the
// Kubernetes group the function's role is bound to (an EKS access entry), and no
// more. TestBootstrapUnderTheRuntimeInterfaceEmulator runs the function with
// exactly these; deploy/terraform grants the same (docs/lambda.md).
var RBAC = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch", "delete"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
	{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create"}},
	{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"list"}},
}
