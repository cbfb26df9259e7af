package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/engine"
)

// Step Functions (signing name "states", AWS JSON 1.0, X-Amz-Target
// AWSStepFunctions.<Op>): the subset the CLI and the Terraform module use, backed by
// the project's own engine. Lambda Tasks go to the LambdaInvoker (in tests: the real
// bootstrap under the Runtime Interface Emulator). docs/aws-semantics.md, "Step Functions".

// LambdaInvoker runs a Lambda function for a Task: the payload in, the function's
// result out, or an error whose asl.ErrorName is the function's errorType.
type LambdaInvoker interface {
	Invoke(ctx context.Context, functionARN string, payload []byte) ([]byte, error)
}

// LambdaFunc adapts a function to LambdaInvoker.
type LambdaFunc func(ctx context.Context, functionARN string, payload []byte) ([]byte, error)

func (f LambdaFunc) Invoke(ctx context.Context, arn string, p []byte) ([]byte, error) {
	return f(ctx, arn, p)
}

// SetLambda sets where Lambda Tasks go (a function started after the simulator, e.g.
// one configured with its URL). Without one a Lambda Task fails with
// Lambda.ResourceNotFoundException.
func (s *Server) SetLambda(l LambdaInvoker) {
	s.states.mu.Lock()
	s.states.lambda = l
	s.states.mu.Unlock()
}

// unlocked is a handler result whose work runs after s.mu is released: Step Functions
// calls into the engine, whose Tasks call back into this simulator.
type unlocked func(ctx context.Context) (any, *apiError)

// stateMachine is one created state machine: its own engine (the registry of an
// engine is fixed at Open and names the definition's Lambda functions).
type stateMachine struct {
	arn, name, roleArn, typ string
	definition              []byte
	created                 time.Time
	eng                     *engine.Engine
}

type statesBackend struct {
	mu       sync.Mutex
	dir      string
	lambda   LambdaInvoker
	machines map[string]*stateMachine // by ARN
	execs    map[string]string        // execution ARN → engine id
	arns     map[string]string        // engine id → execution ARN
}

func (b *statesBackend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, m := range b.machines {
		errs = append(errs, m.eng.Close())
	}
	b.machines = nil
	if b.dir != "" {
		errs = append(errs, os.RemoveAll(b.dir))
	}
	return errors.Join(errs...)
}

var stateMachineName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

func statesError(code, format string, args ...any) *apiError {
	return &apiError{Status: 400, Code: code, Message: fmt.Sprintf(format, args...)}
}

func (s *Server) statesOps() map[string]func(form) (any, *apiError) {
	op := func(h func(ctx context.Context, f form) (any, *apiError)) func(form) (any, *apiError) {
		return func(f form) (any, *apiError) {
			return unlocked(func(ctx context.Context) (any, *apiError) { return h(ctx, f) }), nil
		}
	}
	return map[string]func(form) (any, *apiError){
		"CreateStateMachine":   op(s.createStateMachine),
		"DescribeStateMachine": op(s.describeStateMachine),
		"ListStateMachines":    op(s.listStateMachines),
		"StartExecution":       op(s.startExecution),
		"DescribeExecution":    op(s.describeExecution),
		"GetExecutionHistory":  op(s.getExecutionHistory),
		"ListExecutions":       op(s.listExecutions),
		"StopExecution":        op(s.stopExecution),
	}
}

func (s *Server) stateMachineARN(name string) string {
	return "arn:aws:states:" + s.opts.Region + ":" + s.opts.AccountID + ":stateMachine:" + name
}

func (s *Server) executionARN(machine, name string) string {
	return "arn:aws:states:" + s.opts.Region + ":" + s.opts.AccountID + ":execution:" + machine + ":" + name
}

func epochSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (s *Server) createStateMachine(ctx context.Context, f form) (any, *apiError) {
	var in struct {
		Name, Definition, RoleArn, Type string
	}
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	if !stateMachineName.MatchString(in.Name) {
		return nil, statesError("InvalidName", "Invalid Name: '%s'", in.Name)
	}
	if in.Type == "" {
		in.Type = "STANDARD"
	}
	if in.Type != "STANDARD" {
		return nil, statesError("ValidationException", "the simulated Step Functions runs STANDARD state machines only, not %s", in.Type)
	}
	if !strings.HasPrefix(in.RoleArn, "arn:aws:iam::") {
		return nil, statesError("InvalidArn", "Invalid Arn: 'Resource type not valid in this context: %s'", in.RoleArn)
	}
	if _, err := asl.Parse([]byte(in.Definition)); err != nil {
		return nil, statesError("InvalidDefinition", "Invalid State Machine Definition: '%v'", err)
	}
	b := &s.states
	b.mu.Lock()
	defer b.mu.Unlock()
	arn := s.stateMachineARN(in.Name)
	if old, ok := b.machines[arn]; ok {
		if string(old.definition) == in.Definition && old.roleArn == in.RoleArn {
			return map[string]any{"stateMachineArn": arn, "creationDate": epochSeconds(old.created)}, nil // idempotent, as AWS
		}
		return nil, statesError("StateMachineAlreadyExists", "State Machine Already Exists: '%s'", arn)
	}
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "recycler-sim-states-")
		if err != nil {
			return nil, s.statesInternal(err)
		}
		b.dir = dir
	}
	reg := asl.Registry{}
	for _, res := range taskResources([]byte(in.Definition)) {
		if !strings.HasPrefix(res, "arn:aws:lambda:") {
			return nil, statesError("InvalidDefinition", "the simulated Step Functions invokes Lambda functions only, not %s", res)
		}
		reg[res] = s.lambdaTask(res)
	}
	eng, err := engine.Open(ctx, engine.Options{Path: filepath.Join(b.dir, in.Name+".db"), Clock: s.clock, Registry: reg, Logger: s.log})
	if err != nil {
		return nil, s.statesInternal(err)
	}
	sm := &stateMachine{arn: arn, name: in.Name, roleArn: in.RoleArn, typ: in.Type, definition: []byte(in.Definition), created: s.clock.Now(), eng: eng}
	b.machines[arn] = sm
	return map[string]any{"stateMachineArn": arn, "creationDate": epochSeconds(sm.created)}, nil
}

func (s *Server) statesInternal(err error) *apiError {
	return &apiError{Status: 500, Code: "InternalFailure", Message: err.Error()}
}

// taskResources lists the Resource of every Task state, in branches and Map
// iterators too (found by walking the definition's JSON).
func taskResources(def []byte) []string {
	var doc any
	_ = json.Unmarshal(def, &doc)
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["Type"] == "Task" {
				if r, ok := x["Resource"].(string); ok {
					seen[r] = true
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// lambdaTask invokes the function the way Step Functions' Lambda integration does:
// the function's errorType becomes the Task's error name.
func (s *Server) lambdaTask(arn string) func(context.Context, json.RawMessage) (json.RawMessage, error) {
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		s.states.mu.Lock()
		l := s.states.lambda
		s.states.mu.Unlock()
		if l == nil {
			return nil, asl.Errorf("Lambda.ResourceNotFoundException", "Function not found: %s (the simulator has no Lambda: Server.SetLambda)", arn)
		}
		out, err := l.Invoke(ctx, arn, in)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

func (s *Server) machine(arn string) (*stateMachine, *apiError) {
	s.states.mu.Lock()
	defer s.states.mu.Unlock()
	m, ok := s.states.machines[arn]
	if !ok {
		return nil, statesError("StateMachineDoesNotExist", "State Machine Does Not Exist: '%s'", arn)
	}
	return m, nil
}

func (s *Server) describeStateMachine(_ context.Context, f form) (any, *apiError) {
	var in struct{ StateMachineArn string }
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, e := s.machine(in.StateMachineArn)
	if e != nil {
		return nil, e
	}
	return map[string]any{"stateMachineArn": m.arn, "name": m.name, "status": "ACTIVE", "definition": string(m.definition),
		"roleArn": m.roleArn, "type": m.typ, "creationDate": epochSeconds(m.created)}, nil
}

func (s *Server) listStateMachines(context.Context, form) (any, *apiError) {
	s.states.mu.Lock()
	defer s.states.mu.Unlock()
	list := []map[string]any{}
	for _, m := range s.states.machines {
		list = append(list, map[string]any{"stateMachineArn": m.arn, "name": m.name, "type": m.typ, "creationDate": epochSeconds(m.created)})
	}
	sort.Slice(list, func(i, j int) bool { return list[i]["name"].(string) < list[j]["name"].(string) })
	return map[string]any{"stateMachines": list}, nil
}

var executionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

func (s *Server) startExecution(ctx context.Context, f form) (any, *apiError) {
	var in struct {
		StateMachineArn, Name string
		Input                 *string
	}
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, e := s.machine(in.StateMachineArn)
	if e != nil {
		return nil, e
	}
	input := "{}"
	if in.Input != nil {
		input = *in.Input
	}
	if !json.Valid([]byte(input)) {
		return nil, statesError("InvalidExecutionInput", "Invalid Execution Input: the input is not JSON")
	}
	if in.Name != "" && !executionName.MatchString(in.Name) {
		return nil, statesError("InvalidName", "Invalid Name: '%s'", in.Name)
	}
	if in.Name != "" {
		// AWS: a name is unique per state machine for 90 days. The same name and input
		// of an execution still running answers that execution; anything else is refused.
		arn := s.executionARN(m.name, in.Name)
		s.states.mu.Lock()
		id, ok := s.states.execs[arn]
		s.states.mu.Unlock()
		if ok {
			ex, err := m.eng.Describe(ctx, id)
			if err != nil {
				return nil, s.statesInternal(err)
			}
			if ex.Status.Done() || !sameJSON(ex.Input, []byte(input)) {
				return nil, statesError("ExecutionAlreadyExists", "Execution Already Exists: '%s'", arn)
			}
			return map[string]any{"executionArn": arn, "startDate": epochSeconds(ex.StartTime)}, nil
		}
	}
	if in.Name == "" {
		in.Name = uuid.NewString() // AWS names an unnamed execution with a UUID
	}
	arn := s.executionARN(m.name, in.Name)
	ex, err := m.eng.Start(ctx, engine.StartInput{StateMachine: m.name, Definition: m.definition, Name: in.Name, ID: arn, Input: json.RawMessage(input)})
	if err != nil {
		return nil, s.statesInternal(err)
	}
	s.states.mu.Lock()
	s.states.execs[arn] = ex.ID
	s.states.arns[ex.ID] = arn
	s.states.mu.Unlock()
	return map[string]any{"executionArn": arn, "startDate": epochSeconds(ex.StartTime)}, nil
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// execution finds an execution by ARN: its machine and engine id.
func (s *Server) execution(arn string) (*stateMachine, string, *apiError) {
	s.states.mu.Lock()
	id, ok := s.states.execs[arn]
	s.states.mu.Unlock()
	if !ok {
		return nil, "", statesError("ExecutionDoesNotExist", "Execution Does Not Exist: '%s'", arn)
	}
	machine := arn[:strings.LastIndex(arn, ":")]
	machine = strings.Replace(machine, ":execution:", ":stateMachine:", 1)
	m, e := s.machine(machine)
	return m, id, e
}

func (s *Server) executionJSON(m *stateMachine, ex engine.Execution, full bool) map[string]any {
	out := map[string]any{
		"executionArn": s.executionARN(m.name, ex.Name), "stateMachineArn": m.arn, "name": ex.Name,
		"status": string(ex.Status), "startDate": epochSeconds(ex.StartTime),
	}
	if !ex.StopTime.IsZero() {
		out["stopDate"] = epochSeconds(ex.StopTime)
	}
	if full {
		out["input"] = string(ex.Input)
		if len(ex.Output) > 0 {
			out["output"] = string(ex.Output)
		}
		if ex.Error != "" {
			out["error"] = ex.Error
		}
		if ex.Cause != "" {
			out["cause"] = ex.Cause
		}
	}
	return out
}

func (s *Server) describeExecution(ctx context.Context, f form) (any, *apiError) {
	var in struct{ ExecutionArn string }
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, id, e := s.execution(in.ExecutionArn)
	if e != nil {
		return nil, e
	}
	ex, err := m.eng.Describe(ctx, id)
	if err != nil {
		return nil, s.statesInternal(err)
	}
	return s.executionJSON(m, ex, true), nil
}

func (s *Server) listExecutions(ctx context.Context, f form) (any, *apiError) {
	var in struct {
		StateMachineArn, StatusFilter, NextToken string
		MaxResults                               int
	}
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, e := s.machine(in.StateMachineArn)
	if e != nil {
		return nil, e
	}
	exs, err := m.eng.List(ctx, engine.ListFilter{StateMachine: m.name, Status: engine.Status(in.StatusFilter)})
	if err != nil {
		return nil, s.statesInternal(err)
	}
	page, next, e := paginate(len(exs), in.MaxResults, in.NextToken)
	if e != nil {
		return nil, e
	}
	list := []map[string]any{}
	for _, ex := range exs[page[0]:page[1]] {
		list = append(list, s.executionJSON(m, ex, false))
	}
	out := map[string]any{"executions": list}
	if next != "" {
		out["nextToken"] = next
	}
	return out, nil
}

// paginate picks [from, to) of n items for maxResults (0 = 100, at most 1000) from a
// token that is the start index.
func paginate(n, maxResults int, token string) ([2]int, string, *apiError) {
	if maxResults <= 0 {
		maxResults = 100
	}
	if maxResults > 1000 {
		return [2]int{}, "", statesError("ValidationException", "maxResults must be at most 1000")
	}
	from := 0
	if token != "" {
		if _, err := fmt.Sscanf(token, "p%d", &from); err != nil || from < 0 || from > n {
			return [2]int{}, "", statesError("InvalidToken", "Invalid Token: '%s'", token)
		}
	}
	to := min(n, from+maxResults)
	next := ""
	if to < n {
		next = fmt.Sprintf("p%d", to)
	}
	return [2]int{from, to}, next, nil
}

func (s *Server) stopExecution(ctx context.Context, f form) (any, *apiError) {
	var in struct{ ExecutionArn, Error, Cause string }
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, id, e := s.execution(in.ExecutionArn)
	if e != nil {
		return nil, e
	}
	ex, err := m.eng.Stop(ctx, id, in.Error, in.Cause)
	if errors.Is(err, engine.ErrNotRunning) {
		// Guess: AWS answers a stop of an ended execution with its stop date.
		if ex, err = m.eng.Describe(ctx, id); err != nil {
			return nil, s.statesInternal(err)
		}
	} else if err != nil {
		return nil, s.statesInternal(err)
	}
	return map[string]any{"stopDate": epochSeconds(ex.StopTime)}, nil
}

func (s *Server) getExecutionHistory(ctx context.Context, f form) (any, *apiError) {
	var in struct {
		ExecutionArn, NextToken string
		MaxResults              int
		ReverseOrder            bool
		IncludeExecutionData    *bool
	}
	if e := decodeJSON(f, &in); e != nil {
		return nil, e
	}
	m, id, e := s.execution(in.ExecutionArn)
	if e != nil {
		return nil, e
	}
	hist, err := m.eng.History(ctx, id)
	if err != nil {
		return nil, s.statesInternal(err)
	}
	events := awsHistory(hist)
	if in.ReverseOrder {
		for i, j := 0, len(events)-1; i < j; i, j = i+1, j-1 {
			events[i], events[j] = events[j], events[i]
		}
	}
	page, next, e := paginate(len(events), in.MaxResults, in.NextToken)
	if e != nil {
		return nil, e
	}
	out := map[string]any{"events": events[page[0]:page[1]]}
	if next != "" {
		out["nextToken"] = next
	}
	return out, nil
}

// awsHistory renders the engine's events as Step Functions' HistoryEvents. Tasks of
// a Lambda function ARN are LambdaFunction* events, as AWS records the Lambda
// integration; the ids are renumbered 1… in order (the engine's own ids may skip).
func awsHistory(hist []engine.Event) []map[string]any {
	out := make([]map[string]any, 0, len(hist))
	renum := map[int64]int64{}
	for _, ev := range hist {
		var d map[string]json.RawMessage
		_ = json.Unmarshal(ev.Details, &d)
		str := func(k string) string {
			v, ok := d[k]
			if !ok {
				return ""
			}
			var s string
			if json.Unmarshal(v, &s) == nil {
				return s
			}
			return string(v) // a JSON document: Step Functions carries it as a string
		}
		typ, detailsKey := ev.Type, ""
		details := map[string]any{}
		lambda := strings.HasPrefix(str("resource"), "arn:aws:lambda:")
		switch {
		case ev.Type == "ExecutionStarted":
			detailsKey, details["input"] = "executionStartedEventDetails", str("input")
		case ev.Type == "ExecutionSucceeded":
			detailsKey, details["output"] = "executionSucceededEventDetails", str("output")
		case ev.Type == "ExecutionFailed", ev.Type == "ExecutionAborted", ev.Type == "ExecutionTimedOut":
			detailsKey = "execution" + strings.TrimPrefix(ev.Type, "Execution") + "EventDetails"
			details["error"], details["cause"] = str("error"), str("cause")
		case strings.HasSuffix(ev.Type, "StateEntered"):
			detailsKey, details["name"], details["input"] = "stateEnteredEventDetails", str("name"), str("input")
		case strings.HasSuffix(ev.Type, "StateExited"):
			detailsKey, details["name"], details["output"] = "stateExitedEventDetails", str("name"), str("output")
		case ev.Type == "TaskScheduled" && lambda:
			typ, detailsKey = "LambdaFunctionScheduled", "lambdaFunctionScheduledEventDetails"
			details["resource"], details["input"] = str("resource"), str("parameters")
			if v, ok := d["timeoutInSeconds"]; ok && string(v) != "0" {
				details["timeoutInSeconds"] = v
			}
		case ev.Type == "TaskStarted" && lambda:
			typ = "LambdaFunctionStarted"
		case ev.Type == "TaskSucceeded" && lambda:
			typ, detailsKey, details["output"] = "LambdaFunctionSucceeded", "lambdaFunctionSucceededEventDetails", str("output")
		case (ev.Type == "TaskFailed" || ev.Type == "TaskTimedOut") && lambda:
			typ = "LambdaFunction" + strings.TrimPrefix(ev.Type, "Task")
			detailsKey = "lambdaFunction" + strings.TrimPrefix(ev.Type, "Task") + "EventDetails"
			details["error"], details["cause"] = str("error"), str("cause")
		}
		// A resumed Task records a second TaskStarted after a crash; AWS has no such event.
		if typ == "LambdaFunctionStarted" && string(d["resumed"]) == "true" {
			continue
		}
		id := int64(len(out) + 1)
		renum[ev.ID] = id
		e := map[string]any{"id": id, "type": typ, "timestamp": epochSeconds(ev.Timestamp), "previousEventId": renum[ev.PreviousEventID]}
		if detailsKey != "" {
			e[detailsKey] = details
		}
		out = append(out, e)
	}
	return out
}
