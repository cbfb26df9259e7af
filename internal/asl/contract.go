// Package asl implements the Amazon States Language: parsing and validating a state
// machine, and evaluating one transition at a time as a pure function.
//
// The package never sleeps, never starts goroutines for waiting and never stores
// anything: it tells its caller what to do next (an Action) and the caller (the
// in-memory Runner in this package, or the durable engine in internal/engine) does
// it, persists it, and calls back with the result. That split is what lets the
// durable engine write every transition before it acts and resume after a crash.
//
// CONTRACT (the engine is written against these declarations; keep them stable):
//
//	m, err := asl.Parse(definitionJSON)            // validates; errors name the state and field
//	cur := asl.Cursor{State: m.StartAt(), Input: input}
//	for {
//	    act, err := m.Enter(cur, ctx)               // what the state wants
//	    switch act.Kind {
//	    case asl.ActNext:      cur = asl.Cursor{State: act.Next, Input: act.Output}
//	    case asl.ActSucceed:   done(act.Output)
//	    case asl.ActFail:      failed(act.Error, act.Cause)
//	    case asl.ActWait:      sleep until act.Until; act, err = m.AfterWait(cur, ctx)   // then handle act
//	    case asl.ActTask:      res, terr := registry.Invoke(...); act, err = m.TaskDone(cur, ctx, res, terr)
//	    case asl.ActBranches:  run each act.Branches[i] as a sub-execution (≤ act.MaxConcurrency at once);
//	                           act, err = m.BranchesDone(cur, ctx, results)
//	    case asl.ActRetry:     sleep act.Delay; cur.Retries = act.Retries; re-Enter the same state
//	    }
//	}
//
// TaskDone and BranchesDone apply ResultSelector/ResultPath/OutputPath on success and
// Retry/Catch on error, so they return ActNext/ActSucceed, ActRetry, or ActFail.
// An error returned by Enter/AfterWait/TaskDone/BranchesDone (as opposed to an
// ActFail action) means the definition itself is broken at run time; callers treat it
// like ActFail with Error "States.Runtime" — the methods already map path and
// intrinsic errors to ActFail{States.Runtime} where Step Functions would, so a
// returned error is a bug, not a normal outcome.
package asl

import (
	"context"
	"encoding/json"
	"time"
)

// ActionKind says what the caller must do next.
type ActionKind int

const (
	// ActNext: move to state Next with input Output.
	ActNext ActionKind = iota + 1
	// ActSucceed: the (sub-)machine ended successfully with Output.
	ActSucceed
	// ActFail: the (sub-)machine ended with Error and Cause.
	ActFail
	// ActWait: wait until Until, then call AfterWait with the same cursor.
	ActWait
	// ActTask: invoke Resource with TaskInput (Parameters already applied), bounded by
	// Timeout (0 = none) and Heartbeat (0 = none), then call TaskDone.
	ActTask
	// ActBranches: run Branches (Parallel branches or Map iterations) and call
	// BranchesDone with their results in the same order.
	ActBranches
	// ActRetry: wait Delay, then Enter the same state again with Cursor.Retries = Retries.
	ActRetry
)

func (k ActionKind) String() string {
	switch k {
	case ActNext:
		return "Next"
	case ActSucceed:
		return "Succeed"
	case ActFail:
		return "Fail"
	case ActWait:
		return "Wait"
	case ActTask:
		return "Task"
	case ActBranches:
		return "Branches"
	case ActRetry:
		return "Retry"
	}
	return "Unknown"
}

// Action is the result of evaluating one step of a state.
type Action struct {
	Kind ActionKind

	Next   string          // ActNext
	Output json.RawMessage // ActNext, ActSucceed

	Error string // ActFail
	Cause string // ActFail

	Until time.Time // ActWait (absolute, computed from the Context's Now)

	Resource  string          // ActTask
	TaskInput json.RawMessage // ActTask
	Timeout   time.Duration   // ActTask: TimeoutSeconds/TimeoutSecondsPath; 0 = none
	Heartbeat time.Duration   // ActTask: HeartbeatSeconds/HeartbeatSecondsPath; 0 = none

	Branches       []Branch // ActBranches
	MaxConcurrency int      // ActBranches: 0 = unlimited

	Delay   time.Duration // ActRetry (jitter already applied, using Context.Rand)
	Retries []int         // ActRetry: new per-retrier attempt counts to store in the cursor
}

// Branch is one Parallel branch or one Map iteration to run as a sub-execution.
type Branch struct {
	Machine *Machine        // the branch's own (already validated) machine
	Input   json.RawMessage // the branch's input (ItemSelector / Parameters applied)
	Index   int             // Parallel branch index or Map item index
}

// BranchResult is the outcome of one Branch, passed back to BranchesDone.
type BranchResult struct {
	Output json.RawMessage // on success
	Error  string          // non-empty on failure
	Cause  string
}

// Cursor is everything the caller persists about an in-flight state: enough to
// re-evaluate it after a restart.
type Cursor struct {
	State   string          `json:"state"`
	Input   json.RawMessage `json:"input"`             // the state's raw input
	Retries []int           `json:"retries,omitempty"` // attempts used per Retry rule of this state
}

// Context carries the context object ($$) and the sources of time and randomness, so
// evaluation stays deterministic under test.
type Context struct {
	ExecutionID    string          // $$.Execution.Id
	ExecutionName  string          // $$.Execution.Name
	ExecutionInput json.RawMessage // $$.Execution.Input
	StartTime      time.Time       // $$.Execution.StartTime
	StateMachineID string          // $$.StateMachine.Id
	StateMachine   string          // $$.StateMachine.Name
	EnteredTime    time.Time       // $$.State.EnteredTime
	RetryCount     int             // $$.State.RetryCount
	TaskToken      string          // $$.Task.Token
	MapItemIndex   *int            // $$.Map.Item.Index inside a Map iteration
	MapItemValue   json.RawMessage // $$.Map.Item.Value inside a Map iteration

	Now  time.Time      // used for Wait.Until and timestamps
	Rand func() float64 // in [0,1): jitter and States.UUID; nil = math/rand/v2
}

// TaskFunc is one Task resource. Contract: it must be idempotent — the durable engine
// re-runs a Task that was in flight when the process died — and bounded: it returns
// within ctx's deadline. A returned error is matched by Retry/Catch by its ASL name
// (see ErrorName).
type TaskFunc func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)

// NamedError is implemented by errors that carry their own ASL error name
// (e.g. "Recycler.NotReady"); Retry/Catch match on it.
type NamedError interface {
	error
	ErrorName() string
}

// Registry maps Task Resource strings to functions.
type Registry map[string]TaskFunc

// The methods below are implemented in the package's other files:
//
//	func Parse(definition []byte) (*Machine, error)
//	func (m *Machine) StartAt() string
//	func (m *Machine) Comment() string
//	func (m *Machine) TimeoutSeconds() int             // top-level TimeoutSeconds; 0 = none
//	func (m *Machine) Definition() json.RawMessage     // the definition as parsed
//	func (m *Machine) States() []string                // state names, for validation and tools
//	func (m *Machine) Enter(cur Cursor, c Context) (Action, error)
//	func (m *Machine) AfterWait(cur Cursor, c Context) (Action, error)
//	func (m *Machine) TaskDone(cur Cursor, c Context, result json.RawMessage, taskErr error) (Action, error)
//	func (m *Machine) BranchesDone(cur Cursor, c Context, results []BranchResult) (Action, error)
//	func ErrorName(err error) string                   // NamedError → its name; context.DeadlineExceeded → States.Timeout; else States.TaskFailed
//	func (r Registry) Invoke(ctx context.Context, resource string, input json.RawMessage) (json.RawMessage, error)
//	                                                  // unknown resource → NamedError "States.Runtime"… (documented)
//	type Runner struct{ Registry Registry; Clock clock.WithTicker }  // in-memory, for tests and the Lambda-free path
//	func (r *Runner) Run(ctx context.Context, m *Machine, input json.RawMessage) (output json.RawMessage, err error)
//	                                                  // err is *ExecutionError{Name, Cause} when the machine fails (see engine notes)
