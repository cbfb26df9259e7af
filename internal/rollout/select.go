package rollout

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// Cloud is what a rollout needs from the cloud; *aws.Provider implements it.
type Cloud interface {
	// Group describes a group with launch template versions resolved (for drift).
	Group(ctx context.Context, name string) (cloud.Group, error)
	// GroupMembers describes a group's sizes and members in one call (the gate's view).
	GroupMembers(ctx context.Context, name string) (cloud.Group, error)
	GroupNamesByTags(ctx context.Context, tags map[string]string) ([]string, error)
	Instances(ctx context.Context, ids ...string) ([]cloud.Instance, error)
	ScalingActivities(ctx context.Context, group string, limit int) ([]cloud.ScalingActivity, error)
	DriftOf(inst cloud.Instance, g cloud.Group) cloud.Drift
}

// Cluster is what a rollout needs from Kubernetes; *kube.Client implements it.
type Cluster interface {
	Nodes(ctx context.Context, selector string) ([]corev1.Node, error)
	CordonForBatch(ctx context.Context, node, rollout string) error
	UncordonForBatch(ctx context.Context, node, rollout string) error
}

// AnnotationDoNotDisrupt on a Node keeps it out of every rollout (Karpenter's spelling,
// which the cluster autoscaler and other tools honour too).
const AnnotationDoNotDisrupt = "karpenter.sh/do-not-disrupt"

// Candidate is a node the rollout will replace, and why.
type Candidate struct {
	Node       string    `json:"node"`
	InstanceID string    `json:"instanceId"`
	Group      string    `json:"group"`
	AZ         string    `json:"az"`
	LaunchTime time.Time `json:"launchTime"`
	Reasons    []string  `json:"reasons"`
	// NotReady: the node is NotReady now; it counts against the health budget.
	NotReady bool `json:"notReady,omitempty"`
}

// Skipped is a node the selection named but the rollout leaves alone, and why.
type Skipped struct {
	Node       string `json:"node,omitempty"`
	InstanceID string `json:"instanceId,omitempty"`
	Group      string `json:"group,omitempty"`
	Reason     string `json:"reason"`
}

// GroupView is one selected group as the selection saw it.
type GroupView struct {
	Name     string   `json:"name"`
	Desired  int      `json:"desired"`
	MinSize  int      `json:"minSize"`
	MaxSize  int      `json:"maxSize"`
	Live     int      `json:"live"` // members not terminating or detaching (Standby included)
	AZs      []string `json:"azs"`
	Members  []string `json:"members"` // instance ids at selection time
	UpToDate int      `json:"upToDate"`
	// Activities are the group's recent scaling activities (for the estimate).
	Activities []cloud.ScalingActivity `json:"-"`
}

// Selected is the outcome of Select.
type Selected struct {
	At         time.Time   `json:"at"`
	Groups     []GroupView `json:"groups"`
	Candidates []Candidate `json:"candidates"`
	Skipped    []Skipped   `json:"skipped"`
}

// activityLookback is how many recent scaling activities per group feed the estimate.
const activityLookback = 100

// Select finds the nodes the selection and its policy name, with one description of
// each group, one batch of instance descriptions and one list of Nodes. It changes
// nothing.
func Select(ctx context.Context, c Cloud, k Cluster, sel Selection, now time.Time) (*Selected, error) {
	nodes, err := k.Nodes(ctx, sel.Nodes)
	if err != nil {
		return nil, err
	}
	byInstance := map[string]*corev1.Node{}
	out := &Selected{At: now.UTC()}
	for i := range nodes {
		n := &nodes[i]
		id, err := kube.InstanceID(n)
		if err != nil {
			if sel.Nodes != "" {
				out.Skipped = append(out.Skipped, Skipped{Node: n.Name, Reason: "no AWS providerID (aws:///zone/i-…): not an Auto Scaling group member"})
			}
			continue
		}
		byInstance[id] = n
	}
	names, err := groupNames(ctx, c, sel, byInstance, out)
	if err != nil {
		return nil, err
	}
	groups := make([]cloud.Group, 0, len(names))
	var ids []string
	for _, name := range names {
		g, err := c.Group(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("describe group %s: %w", name, err)
		}
		groups = append(groups, g)
		for _, in := range g.Instances {
			ids = append(ids, in.ID)
		}
	}
	insts, err := c.Instances(ctx, ids...)
	if err != nil {
		return nil, fmt.Errorf("describe the groups' instances: %w", err)
	}
	byID := make(map[string]cloud.Instance, len(insts))
	for _, in := range insts {
		byID[in.ID] = in
	}
	for _, g := range groups {
		acts, err := c.ScalingActivities(ctx, g.Name, activityLookback)
		if err != nil {
			return nil, fmt.Errorf("scaling activities of %s: %w", g.Name, err)
		}
		view := GroupView{Name: g.Name, Desired: int(g.Desired), MinSize: int(g.MinSize), MaxSize: int(g.MaxSize), AZs: g.AZs, Activities: acts}
		for _, gi := range g.Instances {
			view.Members = append(view.Members, gi.ID)
			if live(gi.Lifecycle) {
				view.Live++
			}
			n := byInstance[gi.ID]
			if sel.Nodes != "" && n == nil {
				continue // not a node the selector names
			}
			inst, ok := byID[gi.ID]
			if !ok {
				inst = cloud.Instance{ID: gi.ID, AZ: gi.AZ, Group: g.Name, Lifecycle: gi.Lifecycle, LaunchTemplate: gi.LaunchTemplate, InstanceType: gi.InstanceType}
			}
			if why := skipReason(gi, n); why != "" {
				s := Skipped{InstanceID: gi.ID, Group: g.Name, Reason: why}
				if n != nil {
					s.Node = n.Name
				}
				out.Skipped = append(out.Skipped, s)
				continue
			}
			reasons := policyReasons(c, sel, inst, g, now)
			if len(reasons) == 0 {
				view.UpToDate++
				continue
			}
			ready, _ := kube.NodeIsReady(n, nil)
			out.Candidates = append(out.Candidates, Candidate{
				Node: n.Name, InstanceID: gi.ID, Group: g.Name, AZ: gi.AZ, LaunchTime: inst.LaunchTime.UTC(),
				Reasons: reasons, NotReady: !ready,
			})
		}
		sort.Strings(view.Members)
		out.Groups = append(out.Groups, view)
	}
	return out, nil
}

// groupNames resolves the selection to group names: named ones, tagged ones, and —
// with only a node selector — the groups of the selected nodes.
func groupNames(ctx context.Context, c Cloud, sel Selection, byInstance map[string]*corev1.Node, out *Selected) ([]string, error) {
	names := slices.Clone(sel.Groups)
	if len(sel.GroupTags) > 0 {
		tagged, err := c.GroupNamesByTags(ctx, sel.GroupTags)
		if err != nil {
			return nil, fmt.Errorf("find groups by tag: %w", err)
		}
		if len(tagged) == 0 {
			return nil, fmt.Errorf("no Auto Scaling group carries the tags %v: %w", sel.GroupTags, cloud.ErrNotFound)
		}
		names = append(names, tagged...)
	}
	if len(sel.Groups) == 0 && len(sel.GroupTags) == 0 {
		ids := make([]string, 0, len(byInstance))
		for id := range byInstance {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		insts, err := c.Instances(ctx, ids...)
		if err != nil {
			return nil, fmt.Errorf("describe the selected nodes' instances: %w", err)
		}
		found := map[string]bool{}
		for _, in := range insts {
			found[in.ID] = true
			if in.Group == "" {
				out.Skipped = append(out.Skipped, Skipped{Node: byInstance[in.ID].Name, InstanceID: in.ID, Reason: "instance is in no Auto Scaling group"})
				continue
			}
			names = append(names, in.Group)
		}
		for _, id := range ids {
			if !found[id] {
				out.Skipped = append(out.Skipped, Skipped{Node: byInstance[id].Name, InstanceID: id, Reason: "instance does not exist in this region"})
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// live: the member still counts toward the group's size (headroom is computed on these).
func live(lifecycle string) bool {
	switch lifecycle {
	case cloud.LifecycleTerminating, cloud.LifecycleTerminatingWait, cloud.LifecycleTerminatingProc,
		cloud.LifecycleTerminated, cloud.LifecycleDetaching, cloud.LifecycleDetached:
		return false
	}
	return true
}

// skipReason says why a group member cannot be in the rollout now ("" = it can).
func skipReason(gi cloud.GroupInstance, n *corev1.Node) string {
	switch {
	case n == nil:
		return "instance has no Node: it has not joined the cluster (or its Node was deleted)"
	case gi.Lifecycle != cloud.LifecycleInService:
		return fmt.Sprintf("instance is %s, not InService", gi.Lifecycle)
	case n.Annotations[AnnotationDoNotDisrupt] == "true":
		return "node carries " + AnnotationDoNotDisrupt + "=true"
	case n.DeletionTimestamp != nil:
		return "node is being deleted"
	}
	if rec, ok := kube.FenceOf(n); ok {
		return "already being recycled by execution " + rec.ExecutionID
	}
	for _, t := range n.Spec.Taints {
		if t.Key == kube.TaintKey {
			return "already being recycled (taint " + kube.TaintKey + "=" + t.Value + ")"
		}
	}
	if bc, ok := kube.BatchCordonOf(n); ok {
		return "cordoned by rollout " + bc.Rollout
	}
	if n.Spec.Unschedulable {
		return "cordoned by someone else: uncordon it (kubectl uncordon " + n.Name + ") to include it"
	}
	return ""
}

// policyReasons says why the policy selects the instance (none: it is up to date).
func policyReasons(c Cloud, sel Selection, inst cloud.Instance, g cloud.Group, now time.Time) []string {
	if sel.All {
		return []string{"--all"}
	}
	var out []string
	if sel.Drifted {
		if d := c.DriftOf(inst, g); d.Drifted {
			out = append(out, driftReason(d))
		}
	}
	if age := time.Duration(sel.OlderThan); age > 0 && !inst.LaunchTime.IsZero() && now.Sub(inst.LaunchTime) > age {
		out = append(out, fmt.Sprintf("launched %s ago (%s), older than %s",
			roundAge(now.Sub(inst.LaunchTime)), inst.LaunchTime.UTC().Format(time.DateOnly), roundAge(age)))
	}
	return out
}

// roundAge prints a duration the way a person reads an age: 34d, 5h20m, 3m.
func roundAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return d.Truncate(time.Minute).String()
	}
	return d.Truncate(time.Second).String()
}

// driftReason words a drift the short way for one template ("launch template lt-1
// v3 → v4 ($Latest)"), else as the cloud put it.
func driftReason(d cloud.Drift) string {
	have, want := d.Instance.LaunchTemplate, d.Group.LaunchTemplate
	if have == nil || want == nil || (have.ID != want.ID && have.Name != want.Name) {
		return "drifted: " + d.Reason
	}
	name := want.ID
	if name == "" {
		name = want.Name
	}
	s := fmt.Sprintf("launch template %s v%d → v%d", name, have.ResolvedVersion, want.ResolvedVersion)
	if want.Version == "$Latest" || want.Version == "$Default" {
		s += " (" + want.Version + ")"
	}
	return s
}
