package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// Executions is what the rollout's tasks need from the workflow engine: start (by
// name, idempotently), look at, wait for and stop executions. *engine.Engine
// implements it; on Step Functions the same calls are StartExecution,
// DescribeExecution, ListExecutions and StopExecution.
type Executions interface {
	Start(ctx context.Context, in engine.StartInput) (engine.Execution, error)
	Describe(ctx context.Context, id string) (engine.Execution, error)
	Wait(ctx context.Context, id string) (engine.Execution, error)
	Stop(ctx context.Context, id, errName, cause string) (engine.Execution, error)
	List(ctx context.Context, f engine.ListFilter) ([]engine.Execution, error)
}

// Tasks are the rollout's task functions. The engine that runs them is also the one
// they start children in, so it is set after it opens (SetExecutions); a task that
// runs before then (resumed at Open) waits for it.
type Tasks struct {
	Cloud   Cloud
	Cluster Cluster
	Clock   clock.PassiveClock
	// Recycle runs the recycle's own tasks (same function resource, other task names).
	Recycle *recycle.Tasks
	// GroupTTL is how long one description of a group serves the gates of that group
	// (they run close together); 0 = 1 s.
	GroupTTL time.Duration

	ready chan struct{}
	once  sync.Once
	exec  Executions

	startMu sync.Mutex // the surge cap: count running recycles and start one, atomically

	mu     sync.Mutex
	inputs map[string]*rolloutInput // rollout execution id → its input (immutable)
	groups map[string]groupHit      // group → recent description
}

// rolloutInput is a rollout's input with its recycles by name.
type rolloutInput struct {
	*Input
	kids map[string]ItemInput
}

type groupHit struct {
	at time.Time
	g  groupState
}

// Task names of the rollout, dispatched by the same function as the recycle's.
const (
	TaskGate  = "RolloutGate"
	TaskAbort = "RolloutAbort"
)

// SetExecutions gives the tasks their engine (once).
func (t *Tasks) SetExecutions(e Executions) {
	t.init()
	t.once.Do(func() {
		t.exec = e
		close(t.ready)
	})
}

func (t *Tasks) init() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ready == nil {
		t.ready = make(chan struct{})
		t.inputs = map[string]*rolloutInput{}
		t.groups = map[string]groupHit{}
	}
}

func (t *Tasks) executions(ctx context.Context) (Executions, error) {
	t.init()
	select {
	case <-t.ready:
		return t.exec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Registry is every resource a rollout and its recycles name: the function (rollout
// and recycle tasks by name), the child-execution integration and StopExecution.
func (t *Tasks) Registry() asl.Registry {
	t.init()
	return asl.Registry{
		recycle.FunctionPlaceholder: t.invoke,
		ResourceStartSync:           t.startSync,
		ResourceStop:                t.stop,
	}
}

// invoke dispatches the function payload: rollout tasks here, the rest to the recycle.
func (t *Tasks) invoke(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
	var head struct {
		Task      string          `json:"task"`
		Execution string          `json:"execution"`
		State     json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, asl.Errorf(recycle.ErrBadInput, "task payload: %v", err)
	}
	var out any
	var err error
	switch head.Task {
	case TaskGate:
		var s IterState
		if err := strictJSON(head.State, &s); err != nil {
			return nil, asl.Errorf(recycle.ErrBadInput, "%s: state: %v", TaskGate, err)
		}
		out, err = t.Gate(ctx, s)
	case TaskAbort:
		var rec abortRecord
		if err := json.Unmarshal(head.State, &rec); err != nil {
			return nil, asl.Errorf(recycle.ErrBadInput, "%s: state: %v", TaskAbort, err)
		}
		out, err = t.abort(ctx, rec)
	default:
		if t.Recycle == nil {
			return nil, asl.Errorf(recycle.ErrBadInput, "unknown task %q", head.Task)
		}
		return t.Recycle.Invoke(ctx, raw)
	}
	if err != nil {
		return nil, transient(head.Task, err)
	}
	return json.Marshal(out)
}

// transient names errors of the APIs a gate reads as retryable: a gate that cannot
// look is retried (and held), never taken as a "go".
func transient(task string, err error) error {
	var named asl.NamedError
	if errors.As(err, &named) || errors.Is(err, context.Canceled) {
		return err
	}
	return &recycle.Error{Name: recycle.ErrTransient, Err: fmt.Errorf("%s: %w", task, err)}
}

func strictJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// startSync is arn:aws:states:::states:startExecution.sync:2 — start the named child
// (or find it: the name is the idempotency key, so a re-run after a crash attaches to
// the child it started before), wait for it, and answer like Step Functions: the
// child's description, with its output as JSON; a child that did not succeed fails
// the task with States.TaskFailed and that description as the cause.
func (t *Tasks) startSync(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
	var p struct {
		StateMachineArn string          `json:"StateMachineArn"`
		Name            string          `json:"Name"`
		Input           json.RawMessage `json:"Input"`
	}
	if err := strictJSON(raw, &p); err != nil {
		return nil, asl.Errorf("States.Runtime", "%s: parameters: %v", ResourceStartSync, err)
	}
	ex, err := t.startChild(ctx, p.StateMachineArn, p.Name, p.Input)
	if err != nil {
		return nil, err
	}
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	fin, err := e.Wait(ctx, ex.ID)
	if err != nil {
		return nil, err
	}
	out, _ := json.Marshal(describeOutput(fin, p.StateMachineArn))
	if fin.Status != engine.StatusSucceeded {
		return nil, asl.Errorf("States.TaskFailed", "%s", out)
	}
	return out, nil
}

// startChild starts (or finds) the named execution of a machine the rollout knows.
func (t *Tasks) startChild(ctx context.Context, arn, name string, input json.RawMessage) (engine.Execution, error) {
	machine := arn[strings.LastIndex(arn, ":")+1:]
	spec, ok := machines()[machine]
	if !ok {
		return engine.Execution{}, asl.Errorf("States.Runtime", "state machine %q: the rollout starts only %s and %s", arn, recycle.StateMachineName, PauseStateMachineName)
	}
	e, err := t.executions(ctx)
	if err != nil {
		return engine.Execution{}, err
	}
	spec.StateMachine, spec.Name, spec.Input = machine, name, input
	ex, err := e.Start(ctx, spec)
	var exists *engine.ExistsError
	if errors.As(err, &exists) && exists.SameRequest {
		// Started by this task before a crash (it may have ended, or be driven by a
		// process that adopted it): attach to it.
		return exists.Existing, nil
	}
	if errors.Is(err, engine.ErrExecutionAlreadyExists) {
		return engine.Execution{}, asl.Errorf("StepFunctions.ExecutionAlreadyExistsException", "%v", err)
	}
	if err != nil {
		return engine.Execution{}, fmt.Errorf("start %s %s: %w", machine, name, err)
	}
	return ex, nil
}

// syncOutput is the shape Step Functions gives a startExecution.sync:2 result.
type syncOutput struct {
	ExecutionArn    string          `json:"ExecutionArn"`
	Name            string          `json:"Name"`
	StateMachineArn string          `json:"StateMachineArn"`
	Status          string          `json:"Status"`
	Input           json.RawMessage `json:"Input,omitempty"`
	Output          json.RawMessage `json:"Output,omitempty"`
	Error           string          `json:"Error,omitempty"`
	Cause           string          `json:"Cause,omitempty"`
	StartDate       time.Time       `json:"StartDate"`
	StopDate        time.Time       `json:"StopDate,omitzero"`
}

func describeOutput(ex engine.Execution, arn string) syncOutput {
	return syncOutput{ExecutionArn: ex.ID, Name: ex.Name, StateMachineArn: arn, Status: string(ex.Status),
		Output: ex.Output, Error: ex.Error, Cause: ex.Cause, StartDate: ex.StartTime, StopDate: ex.StopTime}
}

// stop is arn:aws:states:::aws-sdk:sfn:stopExecution. Stopping an execution that
// already ended is success (the rollout asks again after a crash).
func (t *Tasks) stop(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
	var p struct {
		ExecutionArn string `json:"ExecutionArn"`
		Error        string `json:"Error"`
		Cause        string `json:"Cause"`
	}
	if err := strictJSON(raw, &p); err != nil {
		return nil, asl.Errorf("States.Runtime", "%s: parameters: %v", ResourceStop, err)
	}
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	ex, err := e.Stop(ctx, p.ExecutionArn, p.Error, p.Cause)
	if err != nil && !errors.Is(err, engine.ErrNotRunning) {
		return nil, fmt.Errorf("stop %s: %w", p.ExecutionArn, err)
	}
	return json.Marshal(map[string]any{"StopDate": ex.StopTime})
}

// input returns a rollout's (immutable) input, read once per process.
func (t *Tasks) input(ctx context.Context, rolloutID string) (*rolloutInput, error) {
	t.init()
	t.mu.Lock()
	in, ok := t.inputs[rolloutID]
	t.mu.Unlock()
	if ok {
		return in, nil
	}
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	ex, err := e.Describe(ctx, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("describe rollout %s: %w", rolloutID, err)
	}
	in = &rolloutInput{Input: &Input{}}
	if err := json.Unmarshal(ex.Input, in.Input); err != nil {
		return nil, asl.Errorf(recycle.ErrBadInput, "rollout %s input: %v", rolloutID, err)
	}
	in.kids = in.children()
	t.mu.Lock()
	t.inputs[rolloutID] = in
	t.mu.Unlock()
	return in, nil
}

// running lists the running executions of machine that belong to a rollout: their
// name starts with prefix, or (when names is set) is one of names.
func (t *Tasks) running(ctx context.Context, machine, prefix string, names map[string]ItemInput) ([]engine.Execution, error) {
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	all, err := e.List(ctx, engine.ListFilter{StateMachine: machine, Status: engine.StatusRunning, NamePrefix: prefix})
	if err != nil {
		return nil, fmt.Errorf("list running %s: %w", machine, err)
	}
	if names == nil {
		return all, nil
	}
	var out []engine.Execution
	for _, ex := range all {
		if _, ok := names[ex.Name]; ok {
			out = append(out, ex)
		}
	}
	return out, nil
}

// abortRecord is the engine's input to the abort machine.
type abortRecord struct {
	Execution struct {
		ID    string          `json:"Id"`
		Name  string          `json:"Name"`
		Input json.RawMessage `json:"Input"`
	} `json:"Execution"`
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// AbortResult is what the abort machine did.
type AbortResult struct {
	StoppedRecycles []string `json:"stoppedRecycles,omitempty"`
	StoppedPauses   []string `json:"stoppedPauses,omitempty"`
	Uncordoned      []string `json:"uncordoned,omitempty"`
}

// abort stops what an aborted rollout left running: its recycles (each starts its own
// rollback), its pauses, and its batch cordons. Idempotent.
func (t *Tasks) abort(ctx context.Context, rec abortRecord) (*AbortResult, error) {
	e, err := t.executions(ctx)
	if err != nil {
		return nil, err
	}
	name := rec.Execution.Name
	res := &AbortResult{}
	cause := fmt.Sprintf("rollout %s was aborted (%s: %s)", name, rec.Error, rec.Cause)
	var in Input
	if err := json.Unmarshal(rec.Execution.Input, &in); err != nil {
		return nil, asl.Errorf(recycle.ErrBadInput, "aborted rollout's input: %v", err)
	}
	for _, spec := range []struct {
		machine, prefix string
		names           map[string]ItemInput
		into            *[]string
	}{{recycle.StateMachineName, "", in.children(), &res.StoppedRecycles}, {PauseStateMachineName, pausePrefix(name), nil, &res.StoppedPauses}} {
		run, err := t.running(ctx, spec.machine, spec.prefix, spec.names)
		if err != nil {
			return nil, err
		}
		for _, ex := range run {
			if _, err := e.Stop(ctx, ex.ID, recycle.ErrAborted, cause); err != nil && !errors.Is(err, engine.ErrNotRunning) {
				return nil, fmt.Errorf("stop %s: %w", ex.Name, err)
			}
			*spec.into = append(*spec.into, ex.Name)
		}
	}
	if !in.Rollout.FenceBatch {
		return res, nil
	}
	nodes, err := t.Cluster.Nodes(ctx, "")
	if err != nil {
		return nil, err
	}
	for i := range nodes {
		if bc, ok := batchCordon(&nodes[i]); ok && bc == rec.Execution.ID {
			if err := t.Cluster.UncordonForBatch(ctx, nodes[i].Name, rec.Execution.ID); err != nil {
				return nil, err
			}
			res.Uncordoned = append(res.Uncordoned, nodes[i].Name)
		}
	}
	return res, nil
}
