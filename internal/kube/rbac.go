package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
)

// Rule is one RBAC rule the code needs, and why (the generated manifests carry the
// reason as a comment).
type Rule struct {
	rbacv1.PolicyRule
	Why string
}

// NewRule allows verbs on resources of one API group ("" = core); resources and
// verbs are separated by spaces.
func NewRule(group, resources, verbs, why string) Rule {
	return Rule{PolicyRule: rbacv1.PolicyRule{APIGroups: []string{group}, Resources: strings.Fields(resources), Verbs: strings.Fields(verbs)}, Why: why}
}

// RBAC is what a recycle calls in the cluster, whoever drives it (`recycler
// recycle`, serve, the Lambda on Step Functions), and nothing more: the one source of
// the Terraform module's ClusterRole (deploy/terraform/modules/documents/rbac.json),
// of serve's (deploy/kubernetes/rbac.yaml, with serve's own rules added) and of
// `recycler rbac`. `make deploy-documents` writes the files; tests fail when they
// drift, and the end-to-end tests run the Lambda and serve with exactly these rules.
func RBAC() []Rule {
	return []Rule{
		NewRule("", "nodes", "get list watch patch delete", "resolve, watch readiness, fence and unfence, delete at retire"),
		NewRule("", "pods", "get list watch delete", "drain; delete for --on-timeout force, and to finish an eviction its budget granted (docs/kube.md)"),
		NewRule("", "pods/eviction", "create", "evict through the Eviction API"),
		NewRule("policy", "poddisruptionbudgets", "list", "name the budget that blocks an eviction"),
		NewRule("apps", "replicasets deployments statefulsets", "get watch", "the workloads a drain moves: recorded before, watched until available again"),
		NewRule("events.k8s.io", "events", "create", "an Event on the Node for every step"),
	}
}

// MergeRules returns base with extra added: a rule for the same API groups and
// resources as one of base's adds its verbs (and reason) to it, any other is
// appended. base is not modified.
func MergeRules(base []Rule, extra ...Rule) []Rule {
	out := make([]Rule, 0, len(base)+len(extra))
	for _, r := range base {
		r.PolicyRule = *r.DeepCopy()
		out = append(out, r)
	}
	for _, e := range extra {
		i := slices.IndexFunc(out, func(r Rule) bool {
			return slices.Equal(r.APIGroups, e.APIGroups) && slices.Equal(r.Resources, e.Resources)
		})
		if i < 0 {
			e.PolicyRule = *e.DeepCopy()
			out = append(out, e)
			continue
		}
		for _, v := range e.Verbs {
			if !slices.Contains(out[i].Verbs, v) {
				out[i].Verbs = append(out[i].Verbs, v)
			}
		}
		if e.Why != "" && !strings.Contains(out[i].Why, e.Why) {
			out[i].Why += "; " + e.Why
		}
	}
	return out
}

// PolicyRules drops the reasons, as a ClusterRole takes the rules.
func PolicyRules(rules []Rule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		out[i] = *r.DeepCopy()
	}
	return out
}

// RulesJSON renders rules as a JSON array, one rule a line (the Terraform module's
// rbac.json).
func RulesJSON(rules []Rule) []byte {
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, r := range rules {
		line, _ := json.Marshal(struct {
			APIGroups []string `json:"apiGroups"`
			Resources []string `json:"resources"`
			Verbs     []string `json:"verbs"`
		}{r.APIGroups, r.Resources, r.Verbs})
		b.WriteString("  ")
		b.Write(line)
		if i < len(rules)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	return b.Bytes()
}

// RoleYAML renders a ClusterRole (namespace "") or a Role with rules, each rule's
// reason as a comment.
func RoleYAML(name, namespace string, rules []Rule) []byte {
	var b bytes.Buffer
	kind := "ClusterRole"
	if namespace != "" {
		kind = "Role"
	}
	fmt.Fprintf(&b, "apiVersion: rbac.authorization.k8s.io/v1\nkind: %s\nmetadata:\n  name: %s\n", kind, name)
	if namespace != "" {
		fmt.Fprintf(&b, "  namespace: %s\n", namespace)
	}
	b.WriteString("rules:\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "  - apiGroups: %s\n    resources: %s\n    verbs: %s", flow(r.APIGroups), flow(r.Resources), flow(r.Verbs))
		if r.Why != "" {
			fmt.Fprintf(&b, " # %s", r.Why)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// flow is a YAML flow sequence of quoted strings (valid JSON too).
func flow(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
