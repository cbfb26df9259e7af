package cloud

import (
	"errors"
	"fmt"
)

// Sentinel errors of the port. Every error a Provider returns wraps at most one of
// them (test with errors.Is), plus the provider's own cause for the log.
var (
	// ErrNotFound: the thing is gone (terminated long ago, deleted, never existed).
	// A workflow treats it as "nothing left to do" or "stop", never as retryable.
	ErrNotFound = errors.New("not found")
	// ErrValidation: wrong input or a state the call does not accept (malformed id,
	// instance Pending, min size would be violated). Retrying the same call cannot help.
	ErrValidation = errors.New("invalid request")
	// ErrNoHeadroom: the group is at MaxSize, so no replacement can be launched and
	// the caller did not allow raising MaxSize.
	ErrNoHeadroom = errors.New("no headroom: group is at its maximum size")
	// ErrNotInGroup: the instance exists but belongs to no Auto Scaling group (or to
	// another group than the one named).
	ErrNotInGroup = errors.New("instance is not in the Auto Scaling group")
	// ErrLaunchFailed: the group tried to launch the replacement and the scaling
	// activity failed; waiting longer will not produce it. See LaunchFailedError.
	ErrLaunchFailed = errors.New("replacement launch failed")
	// ErrThrottled: the cloud refused for rate reasons even after the client's own
	// retries. Retryable later.
	ErrThrottled = errors.New("throttled")
	// ErrNotYet: an instance is between two states (EnteringStandby, Pending:*,
	// Detaching) and the call needs the state after it. Not a failure: call again
	// shortly. See NotYetError.
	ErrNotYet = errors.New("not yet")
)

// NotYetError says which instance is in which in-between state, and what the call
// waits for. errors.Is(err, ErrNotYet) is true.
type NotYetError struct {
	InstanceID string
	State      string // the lifecycle state it is in now
	Waiting    string // what the caller waits for, in words
}

func (e *NotYetError) Error() string {
	return fmt.Sprintf("instance %s is %s: %s", e.InstanceID, e.State, e.Waiting)
}

// Is makes errors.Is(err, ErrNotYet) work.
func (e *NotYetError) Is(target error) bool { return target == ErrNotYet }

// LaunchFailedError carries the failed scaling activity, whose StatusMessage says why
// (capacity, quota, bad AMI, …). errors.Is(err, ErrLaunchFailed) is true.
type LaunchFailedError struct {
	Group    string
	Activity ScalingActivity
}

func (e *LaunchFailedError) Error() string {
	return fmt.Sprintf("group %s: launch failed (activity %s, %s): %s",
		e.Group, e.Activity.ID, e.Activity.Status, e.Activity.StatusMessage)
}

// Is makes errors.Is(err, ErrLaunchFailed) work.
func (e *LaunchFailedError) Is(target error) bool { return target == ErrLaunchFailed }

// RetryableError marks an error that is worth retrying later (throttling after the
// client's own retries, 5xx, ResourceContention, ScalingActivityInProgress, network).
type RetryableError struct{ Err error }

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// IsRetryable reports whether the same call may succeed if made again later. Typed
// outcomes (ErrNotFound, ErrValidation, ErrNoHeadroom, ErrNotInGroup, ErrLaunchFailed)
// are never retryable; ErrThrottled always is.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	for _, final := range []error{ErrNotFound, ErrValidation, ErrNoHeadroom, ErrNotInGroup, ErrLaunchFailed} {
		if errors.Is(err, final) {
			return false
		}
	}
	if errors.Is(err, ErrThrottled) || errors.Is(err, ErrNotYet) {
		return true
	}
	var r *RetryableError
	return errors.As(err, &r)
}

// ErrorName is the stable name of err's class, for workflow Retry/Catch matching and
// metrics labels: "NotFound", "Validation", "NoHeadroom", "NotInGroup", "LaunchFailed",
// "Throttled", "NotYet", "Retryable", or "Unknown".
func ErrorName(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return "NotFound"
	case errors.Is(err, ErrValidation):
		return "Validation"
	case errors.Is(err, ErrNoHeadroom):
		return "NoHeadroom"
	case errors.Is(err, ErrNotInGroup):
		return "NotInGroup"
	case errors.Is(err, ErrLaunchFailed):
		return "LaunchFailed"
	case errors.Is(err, ErrThrottled):
		return "Throttled"
	case errors.Is(err, ErrNotYet):
		return "NotYet"
	case IsRetryable(err):
		return "Retryable"
	}
	return "Unknown"
}
