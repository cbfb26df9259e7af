package serve

import (
	"bytes"
	"fmt"

	"github.com/recycler/recycler/internal/kube"
)

// RBAC is what serve calls in the cluster: a recycle's rules (kube.RBAC) with the
// annotation trigger's added, cluster-wide, and the leader election's rules for the
// Lease in serve's own namespace. deploy/kubernetes/rbac.yaml is RBACManifests;
// TestRBACIsExactlyWhatServeUses proves these rules are all serve uses.
func RBAC() (cluster, lease []kube.Rule) {
	cluster = kube.MergeRules(kube.RBAC(),
		kube.NewRule("", "nodes", "get list watch patch", "serve: the "+AnnotationRecycle+" annotation, replaced by the execution id, removed at the end"),
		kube.NewRule("events.k8s.io", "events", "create", "serve: why an annotation was refused"),
	)
	lease = []kube.Rule{kube.NewRule("coordination.k8s.io", "leases", "get create update", "the leader election")}
	return cluster, lease
}

// RBACManifests renders serve's RBAC for ServiceAccount serviceAccount in
// namespace: the ClusterRole and the Lease Role, named after the ServiceAccount, and
// their bindings (deploy/kubernetes/rbac.yaml, `recycler rbac --serve`).
func RBACManifests(namespace, serviceAccount string) []byte {
	cluster, lease := RBAC()
	var b bytes.Buffer
	b.WriteString("# Generated from internal/kube.RBAC and internal/serve.RBAC by `make deploy-documents`\n" +
		"# (`recycler rbac --serve`): do not edit. Exactly what recycler serve calls\n" +
		"# (TestRBACIsExactlyWhatServeUses records its requests on a real API server: none\n" +
		"# missing, none extra).\n")
	b.Write(kube.RoleYAML(serviceAccount, "", cluster))
	fmt.Fprintf(&b, `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: %[1]s
subjects:
  - kind: ServiceAccount
    name: %[1]s
    namespace: %[2]s
---
# The leader Lease lives in serve's own namespace.
`, serviceAccount, namespace)
	b.Write(kube.RoleYAML(serviceAccount+"-lease", namespace, lease))
	fmt.Fprintf(&b, `---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: %[1]s-lease
  namespace: %[2]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: %[1]s-lease
subjects:
  - kind: ServiceAccount
    name: %[1]s
    namespace: %[2]s
`, serviceAccount, namespace)
	return b.Bytes()
}
