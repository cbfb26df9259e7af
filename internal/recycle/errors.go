package recycle

import (
	"errors"
	"fmt"
)

// ASL error names the state machine's Retry and Catch match on. A task returns an
// *Error; both engines report its Name as the ASL error.
const (
	// ErrBadInput: the request is invalid. Nothing changed.
	ErrBadInput = "Recycler.BadInput"
	// ErrPrecondition: a precondition is not met (no headroom, already being
	// recycled, instance not InService, …). Nothing changed.
	ErrPrecondition = "Recycler.Precondition"
	// ErrTransient: throttling, conflicts, 5xx — retried by the state machine.
	ErrTransient = "Recycler.Transient"
	// ErrReplacementTimeout: no Ready replacement before --replacement-timeout.
	ErrReplacementTimeout = "Recycler.ReplacementTimeout"
	// ErrLaunchFailed: the group reported a failed launch for the replacement.
	ErrLaunchFailed = "Recycler.LaunchFailed"
	// ErrDrainTimeout: selected pods still running at --max-wait with --on-timeout=fail.
	ErrDrainTimeout = "Recycler.DrainTimeout"
	// ErrWorkloadTimeout: moved workloads not Ready again before --workload-timeout.
	ErrWorkloadTimeout = "Recycler.WorkloadTimeout"
	// ErrAborted: a person aborted the execution.
	ErrAborted = "Recycler.Aborted"
	// ErrRollbackFailed: rollback could not finish; a person must look.
	ErrRollbackFailed = "Recycler.RollbackFailed"
	// ErrRetireTimeout: AWS still holds the old instance between two states
	// (EnteringStandby, Detaching) at Retire's deadline.
	ErrRetireTimeout = "Recycler.RetireTimeout"
	// ErrRollbackTimeout: the rollback still waits at its deadline; a person must look.
	ErrRollbackTimeout = "Recycler.RollbackTimeout"
)

// Error is a task failure with an ASL error name.
type Error struct {
	Name string
	Err  error
}

func (e *Error) Error() string     { return e.Err.Error() }
func (e *Error) Unwrap() error     { return e.Err }
func (e *Error) ErrorName() string { return e.Name }

func newError(name, format string, args ...any) *Error {
	return &Error{Name: name, Err: fmt.Errorf(format, args...)}
}

// ErrorNameOf returns the ASL name carried by err, or "" when it has none.
func ErrorNameOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Name
	}
	return ""
}
