package scenario

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/rollout"
)

// Fleet returns the rollout's tasks over the harness's own (counted) clients, the
// way the CLI wires them (Nodes from a cache). Close stops the cache.
func (h *Harness) Fleet() *rollout.Tasks {
	h.fleetOnce.Do(func() {
		h.nodes = h.Tasks.Cluster.(*kube.Client).NewNodeCache()
		h.Tasks.Cluster = h.nodes
		h.fleet = &rollout.Tasks{Cloud: h.Provider, Cluster: h.nodes, Clock: h.Clock, Recycle: h.Tasks}
	})
	return h.fleet
}

// Close stops what the harness started (the node cache of Fleet).
func (h *Harness) Close() {
	if h.nodes != nil {
		h.nodes.Close()
	}
}

// OpenFleetEngine opens an engine at path that runs rollouts and recycles with the
// harness's tasks (as `recycler rollout` does).
func (h *Harness) OpenFleetEngine(ctx context.Context, path string, log *slog.Logger) (*engine.Engine, *rollout.Tasks, error) {
	ft := h.Fleet()
	eng, err := engine.Open(ctx, engine.Options{Path: path, Registry: ft.Registry(), Logger: log, Workers: 256, Clock: h.Clock})
	if err != nil {
		return nil, nil, err
	}
	ft.SetExecutions(eng)
	return eng, ft, nil
}

// Plan selects and plans with the harness's clients.
func (h *Harness) Plan(ctx context.Context, o rollout.Options) (*rollout.Plan, error) {
	ft := h.Fleet()
	sel, err := rollout.Select(ctx, ft.Cloud, ft.Cluster, o.Selection, h.Clock.Now())
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	return rollout.NewPlan(sel, o)
}
