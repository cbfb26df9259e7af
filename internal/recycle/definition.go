package recycle

import (
	_ "embed"
	"fmt"
	"strings"
)

// FunctionPlaceholder stands where the deployed definition names the Lambda function.
// It is ARN-shaped so that schema validators (asl-validator) accept the definition as is.
// Deploying substitutes the function's ARN; the embedded engine registers the same
// string for its local dispatcher, so one definition serves both engines.
const FunctionPlaceholder = "arn:aws:lambda:${Region}:${AccountId}:function:${FunctionName}"

// StateMachineName names the recycle workflow in both engines.
const StateMachineName = "recycler-recycle"

//go:embed statemachine.asl.json
var definition string

// Definition returns the recycle state machine as ASL JSON. With a non-empty
// functionARN the placeholder is replaced, ready for Step Functions.
func Definition(functionARN string) ([]byte, error) { return withFunction(definition, functionARN) }

// MaxTaskSeconds bounds every Task's TimeoutSeconds: below the Lambda's 900-second
// limit (the module deploys the function with timeout 900), so a hung invocation ends
// as States.Timeout, which every Task retries, never as the function's own timeout
// (reported as Lambda.Unknown, which would roll back).
const MaxTaskSeconds = 840

func withFunction(def, functionARN string) ([]byte, error) {
	if functionARN == "" {
		return []byte(def), nil
	}
	if !strings.HasPrefix(functionARN, "arn:") {
		return nil, fmt.Errorf("function ARN %q: expected an ARN such as arn:aws:lambda:eu-west-1:123456789012:function:recycler", functionARN)
	}
	return []byte(strings.ReplaceAll(def, FunctionPlaceholder, functionARN)), nil
}

// RollbackStateMachineName names the machine the embedded engine runs when a recycle
// is aborted.
const RollbackStateMachineName = "recycler-rollback"

//go:embed rollback.asl.json
var rollbackDefinition string

// RollbackDefinition returns the abort state machine: one Rollback task over the
// aborted execution's last recorded state.
func RollbackDefinition() []byte { return []byte(rollbackDefinition) }

// DeployedRollbackDefinition returns the abort state machine with the placeholder
// replaced by functionARN, as deployed to Step Functions (`recycler asl --rollback`).
func DeployedRollbackDefinition(functionARN string) ([]byte, error) {
	if functionARN == "" {
		return nil, fmt.Errorf("the rollback state machine for Step Functions needs the function ARN")
	}
	return withFunction(rollbackDefinition, functionARN)
}
