package kube

import (
	"encoding/json"
	"reflect"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// A component's extra rules widen the recycle's rule for the same resources (new
// verbs, and why) or are appended; the recycle's own list is left as it was.
func TestMergeRulesAddsVerbsAndReasonsWithoutChangingTheBase(t *testing.T) {
	base := RBAC()
	merged := MergeRules(base,
		NewRule("", "nodes", "list patch", "the trigger"),
		NewRule("coordination.k8s.io", "leases", "get", "the election"))
	if !reflect.DeepEqual(base, RBAC()) {
		t.Fatalf("MergeRules changed its base: %+v", base)
	}
	nodes := merged[0]
	if !reflect.DeepEqual(nodes.Verbs, []string{"get", "list", "watch", "patch", "delete"}) || nodes.Why != base[0].Why+"; the trigger" {
		t.Errorf("nodes rule %+v, want the same verbs (none new) and the trigger's reason added", nodes)
	}
	if len(merged) != len(base)+1 || merged[len(base)].Resources[0] != "leases" {
		t.Errorf("merged %+v, want the lease rule appended", merged)
	}
	merged = MergeRules(base, NewRule("", "pods", "patch", ""))
	if got := merged[1].Verbs; !reflect.DeepEqual(got, []string{"get", "list", "watch", "delete", "patch"}) || merged[1].Why != base[1].Why {
		t.Errorf("pods rule %+v, want patch added and the reason kept", merged[1])
	}
}

// What RulesJSON and RoleYAML render reads back as exactly the rules.
func TestRenderedRulesReadBackAsTheRules(t *testing.T) {
	var fromJSON []rbacv1.PolicyRule
	if err := json.Unmarshal(RulesJSON(RBAC()), &fromJSON); err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(RoleYAML("recycler", "", RBAC()), &role); err != nil {
		t.Fatal(err)
	}
	if want := PolicyRules(RBAC()); !reflect.DeepEqual(fromJSON, want) || !reflect.DeepEqual(role.Rules, want) || role.Kind != "ClusterRole" || role.Name != "recycler" {
		t.Errorf("JSON %+v, YAML %+v (%s %s); want %+v", fromJSON, role.Rules, role.Kind, role.Name, want)
	}
}
