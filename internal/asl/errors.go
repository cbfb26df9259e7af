package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Error names defined by the States Language and Step Functions.
const (
	ErrAll                    = "States.ALL"
	ErrTaskFailed             = "States.TaskFailed"
	ErrTimeout                = "States.Timeout"
	ErrHeartbeatTimeout       = "States.HeartbeatTimeout"
	ErrRuntime                = "States.Runtime"
	ErrResultPathMatchFailure = "States.ResultPathMatchFailure"
	ErrParameterPathFailure   = "States.ParameterPathFailure"
	ErrBranchFailed           = "States.BranchFailed"
	ErrNoChoiceMatched        = "States.NoChoiceMatched"
	ErrIntrinsicFailure       = "States.IntrinsicFailure"
	ErrExceedToleratedFailure = "States.ExceedToleratedFailureThreshold"
	ErrItemReaderFailed       = "States.ItemReaderFailed"
	ErrPermissions            = "States.Permissions"
	ErrDataLimitExceeded      = "States.DataLimitExceeded"
)

// Error is an error with an ASL error name. Task functions return it (or any
// NamedError) to fail with a name that Retry and Catch can match.
type Error struct {
	Name  string
	Cause string
}

func (e *Error) Error() string {
	if e.Cause == "" {
		return e.Name
	}
	return e.Name + ": " + e.Cause
}

// ErrorName implements NamedError.
func (e *Error) ErrorName() string { return e.Name }

// Errorf returns an *Error named name whose cause is the formatted message.
func Errorf(name, format string, args ...any) error {
	return &Error{Name: name, Cause: fmt.Sprintf(format, args...)}
}

// ExecutionError is how Runner.Run reports a failed execution: the error name and
// cause of the failure that ended it (a Fail state or an unhandled error).
type ExecutionError struct {
	Name  string
	Cause string
}

func (e *ExecutionError) Error() string {
	if e.Cause == "" {
		return "execution failed: " + e.Name
	}
	return "execution failed: " + e.Name + ": " + e.Cause
}

// ErrorName implements NamedError, so a failed sub-execution can be handed on as is.
func (e *ExecutionError) ErrorName() string { return e.Name }

// ErrorName returns the ASL error name of a Task's error: the name of a NamedError
// in its chain; States.Timeout for context.DeadlineExceeded; else States.TaskFailed.
func ErrorName(err error) string {
	var ne NamedError
	if errors.As(err, &ne) {
		if n := ne.ErrorName(); n != "" {
			return n
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ErrTaskFailed
}

// errorCause is the Cause recorded for a Task's error.
func errorCause(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Cause
	}
	var ee *ExecutionError
	if errors.As(err, &ee) {
		return ee.Cause
	}
	return err.Error()
}

// Invoke runs the function registered for resource. An unknown resource is an
// *Error named States.Runtime: the definition names a task this binary does not
// have, which no Retry or Catch can fix.
// A task's own error is returned unwrapped: its message becomes the ASL Cause.
func (r Registry) Invoke(ctx context.Context, resource string, input json.RawMessage) (json.RawMessage, error) {
	f, ok := r[resource]
	if !ok || f == nil {
		return nil, Errorf(ErrRuntime, "no task is registered for resource %q", resource)
	}
	out, err := f(ctx, input)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		out = json.RawMessage("null")
	}
	return out, nil
}

// stateError is a failure while evaluating a state: an ASL error name and cause.
type stateError struct {
	name  string
	cause string
}

func runtimeErr(format string, args ...any) *stateError {
	return &stateError{name: ErrRuntime, cause: fmt.Sprintf(format, args...)}
}

func intrinsicErr(format string, args ...any) *stateError {
	return &stateError{name: ErrIntrinsicFailure, cause: fmt.Sprintf(format, args...)}
}
