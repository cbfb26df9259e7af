package asl

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Machine is a parsed, validated state machine (or a Parallel branch / Map item
// processor, which are machines of their own).
type Machine struct {
	def     json.RawMessage
	startAt string
	comment string
	timeout int
	states  map[string]*state
	names   []string // in definition order of sorted names, for States()
}

// ParseError lists every problem found in a definition.
type ParseError struct {
	Problems []string
}

func (e *ParseError) Error() string {
	return "invalid state machine definition: " + strings.Join(e.Problems, "; ")
}

type state struct {
	name string
	typ  string
	next string
	end  bool

	inputPath  *jsonPath // nil and !inputNull: "$"
	inputNull  bool
	outputPath *jsonPath
	outputNull bool
	resultPath *refPath // nil and !resultNull: "$"
	resultNull bool

	parameters     *payloadTemplate
	resultSelector *payloadTemplate

	retry []*retrier
	catch []*catcher

	// Pass
	result    any
	hasResult bool

	// Task
	resource      string
	timeoutSecs   int
	timeoutPath   *refPath
	heartbeatSecs int
	heartbeatPath *refPath

	// Choice
	choices []*choiceRule
	deflt   string

	// Wait
	seconds       int64
	hasSeconds    bool
	secondsPath   *refPath
	timestamp     string
	timestampPath *refPath

	// Fail
	errorName, cause string
	errorPath        *refPath
	errorCall        *intrinsic
	causePath        *refPath
	causeCall        *intrinsic

	// Parallel
	branches []*Machine

	// Map
	processor      *Machine
	itemsPath      *refPath
	itemSelector   *payloadTemplate
	maxConcurrency int
	maxConcPath    *refPath
}

type retrier struct {
	errorEquals []string
	interval    float64
	maxAttempts int
	backoffRate float64
	maxDelay    float64 // 0 = none
	jitterFull  bool
}

type catcher struct {
	errorEquals []string
	next        string
	resultPath  *refPath
	resultNull  bool
}

// Parse parses and validates a definition. The error, a *ParseError, lists every
// problem found, each naming the state and field.
func Parse(definition []byte) (*Machine, error) {
	root, err := decodeJSON(definition)
	if err != nil {
		return nil, &ParseError{Problems: []string{fmt.Sprintf("the definition is not valid JSON: %v", err)}}
	}
	obj, ok := root.(map[string]any)
	if !ok {
		return nil, &ParseError{Problems: []string{"the definition must be a JSON object"}}
	}
	p := &parser{seen: map[string]string{}}
	m := p.machine(obj, "", true)
	if len(p.problems) > 0 {
		return nil, &ParseError{Problems: p.problems}
	}
	m.def = append(json.RawMessage(nil), definition...)
	return m, nil
}

type parser struct {
	problems []string
	seen     map[string]string // state name → where it was defined (names are unique machine-wide)
}

func (p *parser) addf(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

// machine parses a (sub-)machine. scope prefixes messages ("" at the top level,
// `state "P" branch 0: ` inside).
func (p *parser) machine(obj map[string]any, scope string, top bool) *Machine {
	m := &Machine{states: map[string]*state{}}
	p.machineFields(m, obj, scope, top)
	start, ok := obj["StartAt"].(string)
	if !ok || start == "" {
		p.addf("%smissing StartAt (the name of the first state)", scope)
	}
	m.startAt = start
	states, ok := obj["States"].(map[string]any)
	if !ok || len(states) == 0 {
		p.addf("%smissing States (an object of named states)", scope)
		return m
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)
	m.names = names
	for _, n := range names {
		if st := p.namedState(n, states[n], scope); st != nil {
			m.states[n] = st
		}
	}
	if start != "" {
		if _, ok := states[start]; !ok {
			p.addf("%sStartAt %q names no state", scope, start)
		}
	}
	p.checkTransitions(m, scope)
	return m
}

// machineFields checks the machine's own fields besides StartAt and States.
func (p *parser) machineFields(m *Machine, obj map[string]any, scope string, top bool) {
	allowed := map[string]bool{"StartAt": true, "States": true, "Comment": true}
	if top {
		allowed["Version"], allowed["TimeoutSeconds"], allowed["QueryLanguage"] = true, true, true
		p.queryLanguage(obj, "")
	} else {
		allowed["ProcessorConfig"] = true
	}
	for k := range obj {
		if !allowed[k] {
			p.addf("%sunknown field %q", scope, k)
		}
	}
	if c, ok := obj["Comment"].(string); ok {
		m.comment = c
	}
	if v, ok := obj["Version"]; ok {
		if s, _ := v.(string); s != "1.0" {
			p.addf("%sVersion must be \"1.0\"", scope)
		}
	}
	if v, ok := obj["TimeoutSeconds"]; ok {
		m.timeout = int(p.minInt(v, 1, scope+"TimeoutSeconds must be a positive integer"))
	}
}

// namedState parses state n, checking its name is unique machine-wide and short.
func (p *parser) namedState(n string, v any, scope string) *state {
	where := fmt.Sprintf("%sstate %q", scope, n)
	if prev, dup := p.seen[n]; dup {
		p.addf("%s: a state with this name already exists (%s); state names must be unique in the whole machine, branches included", where, prev)
	} else {
		p.seen[n] = where
	}
	if len(n) > 80 {
		p.addf("%s: state names are at most 80 characters", where)
	}
	so, ok := v.(map[string]any)
	if !ok {
		p.addf("%s: must be an object", where)
		return nil
	}
	return p.state(n, so, where)
}

// targets lists the states st can go to next (Next, Choice rules and Default, Catch).
func (st *state) targets() []string {
	var t []string
	if st.next != "" {
		t = append(t, st.next)
	}
	for _, r := range st.choices {
		t = append(t, r.next)
	}
	if st.deflt != "" {
		t = append(t, st.deflt)
	}
	for _, c := range st.catch {
		t = append(t, c.next)
	}
	return t
}

// checkTransitions checks targets, reachability and that the machine can end.
func (p *parser) checkTransitions(m *Machine, scope string) {
	terminal := false
	for _, n := range m.names {
		st := m.states[n]
		if st == nil {
			continue
		}
		if st.end || st.typ == "Succeed" || st.typ == "Fail" {
			terminal = true
		}
		for _, t := range st.targets() {
			if _, ok := m.states[t]; !ok {
				p.addf("%sstate %q: transition to %q, which is not a state of this machine", scope, n, t)
			}
		}
	}
	if !terminal && len(m.states) > 0 {
		p.addf("%sno state ends the machine (no End: true, Succeed or Fail state)", scope)
	}
	if _, ok := m.states[m.startAt]; !ok {
		return
	}
	reached := m.reachable()
	for _, n := range m.names {
		if !reached[n] {
			p.addf("%sstate %q is unreachable from StartAt %q", scope, n, m.startAt)
		}
	}
}

// reachable returns the states reachable from StartAt.
func (m *Machine) reachable() map[string]bool {
	reached := map[string]bool{m.startAt: true}
	queue := []string{m.startAt}
	for len(queue) > 0 {
		st := m.states[queue[0]]
		queue = queue[1:]
		if st == nil {
			continue
		}
		for _, t := range st.targets() {
			if !reached[t] {
				reached[t] = true
				queue = append(queue, t)
			}
		}
	}
	return reached
}

var stateFields = map[string][]string{
	"Pass":     {"Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "Result"},
	"Task":     {"Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector", "Retry", "Catch", "Resource", "TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds", "HeartbeatSecondsPath"},
	"Choice":   {"Choices", "Default", "InputPath", "OutputPath"},
	"Wait":     {"Next", "End", "InputPath", "OutputPath", "Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
	"Succeed":  {"InputPath", "OutputPath"},
	"Fail":     {"Error", "ErrorPath", "Cause", "CausePath"},
	"Parallel": {"Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector", "Retry", "Catch", "Branches"},
	"Map": {"Next", "End", "InputPath", "OutputPath", "ResultPath", "Parameters", "ItemSelector", "ResultSelector", "Retry", "Catch",
		"Iterator", "ItemProcessor", "ItemsPath", "MaxConcurrency", "MaxConcurrencyPath", "Label"},
}

func (p *parser) state(name string, obj map[string]any, where string) *state {
	typ, _ := obj["Type"].(string)
	fields, ok := stateFields[typ]
	if !ok {
		p.addf("%s: Type must be one of Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map; got %v", where, obj["Type"])
		return nil
	}
	st := &state{name: name, typ: typ}
	p.queryLanguage(obj, where+": ")
	p.unknownFields(obj, fields, typ, where)
	switch typ {
	case "Choice", "Succeed", "Fail":
	default:
		p.transition(st, obj, where)
	}
	p.dataFields(st, obj, where)
	switch typ {
	case "Pass":
		st.result, st.hasResult = obj["Result"]
	case "Task":
		p.taskFields(st, obj, where)
	case "Choice":
		p.choiceFields(st, obj, where)
	case "Wait":
		p.waitFields(st, obj, where)
	case "Fail":
		st.errorName, st.errorPath, st.errorCall = p.failField(obj, "Error", where)
		st.cause, st.causePath, st.causeCall = p.failField(obj, "Cause", where)
	case "Parallel":
		p.parallelFields(st, obj, where)
	case "Map":
		p.mapFields(st, obj, where)
	}
	return st
}

// unknownFields names each field a state of type typ may not have, saying why when
// it is a feature we refuse on purpose.
func (p *parser) unknownFields(obj map[string]any, fields []string, typ, where string) {
	allowed := map[string]bool{"Type": true, "Comment": true, "QueryLanguage": true}
	for _, f := range fields {
		allowed[f] = true
	}
	for k := range obj {
		if allowed[k] {
			continue
		}
		switch k {
		case "ItemReader", "ItemBatcher", "ResultWriter":
			p.addf("%s: field %q (distributed Map) is not supported", where, k)
		case "Assign", "Arguments", "Output", "Variables":
			p.addf("%s: field %q (JSONata / variables) is not supported", where, k)
		case "ToleratedFailurePercentage", "ToleratedFailurePercentagePath", "ToleratedFailureCount", "ToleratedFailureCountPath":
			p.addf("%s: field %q is a Distributed Map field; an Inline Map fails on its first failed iteration, "+
				"and Distributed Map is not supported: remove it, or add a Catch inside ItemProcessor to let an item fail "+
				"without failing the Map", where, k)
		default:
			p.addf("%s: field %q is not allowed in a %s state", where, k, typ)
		}
	}
}

// transition reads Next or End (exactly one) of a state that has them.
func (p *parser) transition(st *state, obj map[string]any, where string) {
	st.next = p.stateName(obj, "Next", where)
	if end, ok := obj["End"]; ok {
		b, ok := end.(bool)
		if !ok {
			p.addf("%s: End must be true or false", where)
		}
		st.end = b
	}
	switch {
	case st.next != "" && st.end:
		p.addf("%s: has both Next and End; use one", where)
	case st.next == "" && !st.end:
		p.addf("%s: needs Next (the following state) or End: true", where)
	}
}

// dataFields reads the input/output processing fields and, where the type has
// them, Retry and Catch.
func (p *parser) dataFields(st *state, obj map[string]any, where string) {
	if st.typ != "Fail" {
		st.inputPath, st.inputNull = p.optPath(obj, "InputPath", where)
		st.outputPath, st.outputNull = p.optPath(obj, "OutputPath", where)
	}
	st.resultPath, st.resultNull = p.resultPath(obj, where)
	st.parameters = p.template(obj, "Parameters", where)
	st.resultSelector = p.template(obj, "ResultSelector", where)
	if st.typ == "Task" || st.typ == "Parallel" || st.typ == "Map" {
		st.retry = p.retriers(obj["Retry"], where)
		st.catch = p.catchers(obj["Catch"], where)
	}
}

func (p *parser) taskFields(st *state, obj map[string]any, where string) {
	res, ok := obj["Resource"].(string)
	if !ok || res == "" {
		p.addf("%s: Resource must be a non-empty string", where)
	}
	st.resource = res
	st.timeoutSecs, st.timeoutPath = p.secondsField(obj, "TimeoutSeconds", where)
	st.heartbeatSecs, st.heartbeatPath = p.secondsField(obj, "HeartbeatSeconds", where)
	if st.timeoutSecs > 0 && st.heartbeatSecs > 0 && st.heartbeatSecs >= st.timeoutSecs {
		p.addf("%s: HeartbeatSeconds (%d) must be smaller than TimeoutSeconds (%d)", where, st.heartbeatSecs, st.timeoutSecs)
	}
}

func (p *parser) choiceFields(st *state, obj map[string]any, where string) {
	list, ok := obj["Choices"].([]any)
	if !ok || len(list) == 0 {
		p.addf("%s: Choices must be a non-empty array of rules", where)
	}
	for i, r := range list {
		rule, err := parseChoiceRule(r, fmt.Sprintf("%s.Choices[%d]", where, i), true)
		if err != nil {
			p.addf("%v", err)
			continue
		}
		st.choices = append(st.choices, rule)
	}
	st.deflt = p.stateName(obj, "Default", where)
	if _, ok := obj["End"]; ok {
		p.addf("%s: a Choice state cannot have End; its rules and Default choose the next state", where)
	}
	if _, ok := obj["Next"]; ok {
		p.addf("%s: a Choice state cannot have Next; put Next in each rule and use Default", where)
	}
}

func (p *parser) waitFields(st *state, obj map[string]any, where string) {
	count := 0
	for _, f := range []string{"Seconds", "SecondsPath", "Timestamp", "TimestampPath"} {
		if _, ok := obj[f]; ok {
			count++
		}
	}
	if count != 1 {
		p.addf("%s: a Wait state needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath", where)
	}
	if v, ok := obj["Seconds"]; ok {
		st.seconds, st.hasSeconds = p.minInt(v, 0, where+".Seconds: must be a non-negative integer"), true
	}
	if v, ok := obj["Timestamp"]; ok {
		s, _ := v.(string)
		if _, ok := parseTimestamp(s); !ok {
			p.addf("%s.Timestamp: %v is not an RFC 3339 timestamp (e.g. 2016-03-14T01:59:00Z)", where, v)
		}
		st.timestamp = s
	}
	st.secondsPath = p.refField(obj, "SecondsPath", where)
	st.timestampPath = p.refField(obj, "TimestampPath", where)
}

func (p *parser) parallelFields(st *state, obj map[string]any, where string) {
	list, ok := obj["Branches"].([]any)
	if !ok || len(list) == 0 {
		p.addf("%s: Branches must be a non-empty array of state machines", where)
	}
	for i, b := range list {
		bo, ok := b.(map[string]any)
		if !ok {
			p.addf("%s.Branches[%d]: must be an object with StartAt and States", where, i)
			continue
		}
		sub := p.machine(bo, fmt.Sprintf("%s.Branches[%d]: ", where, i), false)
		sub.def, _ = encodeJSON(bo)
		st.branches = append(st.branches, sub)
	}
}

// stateName reads an optional field naming a state ("" when absent).
func (p *parser) stateName(obj map[string]any, field, where string) string {
	v, ok := obj[field]
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok || s == "" {
		p.addf("%s: %s must be a state name", where, field)
	}
	return s
}

// minInt reads an integer of at least lo, adding problem when it is not one.
func (p *parser) minInt(v any, lo int64, problem string) int64 {
	n, ok := toInt(v)
	if !ok || n < lo {
		p.addf("%s", problem)
	}
	return n
}

func (p *parser) mapFields(st *state, obj map[string]any, where string) {
	procField := "ItemProcessor"
	proc, hasProc := obj["ItemProcessor"]
	if it, ok := obj["Iterator"]; ok {
		if hasProc {
			p.addf("%s: has both Iterator and ItemProcessor; use ItemProcessor", where)
		}
		proc, hasProc, procField = it, true, "Iterator"
	}
	po, ok := proc.(map[string]any)
	if !hasProc || !ok {
		p.addf("%s: a Map state needs ItemProcessor (or the older Iterator) with StartAt and States", where)
	} else {
		if pc, ok := po["ProcessorConfig"].(map[string]any); ok {
			switch mode, ok := pc["Mode"]; {
			case !ok, mode == "INLINE":
			case mode == "DISTRIBUTED":
				// Step Functions runs a Distributed Map's items as child executions and fails it
				// with States.ExceedToleratedFailureThreshold when an item fails; the embedded
				// engine runs items inline. Refused, so one definition never behaves two ways.
				p.addf("%s.%s.ProcessorConfig.Mode: DISTRIBUTED is not supported (its items run as child executions "+
					"with their own failure rules on Step Functions); use INLINE", where, procField)
			default:
				p.addf("%s.%s.ProcessorConfig.Mode: must be INLINE", where, procField)
			}
		}
		st.processor = p.machine(po, fmt.Sprintf("%s.%s: ", where, procField), false)
		st.processor.def, _ = encodeJSON(po)
	}
	if _, ok := obj["Parameters"]; ok {
		if _, ok := obj["ItemSelector"]; ok {
			p.addf("%s: has both Parameters and ItemSelector; use ItemSelector", where)
		}
		st.itemSelector, st.parameters = st.parameters, nil
	} else {
		st.itemSelector = p.template(obj, "ItemSelector", where)
	}
	st.itemsPath = p.refField(obj, "ItemsPath", where)
	if v, ok := obj["MaxConcurrency"]; ok {
		n, ok := toInt(v)
		if !ok || n < 0 {
			p.addf("%s.MaxConcurrency: must be a non-negative integer (0 = no limit)", where)
		}
		st.maxConcurrency = int(n)
	}
	st.maxConcPath = p.refField(obj, "MaxConcurrencyPath", where)
	if st.maxConcPath != nil && st.maxConcurrency > 0 {
		p.addf("%s: has both MaxConcurrency and MaxConcurrencyPath", where)
	}
}

// queryLanguage checks a QueryLanguage field (top level or on a state). JSONPath is the
// default and what AWS's Workflow Studio writes on every state; JSONata is refused.
func (p *parser) queryLanguage(obj map[string]any, prefix string) {
	ql, ok := obj["QueryLanguage"]
	if !ok {
		return
	}
	switch ql {
	case "JSONPath":
	case "JSONata":
		p.addf("%sQueryLanguage \"JSONata\" is not supported by the embedded engine: write the definition in JSONPath "+
			"(InputPath, Parameters, ResultSelector, ResultPath, OutputPath) or leave QueryLanguage out", prefix)
	default:
		p.addf("%sQueryLanguage must be \"JSONPath\" (or \"JSONata\", which is not supported); got %v", prefix, ql)
	}
}

func (p *parser) optPath(obj map[string]any, field, where string) (*jsonPath, bool) {
	v, ok := obj[field]
	if !ok {
		return nil, false
	}
	if v == nil {
		return nil, true
	}
	s, ok := v.(string)
	if !ok {
		p.addf("%s.%s: must be a path string or null", where, field)
		return nil, false
	}
	jp, err := compilePath(s)
	if err != nil {
		p.addf("%s.%s: %v", where, field, err)
		return nil, false
	}
	if jp.whole && !jp.context {
		return nil, false
	}
	return jp, false
}

func (p *parser) refField(obj map[string]any, field, where string) *refPath {
	v, ok := obj[field]
	if !ok {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		p.addf("%s.%s: must be a reference path string", where, field)
		return nil
	}
	rp, err := compileRefPath(s)
	if err != nil {
		p.addf("%s.%s: %v", where, field, err)
		return nil
	}
	return rp
}

func (p *parser) template(obj map[string]any, field, where string) *payloadTemplate {
	v, ok := obj[field]
	if !ok {
		return nil
	}
	t, err := compileTemplate(v, where+"."+field)
	if err != nil {
		p.addf("%v", err)
		return nil
	}
	return t
}

func (p *parser) secondsField(obj map[string]any, field, where string) (int, *refPath) {
	rp := p.refField(obj, field+"Path", where)
	v, ok := obj[field]
	if !ok {
		return 0, rp
	}
	if rp != nil {
		p.addf("%s: has both %s and %sPath", where, field, field)
	}
	n, ok := toInt(v)
	if !ok || n <= 0 {
		p.addf("%s.%s: must be a positive integer", where, field)
	}
	return int(n), rp
}

func (p *parser) failField(obj map[string]any, field, where string) (string, *refPath, *intrinsic) {
	var lit string
	if v, ok := obj[field]; ok {
		s, ok := v.(string)
		if !ok {
			p.addf("%s.%s: must be a string", where, field)
		}
		lit = s
		if _, ok := obj[field+"Path"]; ok {
			p.addf("%s: has both %s and %sPath", where, field, field)
		}
	}
	v, ok := obj[field+"Path"]
	if !ok {
		return lit, nil, nil
	}
	s, _ := v.(string)
	if isIntrinsic(s) {
		call, err := parseIntrinsic(s)
		if err != nil {
			p.addf("%s.%sPath: %v", where, field, err)
		}
		return lit, nil, call
	}
	return lit, p.refField(obj, field+"Path", where), nil
}

func (p *parser) errorEquals(v any, where string) []string {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		p.addf("%s.ErrorEquals: must be a non-empty array of error names", where)
		return nil
	}
	var out []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok || s == "" {
			p.addf("%s.ErrorEquals[%d]: must be an error name", where, i)
			continue
		}
		if s == ErrAll && len(list) > 1 {
			p.addf("%s.ErrorEquals: States.ALL must appear alone", where)
		}
		out = append(out, s)
	}
	return out
}

func (p *parser) retriers(v any, where string) []*retrier {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		p.addf("%s.Retry: must be an array of retriers", where)
		return nil
	}
	var out []*retrier
	for i, e := range list {
		w := fmt.Sprintf("%s.Retry[%d]", where, i)
		obj, ok := e.(map[string]any)
		if !ok {
			p.addf("%s: must be an object", w)
			continue
		}
		r := p.retrier(obj, w)
		if len(r.errorEquals) == 1 && r.errorEquals[0] == ErrAll && i != len(list)-1 {
			p.addf("%s: a retrier with States.ALL must be the last one", w)
		}
		out = append(out, r)
	}
	return out
}

func (p *parser) retrier(obj map[string]any, w string) *retrier {
	r := &retrier{interval: 1, maxAttempts: 3, backoffRate: 2}
	for k, fv := range obj {
		switch k {
		case "ErrorEquals":
			r.errorEquals = p.errorEquals(fv, w)
		case "IntervalSeconds":
			r.interval = float64(p.minInt(fv, 1, w+".IntervalSeconds: must be a positive integer"))
		case "MaxAttempts":
			r.maxAttempts = int(p.minInt(fv, 0, w+".MaxAttempts: must be a non-negative integer"))
		case "BackoffRate":
			f, ok := toFloat(fv)
			if !ok || f < 1 {
				p.addf("%s.BackoffRate: must be a number >= 1.0", w)
			}
			r.backoffRate = f
		case "MaxDelaySeconds":
			r.maxDelay = float64(p.minInt(fv, 1, w+".MaxDelaySeconds: must be a positive integer"))
		case "JitterStrategy":
			switch fv {
			case "FULL":
				r.jitterFull = true
			case "NONE":
			default:
				p.addf("%s.JitterStrategy: must be FULL or NONE", w)
			}
		case "Comment":
		default:
			p.addf("%s: unknown field %q", w, k)
		}
	}
	if _, ok := obj["ErrorEquals"]; !ok {
		p.addf("%s: missing ErrorEquals", w)
	}
	return r
}

// resultPath reads obj's ResultPath (of a state or a catcher): absent is the
// default ($, nil here), null discards the result.
func (p *parser) resultPath(obj map[string]any, where string) (rp *refPath, null bool) {
	v, ok := obj["ResultPath"]
	if !ok {
		return nil, false
	}
	if v == nil {
		return nil, true
	}
	s, ok := v.(string)
	if !ok {
		p.addf("%s.ResultPath: must be a reference path or null", where)
		return nil, false
	}
	rp, err := compileRefPath(s)
	switch {
	case err != nil:
		p.addf("%s.ResultPath: %v", where, err)
	case rp.context:
		p.addf("%s.ResultPath: cannot write into the context object ($$)", where)
	default:
		return rp, false
	}
	return nil, false
}

func (p *parser) catchers(v any, where string) []*catcher {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		p.addf("%s.Catch: must be an array of catchers", where)
		return nil
	}
	var out []*catcher
	for i, e := range list {
		w := fmt.Sprintf("%s.Catch[%d]", where, i)
		obj, ok := e.(map[string]any)
		if !ok {
			p.addf("%s: must be an object", w)
			continue
		}
		c := &catcher{}
		for k, fv := range obj {
			switch k {
			case "ErrorEquals":
				c.errorEquals = p.errorEquals(fv, w)
			case "Next":
				s, ok := fv.(string)
				if !ok || s == "" {
					p.addf("%s.Next: must be a state name", w)
				}
				c.next = s
			case "ResultPath":
				c.resultPath, c.resultNull = p.resultPath(obj, w)
			case "Comment":
			default:
				p.addf("%s: unknown field %q", w, k)
			}
		}
		if _, ok := obj["ErrorEquals"]; !ok {
			p.addf("%s: missing ErrorEquals", w)
		}
		if c.next == "" {
			p.addf("%s: missing Next", w)
		}
		if len(c.errorEquals) == 1 && c.errorEquals[0] == ErrAll && i != len(list)-1 {
			p.addf("%s: a catcher with States.ALL must be the last one", w)
		}
		out = append(out, c)
	}
	return out
}

// StartAt returns the name of the first state.
func (m *Machine) StartAt() string { return m.startAt }

// Comment returns the top-level Comment.
func (m *Machine) Comment() string { return m.comment }

// TimeoutSeconds returns the top-level TimeoutSeconds; 0 = none.
func (m *Machine) TimeoutSeconds() int { return m.timeout }

// Definition returns the definition as parsed (for a branch: its own object).
func (m *Machine) Definition() json.RawMessage { return m.def }

// States returns the machine's state names, sorted (branch states not included).
func (m *Machine) States() []string { return append([]string(nil), m.names...) }

// IsParseError reports whether err came from Parse rejecting a definition.
func IsParseError(err error) bool {
	var pe *ParseError
	return errors.As(err, &pe)
}
