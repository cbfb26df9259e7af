package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Runner executes a machine in memory: the reference driver of Enter, AfterWait,
// TaskDone and BranchesDone, used by tests and where durability is not needed.
// Waits and retry delays use Clock, so tests drive time with a fake clock; Parallel
// branches and Map iterations run concurrently, at most MaxConcurrency at once.
type Runner struct {
	Registry Registry
	Clock    clock.WithTicker
	// Rand, if set, is Context.Rand for every step (jitter, States.UUID, MathRandom).
	Rand func() float64
	// Name is the execution name ($$.Execution.Name and Id).
	Name string
}

// Run executes m with input and returns its output, or an *ExecutionError when
// the machine fails (or exceeds its TimeoutSeconds: States.Timeout). Another error
// means ctx ended first.
func (r *Runner) Run(ctx context.Context, m *Machine, input json.RawMessage) (json.RawMessage, error) {
	if len(input) == 0 {
		input = json.RawMessage("{}")
	}
	if _, err := decodeJSON(input); err != nil {
		return nil, fmt.Errorf("execution input is not valid JSON: %w", err)
	}
	if r.Clock == nil {
		return nil, errors.New("asl.Runner needs a Clock")
	}
	base := Context{
		ExecutionID:    "local:" + r.Name,
		ExecutionName:  r.Name,
		ExecutionInput: input,
		StartTime:      r.Clock.Now(),
		Rand:           r.Rand,
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timedOut := make(chan struct{})
	if m.TimeoutSeconds() > 0 {
		t := r.Clock.NewTimer(time.Duration(m.TimeoutSeconds()) * time.Second)
		defer t.Stop()
		go func() {
			select {
			case <-t.C():
				close(timedOut)
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	out, execErr := r.run(ctx, m, input, base)
	select {
	case <-timedOut:
		return nil, &ExecutionError{Name: ErrTimeout, Cause: fmt.Sprintf("the execution ran longer than its TimeoutSeconds (%d)", m.TimeoutSeconds())}
	default:
	}
	if execErr != nil {
		return nil, execErr
	}
	return out, nil
}

func (r *Runner) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-r.Clock.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run drives one (sub-)machine to its end. The error is an *ExecutionError, or
// ctx's error.
func (r *Runner) run(ctx context.Context, m *Machine, input json.RawMessage, base Context) (json.RawMessage, error) {
	cur := Cursor{State: m.StartAt(), Input: input}
	entered := r.Clock.Now()
	for {
		c := base
		c.Now, c.EnteredTime = r.Clock.Now(), entered
		act, err := m.Enter(cur, c)
		// Follow-up actions of the same state (after a wait, task or branches) loop here;
		// a transition or retry goes back to Enter.
	state:
		for {
			if err != nil {
				return nil, &ExecutionError{Name: ErrRuntime, Cause: err.Error()}
			}
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			switch act.Kind {
			case ActNext:
				cur = Cursor{State: act.Next, Input: act.Output}
				entered = r.Clock.Now()
				break state
			case ActSucceed:
				return act.Output, nil
			case ActFail:
				return nil, &ExecutionError{Name: act.Error, Cause: act.Cause}
			case ActWait:
				if err := r.sleep(ctx, act.Until.Sub(r.Clock.Now())); err != nil {
					return nil, err
				}
				c.Now = r.Clock.Now()
				act, err = m.AfterWait(cur, c)
			case ActTask:
				res, terr := r.invoke(ctx, act)
				if cerr := ctx.Err(); cerr != nil {
					return nil, cerr
				}
				c.Now = r.Clock.Now()
				act, err = m.TaskDone(cur, c, res, terr)
			case ActBranches:
				results, berr := r.branches(ctx, act, base)
				if berr != nil {
					return nil, berr
				}
				c.Now = r.Clock.Now()
				act, err = m.BranchesDone(cur, c, results)
			case ActRetry:
				if err := r.sleep(ctx, act.Delay); err != nil {
					return nil, err
				}
				cur.Retries = act.Retries
				break state
			default:
				return nil, &ExecutionError{Name: ErrRuntime, Cause: fmt.Sprintf("unknown action %v", act.Kind)}
			}
		}
	}
}

// invoke runs a Task, failing it with States.Timeout when it outlives act.Timeout
// on the Runner's clock (the task's ctx is cancelled then).
func (r *Runner) invoke(ctx context.Context, act Action) (json.RawMessage, error) {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		out json.RawMessage
		err error
	}
	// The timer starts before the task, so time the task spends is always counted.
	var timeout <-chan time.Time
	if act.Timeout > 0 {
		t := r.Clock.NewTimer(act.Timeout)
		defer t.Stop()
		timeout = t.C()
	}
	done := make(chan result, 1)
	go func() {
		out, err := r.Registry.Invoke(tctx, act.Resource, act.TaskInput)
		done <- result{out, err}
	}()
	select {
	case res := <-done:
		return res.out, res.err
	case <-timeout:
		return nil, Errorf(ErrTimeout, "the task did not finish within %s", act.Timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *Runner) branches(ctx context.Context, act Action, base Context) ([]BranchResult, error) {
	results := make([]BranchResult, len(act.Branches))
	limit := act.MaxConcurrency
	if limit <= 0 || limit > len(act.Branches) {
		limit = len(act.Branches)
	}
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ctxErr error
	for i, b := range act.Branches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			sub := base
			sub.MapItemIndex, sub.MapItemValue = nil, nil
			out, err := r.run(ctx, b.Machine, b.Input, sub)
			var ee *ExecutionError
			switch {
			case err == nil:
				results[i] = BranchResult{Output: out}
			case errors.As(err, &ee):
				results[i] = BranchResult{Error: ee.Name, Cause: ee.Cause}
			default:
				mu.Lock()
				ctxErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ctxErr != nil {
		return nil, ctxErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}
