package serve

import (
	"context"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/trigger"
)

// Schedule starts a rollout at every time its cron expression names.
type Schedule struct {
	Cron *trigger.Cron
	// Rollout plans the rollout due at at (selection and policies evaluated then):
	// its start input, or a reason to start none (nothing to replace).
	Rollout func(ctx context.Context, at time.Time) (in engine.StartInput, skip string, err error)
}

// ScheduledPrefix starts the name of every scheduled rollout execution; the rest is
// the fire time, so a new leader never starts the same fire twice.
const ScheduledPrefix = "scheduled-rollout-"

// ScheduledName is the execution name of the rollout due at at.
func ScheduledName(at time.Time) string { return ScheduledPrefix + at.UTC().Format("20060102T1504") }

// runSchedule fires the schedule until ctx ends. A fire missed while no leader ran
// is not made up for: the next one comes at its time. A fire while the previous
// scheduled rollout still runs starts nothing (one rollout at a time).
func (l *leader) runSchedule(ctx context.Context) {
	s := l.o.Schedule
	log := l.o.Log.With("schedule", s.Cron.String())
	for {
		next := s.Cron.Next(l.o.Clock.Now())
		if next.IsZero() {
			log.Warn("the schedule names no time in the next 5 years: no scheduled rollout")
			return
		}
		log.Info("next scheduled rollout", "at", next.Format(time.RFC3339))
		l.sleep(ctx, next.Sub(l.o.Clock.Now()))
		if ctx.Err() != nil {
			return
		}
		if id, ok := l.runningScheduled(ctx); ok {
			log.Info("scheduled rollout skipped: the previous one still runs", "execution", id)
			continue
		}
		in, skip, err := s.Rollout(ctx, next)
		switch {
		case err != nil:
			log.Error("scheduled rollout not started", "err", err)
			continue
		case skip != "":
			log.Info("scheduled rollout skipped", "reason", skip)
			continue
		}
		ex, err := l.eng.Start(ctx, in)
		if err != nil {
			log.Error("start scheduled rollout", "err", err)
			continue
		}
		l.o.Metrics.Started(string(trigger.KindSchedule))
		log.Info("scheduled rollout started", "execution", ex.ID, "name", ex.Name)
	}
}

func (l *leader) runningScheduled(ctx context.Context) (string, bool) {
	exs, err := l.eng.List(ctx, engine.ListFilter{Status: engine.StatusRunning})
	if err != nil {
		return "", false
	}
	for _, ex := range exs {
		if strings.HasPrefix(ex.Name, ScheduledPrefix) {
			return ex.ID, true
		}
	}
	return "", false
}
