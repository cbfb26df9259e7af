package cli

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/pflag"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/stepfn"
)

// executions is what the recycle and execution commands need from where executions
// run: the embedded engine (*engine.Engine) or AWS Step Functions (*stepfn.Client).
type executions interface {
	Start(ctx context.Context, in engine.StartInput) (engine.Execution, error)
	Describe(ctx context.Context, id string) (engine.Execution, error)
	History(ctx context.Context, id string) ([]engine.Event, error)
	List(ctx context.Context, f engine.ListFilter) ([]engine.Execution, error)
	Stop(ctx context.Context, id, errName, cause string) (engine.Execution, error)
	Wait(ctx context.Context, id string) (engine.Execution, error)
	Watch(ctx context.Context, id string, fn func(engine.Event) error) error
}

var (
	_ executions = (*engine.Engine)(nil)
	_ executions = (*stepfn.Client)(nil)
)

const (
	engineLocal         = "local"
	engineStepFunctions = "stepfunctions"
)

// engineFlags choose where executions run.
type engineFlags struct {
	engine          string
	stateMachine    string
	rollbackMachine string
}

func (e *engineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&e.engine, "engine", engineLocal, "where executions run: local (the embedded engine, --state) or stepfunctions (AWS Step Functions, --state-machine)")
	fs.StringVar(&e.stateMachine, "state-machine", "", "with --engine stepfunctions: ARN of the recycle state machine (the Terraform module's recycle_state_machine_arn)")
	fs.StringVar(&e.rollbackMachine, "rollback-state-machine", "", "with --engine stepfunctions: ARN of the rollback state machine an abort starts (default: the recycle machine's ARN with -recycle → -rollback)")
}

func (e *engineFlags) onStepFunctions() bool { return e.engine == engineStepFunctions }

// stepFunctions validates the engine flags and connects to Step Functions with the
// SDK's standard configuration (AWS_REGION, AWS_ENDPOINT_URL, profiles, …).
func (e *engineFlags) stepFunctions(ctx context.Context) (*stepfn.Client, error) {
	if e.stateMachine == "" {
		return nil, usageError{fmt.Errorf("--engine stepfunctions needs --state-machine ARN (or RECYCLER_STATE_MACHINE): the recycle state machine the Terraform module deployed")}
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws: load AWS configuration: %w", err)
	}
	c, err := stepfn.New(cfg, stepfn.Options{StateMachineARN: e.stateMachine, RollbackStateMachineARN: e.rollbackMachine})
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

func (e *engineFlags) validate() error {
	switch e.engine {
	case engineLocal:
		if e.stateMachine != "" {
			return usageError{fmt.Errorf("--state-machine is for --engine stepfunctions; the local engine runs the built-in definition")}
		}
	case engineStepFunctions:
	default:
		return usageError{fmt.Errorf("--engine %q: use local or stepfunctions", e.engine)}
	}
	return nil
}
