package asl

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// frame is one evaluation of a state: the decoded raw input and lazily built
// context object, shared by the steps of that evaluation.
type frame struct {
	m   *Machine
	st  *state
	cur Cursor
	c   Context
	raw any // the state's raw input (decoded Cursor.Input)
	ctx any // the context object, built on first use
}

func (m *Machine) frame(cur Cursor, c Context) (*frame, error) {
	st, ok := m.states[cur.State]
	if !ok {
		return nil, fmt.Errorf("cursor names state %q, which this machine does not have", cur.State)
	}
	raw, err := decodeJSON(cur.Input)
	if err != nil {
		return nil, fmt.Errorf("state %q: input is not valid JSON: %w", cur.State, err)
	}
	return &frame{m: m, st: st, cur: cur, c: c, raw: raw}, nil
}

func (f *frame) ctxObj() any {
	if f.ctx == nil {
		f.ctx = f.c.object(f.st.name, f.cur)
	}
	return f.ctx
}

func (f *frame) env(input any) *evalEnv {
	return &evalEnv{input: input, ctxObj: f.ctxObj, rand: f.c.rand}
}

func (c Context) rand() float64 {
	if c.Rand != nil {
		return c.Rand()
	}
	return rand.Float64()
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// object builds the context object ($$).
func (c Context) object(stateName string, cur Cursor) any {
	var input any = map[string]any{}
	if len(c.ExecutionInput) > 0 {
		if v, err := decodeJSON(c.ExecutionInput); err == nil {
			input = v
		}
	}
	retry := int64(c.RetryCount)
	if retry == 0 {
		for _, n := range cur.Retries {
			retry += int64(n)
		}
	}
	obj := map[string]any{
		"Execution": map[string]any{
			"Id":        c.ExecutionID,
			"Name":      c.ExecutionName,
			"Input":     input,
			"StartTime": formatTime(c.StartTime),
		},
		"StateMachine": map[string]any{
			"Id":   c.StateMachineID,
			"Name": c.StateMachine,
		},
		"State": map[string]any{
			"Name":        stateName,
			"EnteredTime": formatTime(c.EnteredTime),
			"RetryCount":  retry,
		},
	}
	if c.TaskToken != "" {
		obj["Task"] = map[string]any{"Token": c.TaskToken}
	}
	if c.MapItemIndex != nil {
		var v any
		if len(c.MapItemValue) > 0 {
			v, _ = decodeJSON(c.MapItemValue)
		}
		obj["Map"] = map[string]any{"Item": map[string]any{"Index": int64(*c.MapItemIndex), "Value": v}}
	}
	return obj
}

// inputPathed applies InputPath to the state's raw input.
func (f *frame) inputPathed() (any, *stateError) {
	st := f.st
	switch {
	case st.inputNull:
		return map[string]any{}, nil
	case st.inputPath != nil:
		v, ok := st.inputPath.get(f.raw, f.ctxObj)
		if !ok {
			return nil, runtimeErr("InputPath %q selects nothing in the state's input", st.inputPath.raw)
		}
		return v, nil
	}
	return f.raw, nil
}

// effectiveInput applies InputPath then Parameters.
func (f *frame) effectiveInput() (any, *stateError) {
	in, err := f.inputPathed()
	if err != nil {
		return nil, err
	}
	if f.st.parameters != nil {
		return f.st.parameters.eval(f.env(in), "Parameters")
	}
	return in, nil
}

// withResult places value into raw as a ResultPath says (of a state or a Catch):
// "null" discards value, none ("$") replaces raw, a path merges into a copy.
func withResult(raw any, discard bool, path *refPath, value any) (any, error) {
	switch {
	case discard:
		return raw, nil
	case path == nil:
		return value, nil
	}
	return path.set(deepCopy(raw), value)
}

// finish applies ResultPath (result into the raw input) and OutputPath, then
// transitions.
func (f *frame) finish(result any) (Action, *stateError) {
	st := f.st
	out, err := withResult(f.raw, st.resultNull, st.resultPath, result)
	if err != nil {
		return Action{}, &stateError{name: ErrResultPathMatchFailure, cause: err.Error()}
	}
	return f.output(out)
}

// output applies OutputPath and transitions to Next or ends.
func (f *frame) output(out any) (Action, *stateError) {
	st := f.st
	switch {
	case st.outputNull:
		out = map[string]any{}
	case st.outputPath != nil:
		v, ok := st.outputPath.get(out, f.ctxObj)
		if !ok {
			return Action{}, runtimeErr("OutputPath %q selects nothing in the state's output", st.outputPath.raw)
		}
		out = v
	}
	raw, serr := encodeOrFail(out)
	if serr != nil {
		return Action{}, serr
	}
	return f.transition(raw), nil
}

func (f *frame) transition(out json.RawMessage) Action {
	if f.st.end || f.st.typ == "Succeed" {
		return Action{Kind: ActSucceed, Output: out}
	}
	return Action{Kind: ActNext, Next: f.st.next, Output: out}
}

// Enter evaluates a state on entry (or re-entry after ActRetry).
func (m *Machine) Enter(cur Cursor, c Context) (Action, error) {
	f, err := m.frame(cur, c)
	if err != nil {
		return Action{}, err
	}
	act, serr := f.enter()
	if serr != nil {
		return f.fail(serr), nil
	}
	return act, nil
}

func (f *frame) enter() (Action, *stateError) {
	st := f.st
	switch st.typ {
	case "Pass":
		in, err := f.effectiveInput()
		if err != nil {
			return Action{}, err
		}
		if st.hasResult {
			in = deepCopy(st.result)
		}
		return f.finish(in)
	case "Succeed":
		in, err := f.effectiveInput()
		if err != nil {
			return Action{}, err
		}
		return f.output(in)
	case "Fail":
		return f.failState()
	case "Choice":
		return f.choice()
	case "Wait":
		return f.wait()
	case "Task":
		return f.task()
	case "Parallel":
		in, err := f.effectiveInput()
		if err != nil {
			return Action{}, err
		}
		raw, err := encodeOrFail(in)
		if err != nil {
			return Action{}, err
		}
		act := Action{Kind: ActBranches}
		for i, b := range st.branches {
			act.Branches = append(act.Branches, Branch{Machine: b, Input: raw, Index: i})
		}
		return act, nil
	case "Map":
		return f.mapState()
	}
	return Action{}, runtimeErr("unknown state type %q", st.typ)
}

func (f *frame) failState() (Action, *stateError) {
	st := f.st
	resolve := func(lit string, p *refPath, call *intrinsic, field string) (string, *stateError) {
		var v any
		switch {
		case call != nil:
			r, err := call.eval(f.env(f.raw))
			if err != nil {
				return "", err
			}
			v = r
		case p != nil:
			r, ok := p.get(f.raw, f.ctxObj)
			if !ok {
				return "", runtimeErr("%sPath %q selects nothing in the state's input", field, p.raw)
			}
			v = r
		default:
			return lit, nil
		}
		s, ok := v.(string)
		if !ok {
			return "", runtimeErr("%sPath must select a string, got %s", field, typeName(v))
		}
		return s, nil
	}
	name, err := resolve(st.errorName, st.errorPath, st.errorCall, "Error")
	if err != nil {
		return Action{}, err
	}
	cause, err := resolve(st.cause, st.causePath, st.causeCall, "Cause")
	if err != nil {
		return Action{}, err
	}
	return Action{Kind: ActFail, Error: name, Cause: cause}, nil
}

func (f *frame) choice() (Action, *stateError) {
	st := f.st
	in, err := f.inputPathed()
	if err != nil {
		return Action{}, err
	}
	next := st.deflt
	for _, r := range st.choices {
		ok, err := r.eval(in, f.ctxObj)
		if err != nil {
			return Action{}, err
		}
		if ok {
			next = r.next
			break
		}
	}
	if next == "" {
		return Action{}, &stateError{name: ErrNoChoiceMatched, cause: fmt.Sprintf("no choice rule of state %q matched and it has no Default", st.name)}
	}
	act, err := f.output(in)
	if err != nil {
		return Action{}, err
	}
	return Action{Kind: ActNext, Next: next, Output: act.Output}, nil
}

func (f *frame) wait() (Action, *stateError) {
	st := f.st
	in, err := f.effectiveInput()
	if err != nil {
		return Action{}, err
	}
	now := f.c.Now
	switch {
	case st.hasSeconds:
		return Action{Kind: ActWait, Until: now.Add(time.Duration(st.seconds) * time.Second)}, nil
	case st.timestamp != "":
		t, _ := parseTimestamp(st.timestamp)
		return Action{Kind: ActWait, Until: t}, nil
	case st.secondsPath != nil:
		v, ok := st.secondsPath.get(in, f.ctxObj)
		if !ok {
			return Action{}, runtimeErr("SecondsPath %q selects nothing in the state's input", st.secondsPath.raw)
		}
		n, ok := toInt(v)
		if !ok || n < 0 {
			return Action{}, runtimeErr("SecondsPath %q must select a non-negative integer, got %v", st.secondsPath.raw, v)
		}
		return Action{Kind: ActWait, Until: now.Add(time.Duration(n) * time.Second)}, nil
	default:
		v, ok := st.timestampPath.get(in, f.ctxObj)
		if !ok {
			return Action{}, runtimeErr("TimestampPath %q selects nothing in the state's input", st.timestampPath.raw)
		}
		s, _ := v.(string)
		t, ok := parseTimestamp(s)
		if !ok {
			return Action{}, runtimeErr("TimestampPath %q must select an RFC 3339 timestamp, got %v", st.timestampPath.raw, v)
		}
		return Action{Kind: ActWait, Until: t}, nil
	}
}

// AfterWait finishes a Wait state once its deadline has passed.
func (m *Machine) AfterWait(cur Cursor, c Context) (Action, error) {
	f, err := m.frame(cur, c)
	if err != nil {
		return Action{}, err
	}
	if f.st.typ != "Wait" {
		return Action{}, fmt.Errorf("AfterWait on state %q, a %s state", f.st.name, f.st.typ)
	}
	in, serr := f.effectiveInput()
	if serr == nil {
		var act Action
		act, serr = f.output(in)
		if serr == nil {
			return act, nil
		}
	}
	return f.fail(serr), nil
}

func (f *frame) task() (Action, *stateError) {
	st := f.st
	in, err := f.effectiveInput()
	if err != nil {
		return Action{}, err
	}
	raw, err := encodeOrFail(in)
	if err != nil {
		return Action{}, err
	}
	act := Action{Kind: ActTask, Resource: st.resource, TaskInput: raw}
	secs := func(n int, p *refPath, field string) (time.Duration, *stateError) {
		if p == nil {
			return time.Duration(n) * time.Second, nil
		}
		v, ok := p.get(f.raw, f.ctxObj)
		if !ok {
			return 0, runtimeErr("%sPath %q selects nothing in the state's input", field, p.raw)
		}
		secs, ok := toInt(v)
		if !ok || secs <= 0 {
			return 0, runtimeErr("%sPath %q must select a positive integer, got %v", field, p.raw, v)
		}
		return time.Duration(secs) * time.Second, nil
	}
	if act.Timeout, err = secs(st.timeoutSecs, st.timeoutPath, "TimeoutSeconds"); err != nil {
		return Action{}, err
	}
	if act.Heartbeat, err = secs(st.heartbeatSecs, st.heartbeatPath, "HeartbeatSeconds"); err != nil {
		return Action{}, err
	}
	return act, nil
}

func (f *frame) mapState() (Action, *stateError) {
	st := f.st
	in, err := f.inputPathed()
	if err != nil {
		return Action{}, err
	}
	items := in
	if st.itemsPath != nil {
		v, ok := st.itemsPath.get(in, f.ctxObj)
		if !ok {
			return Action{}, runtimeErr("ItemsPath %q selects nothing in the state's input", st.itemsPath.raw)
		}
		items = v
	}
	arr, ok := items.([]any)
	if !ok {
		return Action{}, runtimeErr("the Map state's items (ItemsPath or input) must be an array, got %s", typeName(items))
	}
	act := Action{Kind: ActBranches, MaxConcurrency: st.maxConcurrency}
	if st.maxConcPath != nil {
		v, ok := st.maxConcPath.get(f.raw, f.ctxObj)
		n, isInt := toInt(v)
		if !ok || !isInt || n < 0 {
			return Action{}, runtimeErr("MaxConcurrencyPath %q must select a non-negative integer", st.maxConcPath.raw)
		}
		act.MaxConcurrency = int(n)
	}
	for i, item := range arr {
		itemInput := item
		if st.itemSelector != nil {
			c := f.c
			idx := i
			c.MapItemIndex = &idx
			var err *stateError
			c.MapItemValue, err = encodeOrFail(item)
			if err != nil {
				return Action{}, err
			}
			ic := &frame{m: f.m, st: st, cur: f.cur, c: c, raw: f.raw}
			v, serr := st.itemSelector.eval(ic.env(in), "ItemSelector")
			if serr != nil {
				return Action{}, serr
			}
			itemInput = v
		}
		raw, err := encodeOrFail(itemInput)
		if err != nil {
			return Action{}, err
		}
		act.Branches = append(act.Branches, Branch{Machine: st.processor, Input: raw, Index: i})
	}
	return act, nil
}

// TaskDone finishes a Task with its result or error.
func (m *Machine) TaskDone(cur Cursor, c Context, result json.RawMessage, taskErr error) (Action, error) {
	f, err := m.frame(cur, c)
	if err != nil {
		return Action{}, err
	}
	if f.st.typ != "Task" {
		return Action{}, fmt.Errorf("TaskDone on state %q, a %s state", f.st.name, f.st.typ)
	}
	if taskErr != nil {
		return f.fail(&stateError{name: ErrorName(taskErr), cause: errorCause(taskErr)}), nil
	}
	res, derr := decodeJSON(result)
	if len(result) == 0 {
		res, derr = nil, nil
	}
	if derr != nil {
		return f.fail(&stateError{name: ErrTaskFailed, cause: fmt.Sprintf("the task's result is not valid JSON: %v", derr)}), nil
	}
	return f.done(res), nil
}

// done applies ResultSelector, ResultPath and OutputPath to a successful result.
func (f *frame) done(res any) Action {
	if f.st.resultSelector != nil {
		v, err := f.st.resultSelector.eval(f.env(res), "ResultSelector")
		if err != nil {
			return f.fail(err)
		}
		res = v
	}
	act, err := f.finish(res)
	if err != nil {
		return f.fail(err)
	}
	return act
}

// BranchesDone finishes a Parallel or Map state with its branches' results.
func (m *Machine) BranchesDone(cur Cursor, c Context, results []BranchResult) (Action, error) {
	f, err := m.frame(cur, c)
	if err != nil {
		return Action{}, err
	}
	st := f.st
	if st.typ != "Parallel" && st.typ != "Map" {
		return Action{}, fmt.Errorf("BranchesDone on state %q, a %s state", st.name, st.typ)
	}
	if st.typ == "Parallel" && len(results) != len(st.branches) {
		return Action{}, fmt.Errorf("state %q: %d branch results for %d branches", st.name, len(results), len(st.branches))
	}
	// Every Map is inline and Parallel has no tolerance: the lowest-index failed branch
	// fails the state (Parse refuses the Distributed Map's ToleratedFailure* fields).
	for i := range results {
		if r := results[i]; r.Error != "" {
			return f.fail(&stateError{name: r.Error, cause: r.Cause}), nil
		}
	}
	out := make([]any, len(results))
	for i, r := range results {
		v, err := decodeJSON(r.Output)
		if len(r.Output) == 0 {
			v, err = nil, nil
		}
		if err != nil {
			return Action{}, fmt.Errorf("state %q: branch %d output is not valid JSON: %w", st.name, i, err)
		}
		out[i] = v
	}
	return f.done(out), nil
}

// matches reports whether an ErrorEquals list matches error name. States.ALL
// matches everything but States.Runtime; States.TaskFailed matches every error
// except States.Timeout (and States.Runtime), as the Step Functions guide says.
func matches(list []string, name string) bool {
	if name == ErrRuntime || name == ErrDataLimitExceeded {
		return false
	}
	for _, e := range list {
		switch {
		case e == name, e == ErrAll:
			return true
		case e == ErrTaskFailed && name != ErrTimeout:
			return true
		}
	}
	return false
}

// fail applies Retry then Catch (Task, Parallel and Map states) to an error, or
// ends the machine with it.
func (f *frame) fail(e *stateError) Action {
	st := f.st
	if e.name == ErrRuntime {
		return Action{Kind: ActFail, Error: e.name, Cause: e.cause}
	}
	for i, r := range st.retry {
		if !matches(r.errorEquals, e.name) {
			continue
		}
		used := 0
		if i < len(f.cur.Retries) {
			used = f.cur.Retries[i]
		}
		if used >= r.maxAttempts {
			break // the first matching retrier is exhausted: go on to Catch
		}
		delay := r.interval * math.Pow(r.backoffRate, float64(used))
		if r.maxDelay > 0 && delay > r.maxDelay {
			delay = r.maxDelay
		}
		if r.jitterFull {
			delay *= f.c.rand()
		}
		retries := make([]int, len(st.retry))
		copy(retries, f.cur.Retries)
		retries[i] = used + 1
		return Action{Kind: ActRetry, Delay: time.Duration(delay * float64(time.Second)), Retries: retries, Error: e.name, Cause: e.cause}
	}
	for _, c := range st.catch {
		if !matches(c.errorEquals, e.name) {
			continue
		}
		errObj := map[string]any{"Error": e.name, "Cause": e.cause}
		out, err := withResult(f.raw, c.resultNull, c.resultPath, errObj)
		if err != nil {
			return Action{Kind: ActFail, Error: ErrResultPathMatchFailure, Cause: err.Error()}
		}
		raw, serr := encodeOrFail(out)
		if serr != nil {
			return Action{Kind: ActFail, Error: serr.name, Cause: serr.cause}
		}
		return Action{Kind: ActNext, Next: c.next, Output: raw, Error: e.name, Cause: e.cause}
	}
	return Action{Kind: ActFail, Error: e.name, Cause: e.cause}
}
