package recycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// Orphans: what recycles changed, found from the cluster and the group alone. A
// recycle whose state file is gone (a CI workspace wiped, a laptop reinstalled)
// leaves its records on the Node it fenced and on the instances it changed; these
// functions list them and rebuild, from them, the state a rollback needs.

// Orphan is one node or instance a recycle changed that no execution of the caller
// owns: a fenced Node, an instance left in Standby, or both.
type Orphan struct {
	Node      string    `json:"node,omitempty"`
	Instance  string    `json:"instance,omitempty"`
	Group     string    `json:"group,omitempty"`
	Execution string    `json:"execution"` // who made it
	Since     time.Time `json:"since"`     // when
	What      []string  `json:"what"`      // what it changed, in words
}

// Orphans lists every fenced Node and every instance Recycler put in standby whose
// execution owned() does not claim (owned: an execution the caller runs).
func (t *Tasks) Orphans(ctx context.Context, owned func(execution string) bool) ([]Orphan, error) {
	fenced, err := t.Cluster.FencedNodes(ctx)
	if err != nil {
		return nil, err
	}
	var out []Orphan
	byInstance := map[string]int{}
	for _, f := range fenced {
		if owned(f.Record.ExecutionID) {
			continue
		}
		o := Orphan{Node: f.Node, Execution: f.Record.ExecutionID, Since: f.Record.At, What: []string{fenceWords(f.Record)}}
		if in := f.Record.Recycle; in != nil {
			o.Instance, o.Group = in.Instance, in.Group
			if in.SurgedAt != nil {
				o.What = append(o.What, "surged "+in.Group)
			}
			if in.Replacement != "" {
				o.What = append(o.What, "replacement "+in.Replacement)
			}
		}
		if o.Instance != "" {
			byInstance[o.Instance] = len(out)
		}
		out = append(out, o)
	}
	recorded, err := t.Cloud.Recorded(ctx)
	if err != nil {
		return nil, fmt.Errorf("list instances with Recycler's records: %w", err)
	}
	for _, in := range recorded {
		standby := in.Lifecycle == cloud.LifecycleStandby || in.Lifecycle == cloud.LifecycleEnteringStandby
		exec := in.Tags[cloud.TagExecution]
		if !standby || owned(exec) {
			continue
		}
		what := fmt.Sprintf("instance %s in %s in group %s", in.ID, in.Lifecycle, in.Group)
		if i, ok := byInstance[in.ID]; ok {
			out[i].What = append(out[i].What, what)
			continue
		}
		since, _ := time.Parse(time.RFC3339, in.Tags[cloud.TagStandbyAt])
		out = append(out, Orphan{Instance: in.ID, Group: in.Group, Execution: exec, Since: since, What: []string{what + " (its node is not fenced)"}})
	}
	slices.SortFunc(out, func(a, b Orphan) int { return a.Since.Compare(b.Since) })
	return out, nil
}

func fenceWords(r kube.FenceRecord) string {
	var parts []string
	if r.TaintAdded {
		parts = append(parts, "tainted")
	}
	if r.Cordoned {
		parts = append(parts, "cordoned")
	}
	if len(parts) == 0 {
		return "fenced"
	}
	return "fenced (" + strings.Join(parts, ", ") + ")"
}

// ErrNoRecords: the node carries nothing of Recycler's to roll back.
var ErrNoRecords = errors.New("no Recycler records")

// OrphanState rebuilds, from the records on node (its fence annotation) and on its
// instance, the execution id and the State the Rollback task needs for it: the same
// rollback as for an execution whose state is known.
func (t *Tasks) OrphanState(ctx context.Context, node string) (string, State, error) {
	n, err := t.Cluster.ResolveNode(ctx, node)
	if err != nil {
		return "", State{}, err
	}
	rec, ok := kube.FenceOf(n)
	if !ok {
		return "", State{}, fmt.Errorf("node %s carries no %s annotation: %w", n.Name, kube.AnnotationFenced, ErrNoRecords)
	}
	info := rec.Recycle
	if info == nil {
		info = &kube.RecycleInfo{}
	}
	st := State{Request: NewRequest(n.Name)}
	if len(info.Request) > 0 {
		if err := json.Unmarshal(info.Request, &st.Request); err != nil {
			return "", State{}, fmt.Errorf("the request recorded on node %s: %w", n.Name, err)
		}
	}
	tgt := &Target{Node: n.Name, InstanceID: info.Instance, AZ: info.AZ, Group: info.Group,
		Desired: info.Desired, MaxSize: info.MaxSize, InService: info.InService, Suspended: info.Suspended, ResolvedAt: rec.At}
	if info.SurgedAt != nil {
		tgt.ResolvedAt = *info.SurgedAt // the surge's activities begin after it
	}
	if tgt.InstanceID == "" {
		if tgt.InstanceID, err = kube.InstanceID(n); err != nil {
			return "", State{}, err
		}
	}
	if tgt.Group == "" {
		in, err := t.Cloud.Instance(ctx, tgt.InstanceID)
		if err != nil {
			return "", State{}, fmt.Errorf("instance %s of node %s: %w", tgt.InstanceID, n.Name, err)
		}
		tgt.Group = in.Group
		if tgt.Group == "" {
			tgt.Group = in.Tags[tagASGName]
		}
	}
	st.Target = tgt
	if info.SurgedAt == nil && len(info.Request) > 0 {
		st.Request.NoSurge = true // recorded before any surge: nothing changed on AWS
	}
	if info.Replacement != "" {
		st.Replacement = &ReplacementStatus{Done: info.ReplacementNode != "", Instances: []string{info.Replacement}}
		if info.ReplacementNode != "" {
			st.Replacement.Nodes = []string{info.ReplacementNode}
		}
	}
	return rec.ExecutionID, st, nil
}

// tagASGName is the tag Auto Scaling puts on the instances it launches.
const tagASGName = "aws:autoscaling:groupName"
