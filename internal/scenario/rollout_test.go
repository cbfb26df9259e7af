package scenario_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
)

// fleetWorld is a simulated environment with an engine that runs rollouts.
type fleetWorld struct {
	env *sim.Environment
	h   *scenario.Harness
	eng *engine.Engine
	ft  *rollout.Tasks
}

func newFleetWorld(t *testing.T, opts sim.UpOptions) *fleetWorld {
	t.Helper()
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		t.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	ctx := context.Background()
	env, err := sim.Up(ctx, opts)
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Down(context.Background()); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	h, err := scenario.New(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, ft, err := h.OpenFleetEngine(ctx, filepath.Join(t.TempDir(), "state.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	if opts.Workloads != "none" {
		if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	return &fleetWorld{env: env, h: h, eng: eng, ft: ft}
}

func (w *fleetWorld) options(groups ...string) rollout.Options {
	req := recycle.NewRequest("")
	req.CheckSeconds = 5
	return rollout.Options{
		Selection:   rollout.Selection{Groups: groups, All: true},
		Settings:    rollout.Settings{MaxUnhealthy: rollout.Amount{N: 20, Percent: true}, OnFailure: rollout.OnFailurePause, PauseTimeout: recycle.Duration(time.Hour), CheckSeconds: 1},
		MaxInFlight: rollout.Amount{N: 1},
		Request:     req,
	}
}

// start plans and starts a rollout.
func (w *fleetWorld) start(t *testing.T, o rollout.Options, name string) (*rollout.Plan, engine.Execution) {
	t.Helper()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := w.h.Plan(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	in, err := rollout.StartInput(name, p.Input(o.Request))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := w.eng.Start(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	return p, ex
}

func (w *fleetWorld) progress(t *testing.T, id string) *rollout.Progress {
	t.Helper()
	p, err := rollout.ReadProgress(context.Background(), w.eng, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRolloutSmall(t *testing.T) {
	w := newFleetWorld(t, sim.UpOptions{Nodes: 4, BootDelay: time.Second, JobDuration: 2 * time.Second})
	o := w.options(w.env.Groups[0])
	o.MaxInFlight = rollout.Amount{N: 2}
	p, ex := w.start(t, o, "rollout-small")
	if p.Candidates() != 4 {
		t.Fatalf("plan has %d candidates, want 4", p.Candidates())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fin, err := w.eng.Wait(ctx, ex.ID)
	if err != nil {
		t.Fatalf("wait: %v\n%+v", err, w.progress(t, ex.ID).Nodes)
	}
	pr := w.progress(t, ex.ID)
	if fin.Status != engine.StatusSucceeded || pr.Summary.Replaced != 4 {
		t.Fatalf("rollout %s %s %s; nodes %+v", fin.Status, fin.Error, fin.Cause, pr.Nodes)
	}
}
