package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"

	"github.com/recycler/recycler/internal/cloud"
)

// Error codes the provider tells apart. Auto Scaling reports most refusals as
// ValidationError and puts the reason in the message only.
const (
	codeValidation        = "ValidationError"
	codeResourceContent   = "ResourceContention"
	codeActivityInProg    = "ScalingActivityInProgress"
	codeInstanceNotFound  = "InvalidInstanceID.NotFound"
	codeInstanceMalformed = "InvalidInstanceID.Malformed"
	codeIncorrectState    = "IncorrectInstanceState"
)

// retryableCodes are retried by the SDK retryer on top of its defaults (throttling,
// 5xx, transient network errors): Auto Scaling returns these while another change to
// the same group is still in flight.
var retryableCodes = map[string]struct{}{
	codeResourceContent: {},
	codeActivityInProg:  {},
}

var (
	throttleCheck  = retry.IsErrorThrottles(retry.DefaultThrottles)
	retryableCheck = retry.IsErrorRetryables(append([]retry.IsErrorRetryable{
		retry.RetryableErrorCode{Codes: retryableCodes},
	}, retry.DefaultRetryables...))
)

func apiCode(err error) (code, msg string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	return "", ""
}

// classify maps an SDK error to the port's typed errors, keeping the original in
// the chain for logs. what says what was being done ("enter standby i-…").
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	code, msg := apiCode(err)
	lmsg := strings.ToLower(msg)
	switch {
	case code == codeInstanceNotFound || strings.HasSuffix(code, ".NotFound") || strings.HasSuffix(code, "NotFoundException"):
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrNotFound, err)
	case code == codeInstanceMalformed || strings.HasSuffix(code, ".Malformed"):
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrValidation, err)
	case code == codeValidation && strings.Contains(lmsg, "not part of"):
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrNotInGroup, err)
	case code == codeValidation && (strings.Contains(lmsg, "not found") || strings.Contains(lmsg, "no active lifecycle action")):
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrNotFound, err)
	case code == codeValidation || code == codeIncorrectState:
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrValidation, err)
	}
	if throttleCheck.IsErrorThrottle(err).Bool() {
		return fmt.Errorf("%s: %w: %w", what, cloud.ErrThrottled, err)
	}
	if retryableCheck.IsErrorRetryable(err).Bool() {
		return fmt.Errorf("%s: %w", what, &cloud.RetryableError{Err: err})
	}
	var re *retry.MaxAttemptsError
	if errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, &cloud.RetryableError{Err: err})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isNoActiveLifecycleAction: AWS answers RecordLifecycleActionHeartbeat and
// CompleteLifecycleAction for an action that is already over with
// ValidationError "No active Lifecycle Action found with instance ID i-…".
func isNoActiveLifecycleAction(err error) bool {
	code, msg := apiCode(err)
	return code == codeValidation && strings.Contains(strings.ToLower(msg), "no active lifecycle action")
}
