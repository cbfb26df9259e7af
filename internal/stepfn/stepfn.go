// Package stepfn runs recycles on AWS Step Functions: the execution operations the
// CLI uses with the embedded engine (Start, Describe, History, List, Stop, Wait,
// Watch), over the unmodified aws-sdk-go-v2 sfn client, with the same types
// (engine.Execution, engine.Event). Step Functions' history is translated into the
// engine's event shapes, so the progress view, `status` and `history` read both the
// same way. An abort stops the execution and starts the rollback state machine with
// the engine's abort record, as the embedded engine does. docs/stepfunctions.md.
package stepfn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// Options configure a Client.
type Options struct {
	// StateMachineARN is the recycle state machine (the module's recycle_state_machine_arn).
	StateMachineARN string
	// RollbackStateMachineARN is started by Stop; empty = the recycle machine's ARN
	// with its name's "recycle" suffix replaced by "rollback" (the module's naming).
	RollbackStateMachineARN string
	// PollInterval paces Wait and Watch (Step Functions pushes nothing); 0 = 2 s.
	PollInterval time.Duration
	Clock        clock.WithTicker // nil = real clock
}

// Client is one state machine (and its rollback machine) on Step Functions.
type Client struct {
	api      *sfn.Client
	machine  string
	rollback string
	poll     time.Duration
	clock    clock.WithTicker
}

var stateMachineARN = regexp.MustCompile(`^arn:aws[a-z-]*:states:[a-z0-9-]+:[0-9]{12}:stateMachine:[A-Za-z0-9_-]{1,80}$`)

// New validates the options and builds a client from an SDK configuration.
func New(cfg aws.Config, o Options) (*Client, error) {
	if !stateMachineARN.MatchString(o.StateMachineARN) {
		return nil, fmt.Errorf("state machine %q: expected a state machine ARN such as arn:aws:states:eu-west-1:123456789012:stateMachine:prod-recycle (the module's recycle_state_machine_arn output)", o.StateMachineARN)
	}
	if o.RollbackStateMachineARN == "" {
		o.RollbackStateMachineARN = DefaultRollbackARN(o.StateMachineARN)
	}
	if !stateMachineARN.MatchString(o.RollbackStateMachineARN) {
		return nil, fmt.Errorf("rollback state machine %q: expected a state machine ARN", o.RollbackStateMachineARN)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &Client{api: sfn.NewFromConfig(cfg), machine: o.StateMachineARN, rollback: o.RollbackStateMachineARN, poll: o.PollInterval, clock: o.Clock}, nil
}

// DefaultRollbackARN is the rollback machine the module deploys beside a recycle
// machine: "<prefix>-recycle" → "<prefix>-rollback".
func DefaultRollbackARN(recycleARN string) string {
	if base, ok := strings.CutSuffix(recycleARN, "-recycle"); ok {
		return base + "-rollback"
	}
	return recycleARN + "-rollback"
}

// StateMachine is the recycle machine's ARN.
func (c *Client) StateMachine() string { return c.machine }

// executionARN accepts an execution ARN or a name of the recycle machine.
func (c *Client) executionARN(id string) string {
	if strings.HasPrefix(id, "arn:") {
		return id
	}
	return strings.Replace(c.machine, ":stateMachine:", ":execution:", 1) + ":" + id
}

// Start starts an execution of the recycle machine. A name already used (AWS keeps
// names for 90 days) is refused with engine.ErrExecutionAlreadyExists, unless it is the
// same input of an execution still running, which AWS answers with that execution.
func (c *Client) Start(ctx context.Context, in engine.StartInput) (engine.Execution, error) {
	input := string(in.Input)
	if input == "" {
		input = "{}"
	}
	out, err := c.api.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: &c.machine, Name: nonEmpty(in.Name), Input: &input})
	if dup := (*types.ExecutionAlreadyExists)(nil); errors.As(err, &dup) {
		return engine.Execution{}, fmt.Errorf("start execution %s of %s: %w: %s", in.Name, c.machine, engine.ErrExecutionAlreadyExists, dup.ErrorMessage())
	}
	if err != nil {
		return engine.Execution{}, fmt.Errorf("start execution %s of %s: %w", in.Name, c.machine, err)
	}
	return c.Describe(ctx, *out.ExecutionArn)
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Describe returns one execution (by ARN, or by name of the recycle machine).
func (c *Client) Describe(ctx context.Context, id string) (engine.Execution, error) {
	arn := c.executionARN(id)
	out, err := c.api.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: &arn})
	if nf := (*types.ExecutionDoesNotExist)(nil); errors.As(err, &nf) {
		return engine.Execution{}, fmt.Errorf("describe execution %s: %w", arn, engine.ErrNotFound)
	}
	if err != nil {
		return engine.Execution{}, fmt.Errorf("describe execution %s: %w", arn, err)
	}
	ex := engine.Execution{
		ID: aws.ToString(out.ExecutionArn), StateMachine: machineName(aws.ToString(out.StateMachineArn)), Name: aws.ToString(out.Name),
		Status: engine.Status(out.Status), Input: raw(out.Input), Output: raw(out.Output),
		Error: aws.ToString(out.Error), Cause: aws.ToString(out.Cause),
		StartTime: aws.ToTime(out.StartDate), StopTime: aws.ToTime(out.StopDate),
	}
	// An aborted recycle's rollback carries its name (Stop starts it so): AWS does
	// not link the two, the name does, for every later reader.
	if ex.Status == engine.StatusAborted && aws.ToString(out.StateMachineArn) == c.machine {
		rb := strings.Replace(c.rollback, ":stateMachine:", ":execution:", 1) + ":" + ex.Name
		_, err := c.api.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: &rb})
		if nf := (*types.ExecutionDoesNotExist)(nil); err != nil && !errors.As(err, &nf) {
			return ex, fmt.Errorf("describe the rollback of %s: %w", ex.ID, err)
		}
		if err == nil {
			ex.RollbackID = rb
		}
	}
	return ex, nil
}

// FreeName returns the execution name for a recycle of instance: the instance id,
// or "<id>-2", "-3", … when earlier recycles of it ended (AWS keeps names for 90
// days). A recycle of it still running is an error naming that execution.
func (c *Client) FreeName(ctx context.Context, instance string) (string, error) {
	for n := 1; n <= 100; n++ {
		name := recycle.ExecutionName(instance, n)
		ex, err := c.Describe(ctx, name)
		if errors.Is(err, engine.ErrNotFound) {
			return name, nil
		}
		if err != nil {
			return "", err
		}
		if !ex.Status.Done() {
			return "", fmt.Errorf("instance %s is already being recycled by execution %s: wait for it, or abort it", instance, ex.ID)
		}
	}
	return "", fmt.Errorf("instance %s was recycled 100 times already: start it by hand with another name", instance)
}

func raw(s *string) json.RawMessage {
	if s == nil || *s == "" {
		return nil
	}
	return json.RawMessage(*s)
}

func machineName(arn string) string { return arn[strings.LastIndex(arn, ":")+1:] }

// List lists executions of the recycle machine, newest first (Step Functions' order),
// with f's status, name and name prefix.
func (c *Client) List(ctx context.Context, f engine.ListFilter) ([]engine.Execution, error) {
	in := &sfn.ListExecutionsInput{StateMachineArn: &c.machine}
	if f.Status != "" {
		in.StatusFilter = types.ExecutionStatus(f.Status)
	}
	var out []engine.Execution
	p := sfn.NewListExecutionsPaginator(c.api, in)
	for p.HasMorePages() && (f.Limit == 0 || len(out) < f.Limit) {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list executions of %s: %w", c.machine, err)
		}
		for _, e := range page.Executions {
			name := aws.ToString(e.Name)
			if f.Name != "" && name != f.Name || !strings.HasPrefix(name, f.NamePrefix) {
				continue // AWS filters by status only
			}
			out = append(out, engine.Execution{
				ID: aws.ToString(e.ExecutionArn), StateMachine: machineName(aws.ToString(e.StateMachineArn)), Name: name,
				Status: engine.Status(e.Status), StartTime: aws.ToTime(e.StartDate), StopTime: aws.ToTime(e.StopDate),
			})
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// History returns an execution's events in the engine's shapes.
func (c *Client) History(ctx context.Context, id string) ([]engine.Event, error) {
	return c.historySince(ctx, c.executionARN(id), 0)
}

// historySince returns the events after id `after`, oldest first. It reads newest
// first and stops at the first one already seen, so following a long execution
// costs one page per poll, not its whole history.
func (c *Client) historySince(ctx context.Context, arn string, after int64) ([]engine.Event, error) {
	var rev []types.HistoryEvent
	p := sfn.NewGetExecutionHistoryPaginator(c.api, &sfn.GetExecutionHistoryInput{ExecutionArn: &arn, ReverseOrder: true, MaxResults: 100})
	done := false
	for p.HasMorePages() && !done {
		page, err := p.NextPage(ctx)
		if nf := (*types.ExecutionDoesNotExist)(nil); errors.As(err, &nf) {
			return nil, fmt.Errorf("history of %s: %w", arn, engine.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", arn, err)
		}
		for _, e := range page.Events {
			if e.Id <= after {
				done = true
				break
			}
			rev = append(rev, e)
		}
	}
	slices.Reverse(rev)
	out := make([]engine.Event, 0, len(rev))
	for _, e := range rev {
		out = append(out, Event(arn, e))
	}
	return out, nil
}

// Wait polls until the execution has ended and returns it.
func (c *Client) Wait(ctx context.Context, id string) (engine.Execution, error) {
	for {
		ex, err := c.Describe(ctx, id)
		if err != nil || ex.Status.Done() {
			return ex, err
		}
		if err := c.sleep(ctx); err != nil {
			return ex, err
		}
	}
}

func (c *Client) sleep(ctx context.Context) error {
	t := c.clock.NewTimer(c.poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// Watch calls fn with every event of the execution, in order, until it has ended
// (its last event delivered) or ctx is done.
func (c *Client) Watch(ctx context.Context, id string, fn func(engine.Event) error) error {
	arn := c.executionARN(id)
	var last int64
	for {
		// Describe first: an execution that ended before this read has all its
		// events in the history read next.
		ex, err := c.Describe(ctx, arn)
		if err != nil {
			return err
		}
		evs, err := c.historySince(ctx, arn, last)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			last = ev.ID
		}
		if ex.Status.Done() {
			return nil
		}
		if err := c.sleep(ctx); err != nil {
			return err
		}
	}
}

// Stop aborts a running execution (StopExecution) and starts the rollback state
// machine with the engine's abort record — {"Execution": {Id, Name, StateMachine,
// Input}, "Error", "Cause", "State", "StateInput"}, State/StateInput being the last
// state the execution entered — named after the aborted execution. The returned
// execution's RollbackID is the rollback's ARN. engine.ErrNotRunning if it had ended.
func (c *Client) Stop(ctx context.Context, id, errName, cause string) (engine.Execution, error) {
	ex, err := c.Describe(ctx, id)
	if err != nil {
		return ex, err
	}
	if ex.Status.Done() {
		return ex, fmt.Errorf("stop %s (%s): %w", ex.ID, ex.Status, engine.ErrNotRunning)
	}
	hist, err := c.History(ctx, ex.ID)
	if err != nil {
		return ex, err
	}
	if _, err := c.api.StopExecution(ctx, &sfn.StopExecutionInput{ExecutionArn: &ex.ID, Error: &errName, Cause: &cause}); err != nil {
		return ex, fmt.Errorf("stop execution %s: %w", ex.ID, err)
	}
	record := map[string]any{
		"Execution": map[string]any{"Id": ex.ID, "Name": ex.Name, "StateMachine": ex.StateMachine, "Input": ex.Input},
		"Error":     errName, "Cause": cause,
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if strings.HasSuffix(hist[i].Type, "StateEntered") {
			var d struct {
				Name  string          `json:"name"`
				Input json.RawMessage `json:"input"`
			}
			if json.Unmarshal(hist[i].Details, &d) == nil {
				record["State"], record["StateInput"] = d.Name, d.Input
			}
			break
		}
	}
	input, err := json.Marshal(record)
	if err != nil {
		return ex, err
	}
	out, err := c.api.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: &c.rollback, Name: &ex.Name, Input: aws.String(string(input))})
	if err != nil {
		return ex, fmt.Errorf("stopped %s; start its rollback on %s: %w (run the rollback by hand: StartExecution with this input: %s)", ex.ID, c.rollback, err, input)
	}
	if ex, err = c.Describe(ctx, ex.ID); err != nil {
		return ex, err
	}
	ex.RollbackID = aws.ToString(out.ExecutionArn)
	return ex, nil
}

// Event translates a Step Functions history event into the engine's shape: the
// Lambda integration's LambdaFunction* events become Task* events, details keep the
// engine's keys (name, input, output, error, cause, resource, parameters).
func Event(executionARN string, e types.HistoryEvent) engine.Event {
	typ := string(e.Type)
	d := map[string]any{}
	put := func(k string, v *string) {
		if v == nil {
			return
		}
		if k == "input" || k == "output" || k == "parameters" {
			if json.Valid([]byte(*v)) {
				d[k] = json.RawMessage(*v)
				return
			}
		}
		d[k] = *v
	}
	switch {
	case e.ExecutionStartedEventDetails != nil:
		put("input", e.ExecutionStartedEventDetails.Input)
	case e.ExecutionSucceededEventDetails != nil:
		put("output", e.ExecutionSucceededEventDetails.Output)
	case e.ExecutionFailedEventDetails != nil:
		put("error", e.ExecutionFailedEventDetails.Error)
		put("cause", e.ExecutionFailedEventDetails.Cause)
	case e.ExecutionAbortedEventDetails != nil:
		put("error", e.ExecutionAbortedEventDetails.Error)
		put("cause", e.ExecutionAbortedEventDetails.Cause)
	case e.ExecutionTimedOutEventDetails != nil:
		put("error", e.ExecutionTimedOutEventDetails.Error)
		put("cause", e.ExecutionTimedOutEventDetails.Cause)
	case e.StateEnteredEventDetails != nil:
		put("name", e.StateEnteredEventDetails.Name)
		put("input", e.StateEnteredEventDetails.Input)
	case e.StateExitedEventDetails != nil:
		put("name", e.StateExitedEventDetails.Name)
		put("output", e.StateExitedEventDetails.Output)
	case e.LambdaFunctionScheduledEventDetails != nil:
		typ = "TaskScheduled"
		put("resource", e.LambdaFunctionScheduledEventDetails.Resource)
		put("parameters", e.LambdaFunctionScheduledEventDetails.Input)
	case e.LambdaFunctionSucceededEventDetails != nil:
		typ = "TaskSucceeded"
		put("output", e.LambdaFunctionSucceededEventDetails.Output)
	case e.LambdaFunctionFailedEventDetails != nil:
		typ = "TaskFailed"
		put("error", e.LambdaFunctionFailedEventDetails.Error)
		put("cause", e.LambdaFunctionFailedEventDetails.Cause)
	case e.LambdaFunctionTimedOutEventDetails != nil:
		typ = "TaskTimedOut"
		put("error", e.LambdaFunctionTimedOutEventDetails.Error)
		put("cause", e.LambdaFunctionTimedOutEventDetails.Cause)
	case e.LambdaFunctionScheduleFailedEventDetails != nil:
		typ = "TaskFailed"
		put("error", e.LambdaFunctionScheduleFailedEventDetails.Error)
		put("cause", e.LambdaFunctionScheduleFailedEventDetails.Cause)
	case e.LambdaFunctionStartFailedEventDetails != nil:
		typ = "TaskFailed"
		put("error", e.LambdaFunctionStartFailedEventDetails.Error)
		put("cause", e.LambdaFunctionStartFailedEventDetails.Cause)
	case e.TaskScheduledEventDetails != nil:
		put("resource", e.TaskScheduledEventDetails.Resource)
		put("parameters", e.TaskScheduledEventDetails.Parameters)
	case e.TaskSucceededEventDetails != nil:
		put("output", e.TaskSucceededEventDetails.Output)
	case e.TaskFailedEventDetails != nil:
		put("error", e.TaskFailedEventDetails.Error)
		put("cause", e.TaskFailedEventDetails.Cause)
	case e.TaskTimedOutEventDetails != nil:
		put("error", e.TaskTimedOutEventDetails.Error)
		put("cause", e.TaskTimedOutEventDetails.Cause)
	}
	if e.Type == types.HistoryEventTypeLambdaFunctionStarted {
		typ = "TaskStarted"
	}
	details, _ := json.Marshal(d)
	return engine.Event{ExecutionID: executionARN, ID: e.Id, Type: typ, Timestamp: aws.ToTime(e.Timestamp), PreviousEventID: e.PreviousEventId, Details: details}
}
