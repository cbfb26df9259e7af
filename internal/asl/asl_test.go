package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func mustParse(t testing.TB, def string) *Machine {
	t.Helper()
	m, err := Parse([]byte(def))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestParseRejectsWithMessagesNamingStateAndField(t *testing.T) {
	tests := []struct {
		name, def string
		want      []string // substrings of the error
	}{
		{"unknown next", `{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"B"}}}`, []string{`state "A"`, `"B"`, "not a state"}},
		{"missing next", `{"StartAt":"A","States":{"A":{"Type":"Pass"}}}`, []string{`state "A"`, "needs Next"}},
		{"both next and end", `{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"A","End":true}}}`, []string{`state "A"`, "both Next and End"}},
		{"unreachable", `{"StartAt":"A","States":{"A":{"Type":"Succeed"},"B":{"Type":"Succeed"}}}`, []string{`state "B"`, "unreachable"}},
		{"bad start", `{"StartAt":"X","States":{"A":{"Type":"Succeed"}}}`, []string{`StartAt "X"`}},
		{"bad input path", `{"StartAt":"A","States":{"A":{"Type":"Pass","InputPath":"a.b","End":true}}}`, []string{`state "A".InputPath`, "must start with"}},
		{"result path wildcard", `{"StartAt":"A","States":{"A":{"Type":"Pass","ResultPath":"$..a","End":true}}}`, []string{`state "A".ResultPath`, "reference path"}},
		{"choice with end", `{"StartAt":"C","States":{"C":{"Type":"Choice","End":true,"Choices":[{"Variable":"$.a","IsNull":true,"Next":"S"}]},"S":{"Type":"Succeed"}}}`, []string{`state "C"`, "cannot have End"}},
		{"nested next", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Not":{"Variable":"$.a","IsNull":true,"Next":"S"},"Next":"S"}]},"S":{"Type":"Succeed"}}}`, []string{`state "C".Choices[0].Not`, "Next"}},
		{"two operators", `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.a","IsNull":true,"IsString":true,"Next":"S"}]},"S":{"Type":"Succeed"}}}`, []string{"exactly one operator"}},
		{"states.all not last", `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","Retry":[{"ErrorEquals":["States.ALL"]},{"ErrorEquals":["X"]}],"End":true}}}`, []string{`state "T".Retry[0]`, "last"}},
		{"states.all not alone", `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","Catch":[{"ErrorEquals":["States.ALL","X"],"Next":"T"}],"End":true}}}`, []string{"alone"}},
		{"catch without next", `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","Catch":[{"ErrorEquals":["X"]}],"End":true}}}`, []string{`Catch[0]`, "missing Next"}},
		{"branch invalid", `{"StartAt":"P","States":{"P":{"Type":"Parallel","End":true,"Branches":[{"StartAt":"X","States":{"X":{"Type":"Pass","Next":"Y"}}}]}}}`, []string{`Branches[0]`, `"Y"`}},
		{"branch to outside", `{"StartAt":"P","States":{"P":{"Type":"Parallel","Next":"Z","Branches":[{"StartAt":"X","States":{"X":{"Type":"Pass","Next":"Z"}}}]},"Z":{"Type":"Succeed"}}}`, []string{`Branches[0]`, `"Z"`}},
		{"duplicate across map", `{"StartAt":"M","States":{"M":{"Type":"Map","End":true,"ItemProcessor":{"StartAt":"M","States":{"M":{"Type":"Pass","End":true}}}}}}`, []string{"already exists"}},
		{"wait two fields", `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":1,"Timestamp":"2020-01-01T00:00:00Z","End":true}}}`, []string{"exactly one of"}},
		{"bad intrinsic", `{"StartAt":"A","States":{"A":{"Type":"Pass","Parameters":{"x.$":"States.Format('a'"},"End":true}}}`, []string{`Parameters.x.$`, "missing"}},
		{"intrinsic arity", `{"StartAt":"A","States":{"A":{"Type":"Pass","Parameters":{"x.$":"States.MathAdd(1)"},"End":true}}}`, []string{"takes 2"}},
		{"duplicate template key", `{"StartAt":"A","States":{"A":{"Type":"Pass","Parameters":{"x":1,"x.$":"$.a"},"End":true}}}`, []string{"both set"}},
		{"unknown field", `{"StartAt":"A","States":{"A":{"Type":"Pass","Resultt":1,"End":true}}}`, []string{`"Resultt"`}},
		{"heartbeat >= timeout", `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","TimeoutSeconds":5,"HeartbeatSeconds":5,"End":true}}}`, []string{"HeartbeatSeconds"}},
		{"not json", `{"StartAt":`, []string{"not valid JSON"}},
		{"jsonata on a state", `{"StartAt":"A","States":{"A":{"Type":"Pass","QueryLanguage":"JSONata","End":true}}}`, []string{`state "A": QueryLanguage "JSONata" is not supported`, "JSONPath"}},
		{"jsonata at the top", `{"QueryLanguage":"JSONata","StartAt":"A","States":{"A":{"Type":"Pass","End":true}}}`, []string{`QueryLanguage "JSONata" is not supported`}},
		{"unknown query language", `{"StartAt":"A","States":{"A":{"Type":"Pass","QueryLanguage":"XPath","End":true}}}`, []string{`state "A": QueryLanguage must be "JSONPath"`, "XPath"}},
		{"tolerance on an inline map", `{"StartAt":"M","States":{"M":{"Type":"Map","ToleratedFailureCount":1,"End":true,"ItemProcessor":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}}}`,
			[]string{`state "M": field "ToleratedFailureCount" is a Distributed Map field`, "Inline Map fails on its first failed iteration", "Catch inside ItemProcessor"}},
		{"tolerance path on an inline map", `{"StartAt":"M","States":{"M":{"Type":"Map","ToleratedFailurePercentagePath":"$.p","End":true,"ItemProcessor":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}}}`,
			[]string{`"ToleratedFailurePercentagePath" is a Distributed Map field`}},
		{"distributed map", `{"StartAt":"M","States":{"M":{"Type":"Map","End":true,"ItemProcessor":{"ProcessorConfig":{"Mode":"DISTRIBUTED","ExecutionType":"STANDARD"},"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}}}}`,
			[]string{`state "M".ItemProcessor.ProcessorConfig.Mode: DISTRIBUTED is not supported`, "use INLINE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.def))
			if err == nil {
				t.Fatal("Parse accepted an invalid definition")
			}
			if !IsParseError(err) {
				t.Fatalf("error is %T, want *ParseError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Workflow Studio writes "QueryLanguage": "JSONPath" at the top and on every state.
func TestParseAcceptsQueryLanguageJSONPath(t *testing.T) {
	m := mustParse(t, `{"QueryLanguage":"JSONPath","StartAt":"M","States":{
		"M":{"Type":"Map","QueryLanguage":"JSONPath","Next":"W","ItemProcessor":{"ProcessorConfig":{"Mode":"INLINE"},"StartAt":"T","States":{
			"T":{"Type":"Task","QueryLanguage":"JSONPath","Resource":"r","End":true}}}},
		"W":{"Type":"Wait","QueryLanguage":"JSONPath","Seconds":0,"Next":"C"},
		"C":{"Type":"Choice","QueryLanguage":"JSONPath","Choices":[{"Variable":"$[0]","IsPresent":true,"Next":"P"}],"Default":"F"},
		"P":{"Type":"Parallel","QueryLanguage":"JSONPath","Next":"S","Branches":[{"StartAt":"B","States":{"B":{"Type":"Pass","QueryLanguage":"JSONPath","End":true}}}]},
		"S":{"Type":"Succeed","QueryLanguage":"JSONPath"},
		"F":{"Type":"Fail","QueryLanguage":"JSONPath"}}}`)
	if m.StartAt() != "M" {
		t.Fatalf("StartAt = %q", m.StartAt())
	}
}

func TestMachineAccessors(t *testing.T) {
	def := `{"Comment":"c","TimeoutSeconds":30,"StartAt":"A","States":{"A":{"Type":"Pass","Next":"B"},"B":{"Type":"Succeed"}}}`
	m := mustParse(t, def)
	if m.StartAt() != "A" || m.Comment() != "c" || m.TimeoutSeconds() != 30 || string(m.Definition()) != def {
		t.Fatalf("accessors: %q %q %d %s", m.StartAt(), m.Comment(), m.TimeoutSeconds(), m.Definition())
	}
	if got := fmt.Sprint(m.States()); got != "[A B]" {
		t.Fatalf("States() = %s", got)
	}
}

func evalParams(t *testing.T, params string, input string, c Context) (json.RawMessage, Action) {
	t.Helper()
	m := mustParse(t, `{"StartAt":"P","States":{"P":{"Type":"Pass","Parameters":`+params+`,"End":true}}}`)
	act, err := m.Enter(Cursor{State: "P", Input: json.RawMessage(input)}, c)
	if err != nil {
		t.Fatal(err)
	}
	return act.Output, act
}

func TestIntrinsicFunctions(t *testing.T) {
	input := `{"s":"a,b,,c","arr":[3,1,3],"o":{"a":1},"p":{"b":2},"n":5,"str":"{\"x\":[true]}"}`
	tests := []struct{ expr, want string }{
		{`States.Format('{} and {}', $.n, 'x')`, `"5 and x"`},
		{`States.Format('it\'s \{{}\}', $.s)`, `"it's {a,b,,c}"`},
		{`States.StringToJson($.str)`, `{"x":[true]}`},
		{`States.JsonToString($.o)`, `"{\"a\":1}"`},
		{`States.Array(1, 'two', null, true, $.o)`, `[1,"two",null,true,{"a":1}]`},
		{`States.Array()`, `[]`},
		{`States.ArrayPartition($.arr, 2)`, `[[3,1],[3]]`},
		{`States.ArrayContains($.arr, 1)`, `true`},
		{`States.ArrayContains($.arr, 7)`, `false`},
		{`States.ArrayRange(0, 10, 5)`, `[0,5,10]`},
		{`States.ArrayRange(5, 1, -2)`, `[5,3,1]`},
		{`States.ArrayGetItem($.arr, 2)`, `3`},
		{`States.ArrayLength($.arr)`, `3`},
		{`States.ArrayUnique($.arr)`, `[3,1]`},
		{`States.Base64Encode('Data to encode')`, `"RGF0YSB0byBlbmNvZGU="`},
		{`States.Base64Decode('RGF0YSB0byBlbmNvZGU=')`, `"Data to encode"`},
		{`States.Hash('input data', 'SHA-1')`, `"aaff4a450a104cd177d28d18d74485e8cae074b7"`},
		{`States.Hash('', 'SHA-384')`, `"38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"`},
		{`States.JsonMerge($.o, $.p, false)`, `{"a":1,"b":2}`},
		{`States.MathAdd($.n, -7)`, `-2`},
		{`States.MathRandom(1, 2)`, `1`},
		{`States.StringSplit($.s, ',')`, `["a","b","c"]`},
		{`States.StringSplit('a.b+c', '.+')`, `["a","b","c"]`},
		{`States.ArrayLength(States.StringSplit($.s, ','))`, `3`},
		{`States.Format('{}', States.Array(1))`, ``}, // objects/arrays cannot be formatted
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			params, _ := json.Marshal(map[string]string{"v.$": tc.expr})
			_, act := evalParams(t, string(params), input, Context{Rand: func() float64 { return 0.3 }})
			if tc.want == "" {
				if act.Kind != ActFail || act.Error != ErrIntrinsicFailure {
					t.Fatalf("got %v %s, want States.IntrinsicFailure", act.Kind, act.Output)
				}
				return
			}
			if act.Kind != ActSucceed {
				t.Fatalf("got %v %s: %s", act.Kind, act.Error, act.Cause)
			}
			want := `{"v":` + tc.want + `}`
			if !jsonEq(t, act.Output, json.RawMessage(want)) {
				t.Fatalf("got %s, want %s", act.Output, want)
			}
		})
	}
}

func TestIntrinsicErrors(t *testing.T) {
	for _, expr := range []string{
		`States.ArrayGetItem($.a, 5)`, `States.ArrayPartition($.a, 0)`, `States.ArrayRange(1, 3000, 1)`, `States.ArrayRange(1, 2, 0)`,
		`States.StringToJson('not json')`, `States.Base64Decode('%%%')`, `States.Hash('x', 'SHA-3')`, `States.JsonMerge($.o, $.o, true)`,
		`States.MathAdd(1.5, 1)`, `States.MathRandom(5, 5)`, `States.Format('{} {}', 1)`, `States.Format('{}', 1, 2)`, `States.ArrayLength($.missing)`,
	} {
		params, _ := json.Marshal(map[string]string{"v.$": expr})
		_, act := evalParams(t, string(params), `{"a":[1],"o":{}}`, Context{})
		if act.Kind != ActFail || act.Error != ErrIntrinsicFailure {
			t.Errorf("%s: got %v %s %s, want States.IntrinsicFailure", expr, act.Kind, act.Error, act.Output)
		}
	}
}

func TestUUIDIsVersion4AndUsesContextRand(t *testing.T) {
	var calls int
	_, act := evalParams(t, `{"id.$":"States.UUID()"}`, `{}`, Context{Rand: func() float64 { calls++; return 0.25 }})
	var out struct{ ID string }
	_ = json.Unmarshal(act.Output, &out)
	if len(out.ID) != 36 || out.ID[14] != '4' || !strings.Contains("89ab", string(out.ID[19])) || calls != 4 {
		t.Fatalf("UUID %q (rand calls %d)", out.ID, calls)
	}
}

func TestContextObject(t *testing.T) {
	idx := 2
	c := Context{ExecutionID: "arn:x", ExecutionName: "run-1", ExecutionInput: json.RawMessage(`{"k":1}`),
		StartTime: time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC), StateMachine: "sm", TaskToken: "tok",
		EnteredTime: time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC), MapItemIndex: &idx, MapItemValue: json.RawMessage(`"v"`)}
	out, _ := evalParams(t, `{"id.$":"$$.Execution.Id","name.$":"$$.Execution.Name","in.$":"$$.Execution.Input.k","start.$":"$$.Execution.StartTime",
		"sm.$":"$$.StateMachine.Name","state.$":"$$.State.Name","entered.$":"$$.State.EnteredTime","retry.$":"$$.State.RetryCount","tok.$":"$$.Task.Token",
		"idx.$":"$$.Map.Item.Index","val.$":"$$.Map.Item.Value"}`, `{}`, c)
	want := `{"id":"arn:x","name":"run-1","in":1,"start":"2024-01-02T03:04:05.006Z","sm":"sm","state":"P","entered":"2024-01-02T03:04:06.000Z","retry":0,"tok":"tok","idx":2,"val":"v"}`
	if !jsonEq(t, out, json.RawMessage(want)) {
		t.Fatalf("got %s\nwant %s", out, want)
	}
}

func TestPathsAndResultPath(t *testing.T) {
	tests := []struct {
		name, state, input, want, wantErr string
	}{
		{"resultpath default replaces", `{"Type":"Pass","Result":{"r":1},"End":true}`, `{"a":1}`, `{"r":1}`, ""},
		{"resultpath creates objects", `{"Type":"Pass","Result":1,"ResultPath":"$.x.y.z","End":true}`, `{"a":1}`, `{"a":1,"x":{"y":{"z":1}}}`, ""},
		{"resultpath overwrites field", `{"Type":"Pass","Result":1,"ResultPath":"$.a","End":true}`, `{"a":{"b":2}}`, `{"a":1}`, ""},
		{"resultpath array index", `{"Type":"Pass","Result":9,"ResultPath":"$.a[1]","End":true}`, `{"a":[1,2]}`, `{"a":[1,9]}`, ""},
		{"resultpath into scalar fails", `{"Type":"Pass","Result":1,"ResultPath":"$.a.b","End":true}`, `{"a":"s"}`, "", ErrResultPathMatchFailure},
		{"resultpath on array input fails", `{"Type":"Pass","Result":1,"ResultPath":"$.a","End":true}`, `[1]`, "", ErrResultPathMatchFailure},
		{"outputpath null", `{"Type":"Pass","OutputPath":null,"End":true}`, `{"a":1}`, `{}`, ""},
		{"outputpath missing", `{"Type":"Pass","OutputPath":"$.nope","End":true}`, `{"a":1}`, "", ErrRuntime},
		{"inputpath missing", `{"Type":"Pass","InputPath":"$.nope","End":true}`, `{"a":1}`, "", ErrRuntime},
		{"inputpath slice", `{"Type":"Pass","InputPath":"$.a[0:2]","End":true}`, `{"a":[1,2,3]}`, `[1,2]`, ""},
		{"inputpath descent", `{"Type":"Pass","InputPath":"$..id","End":true}`, `{"a":[{"id":1},{"x":{"id":2}}]}`, `[1,2]`, ""},
		{"inputpath negative index", `{"Type":"Pass","InputPath":"$.a[-1]","End":true}`, `{"a":[1,2,3]}`, `3`, ""},
		{"parameters array of templates", `{"Type":"Pass","Parameters":{"l":[{"x.$":"$.a"},2]},"End":true}`, `{"a":1}`, `{"l":[{"x":1},2]}`, ""},
		{"large integers keep precision", `{"Type":"Pass","End":true}`, `{"n":9007199254740993}`, `{"n":9007199254740993}`, ""},
		{"html not escaped", `{"Type":"Pass","End":true}`, `{"s":"<a&b>"}`, `{"s":"<a&b>"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustParse(t, `{"StartAt":"S","States":{"S":`+tc.state+`}}`)
			act, err := m.Enter(Cursor{State: "S", Input: json.RawMessage(tc.input)}, Context{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				if act.Kind != ActFail || act.Error != tc.wantErr {
					t.Fatalf("got %v %s %s, want %s", act.Kind, act.Error, act.Output, tc.wantErr)
				}
				return
			}
			if act.Kind != ActSucceed || string(act.Output) != tc.want {
				t.Fatalf("got %v %s (%s), want %s", act.Kind, act.Output, act.Cause, tc.want)
			}
		})
	}
}

func TestEnterDoesNotModifyInput(t *testing.T) {
	m := mustParse(t, `{"StartAt":"S","States":{"S":{"Type":"Pass","Result":1,"ResultPath":"$.x","End":true}}}`)
	in := json.RawMessage(`{"a":1}`)
	if _, err := m.Enter(Cursor{State: "S", Input: in}, Context{}); err != nil || string(in) != `{"a":1}` {
		t.Fatalf("input changed to %s (%v)", in, err)
	}
}

func TestChoiceOperators(t *testing.T) {
	input := `{"s":"abc","n":10,"f":1.5,"b":true,"t":"2020-01-01T00:00:00Z","nul":null,"o":{"x":1},"glob":"a*b\\c","n2":10}`
	tests := []struct {
		rule string
		want bool
	}{
		{`"Variable":"$.s","StringEquals":"abc"`, true},
		{`"Variable":"$.s","StringLessThan":"abd"`, true},
		{`"Variable":"$.s","StringGreaterThan":"abc"`, false},
		{`"Variable":"$.s","StringLessThanEquals":"abc"`, true},
		{`"Variable":"$.s","StringGreaterThanEquals":"abd"`, false},
		{`"Variable":"$.s","StringMatches":"a*"`, true},
		{`"Variable":"$.s","StringMatches":"*c"`, true},
		{`"Variable":"$.s","StringMatches":"a*b*c"`, true},
		{`"Variable":"$.s","StringMatches":"b*"`, false},
		{`"Variable":"$.glob","StringMatches":"a\\*b\\\\c"`, true},
		{`"Variable":"$.glob","StringMatches":"a\\*b\\\\d"`, false},
		{`"Variable":"$.n","NumericEquals":10.0`, true},
		{`"Variable":"$.f","NumericLessThan":2`, true},
		{`"Variable":"$.n","NumericGreaterThan":10`, false},
		{`"Variable":"$.n","NumericLessThanEquals":10`, true},
		{`"Variable":"$.n","NumericGreaterThanEquals":11`, false},
		{`"Variable":"$.n","NumericEqualsPath":"$.n2"`, true},
		{`"Variable":"$.f","NumericLessThanPath":"$.n"`, true},
		{`"Variable":"$.n","NumericGreaterThanEqualsPath":"$.f"`, true},
		{`"Variable":"$.b","BooleanEquals":true`, true},
		{`"Variable":"$.t","TimestampEquals":"2020-01-01T01:00:00+01:00"`, true},
		{`"Variable":"$.t","TimestampLessThan":"2020-01-01T00:00:01Z"`, true},
		{`"Variable":"$.t","TimestampGreaterThanEquals":"2020-01-01T00:00:00Z"`, true},
		{`"Variable":"$.s","TimestampEquals":"2020-01-01T00:00:00Z"`, false},
		{`"Variable":"$.t","TimestampLessThanEqualsPath":"$.t"`, true},
		{`"Variable":"$.s","StringGreaterThanPath":"$.t"`, true},
		{`"Variable":"$.nul","IsNull":true`, true},
		{`"Variable":"$.o","IsNull":false`, true},
		{`"Variable":"$.f","IsNumeric":true`, true},
		{`"Variable":"$.s","IsString":true`, true},
		{`"Variable":"$.b","IsBoolean":false`, false},
		{`"Variable":"$.t","IsTimestamp":true`, true},
		{`"Variable":"$.s","IsTimestamp":true`, false},
		{`"Variable":"$.zzz","IsPresent":false`, true},
		{`"Variable":"$.o.x","IsPresent":true`, true},
		{`"Variable":"$$.Execution.Name","StringEquals":"exec"`, true},
		{`"Not":{"Variable":"$.s","StringEquals":"abc"}`, false},
		{`"And":[{"Variable":"$.b","BooleanEquals":true},{"Variable":"$.n","NumericEquals":10}]`, true},
		{`"Or":[{"Variable":"$.b","BooleanEquals":false},{"Variable":"$.n","NumericEquals":11}]`, false},
		{`"Variable":"$.n","StringEquals":"10"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			m := mustParse(t, `{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{`+tc.rule+`,"Next":"Y"}],"Default":"N"},"Y":{"Type":"Succeed"},"N":{"Type":"Succeed"}}}`)
			act, err := m.Enter(Cursor{State: "C", Input: json.RawMessage(input)}, Context{ExecutionName: "exec"})
			if err != nil {
				t.Fatal(err)
			}
			if act.Kind != ActNext {
				t.Fatalf("got %v %s %s", act.Kind, act.Error, act.Cause)
			}
			if got := act.Next == "Y"; got != tc.want {
				t.Fatalf("matched=%v, want %v", got, tc.want)
			}
		})
	}
}

func TestWaitUntil(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		state, input string
		want         time.Time
	}{
		{`{"Type":"Wait","Seconds":72000,"End":true}`, `{}`, now.Add(20 * time.Hour)},
		{`{"Type":"Wait","SecondsPath":"$.d","End":true}`, `{"d":30}`, now.Add(30 * time.Second)},
		{`{"Type":"Wait","Timestamp":"2024-02-01T00:00:00Z","End":true}`, `{}`, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)},
		{`{"Type":"Wait","TimestampPath":"$.at","End":true}`, `{"at":"2024-01-01T00:00:10+00:00"}`, now.Add(10 * time.Second)},
	}
	for _, tc := range tests {
		m := mustParse(t, `{"StartAt":"W","States":{"W":`+tc.state+`}}`)
		cur := Cursor{State: "W", Input: json.RawMessage(tc.input)}
		act, err := m.Enter(cur, Context{Now: now})
		if err != nil || act.Kind != ActWait || !act.Until.Equal(tc.want) {
			t.Fatalf("%s: got %v until %v (%v), want %v", tc.state, act.Kind, act.Until, err, tc.want)
		}
		after, err := m.AfterWait(cur, Context{Now: tc.want})
		if err != nil || after.Kind != ActSucceed || !jsonEq(t, after.Output, json.RawMessage(tc.input)) {
			t.Fatalf("AfterWait: %v %s %v", after.Kind, after.Output, err)
		}
	}
	m := mustParse(t, `{"StartAt":"W","States":{"W":{"Type":"Wait","SecondsPath":"$.d","End":true}}}`)
	act, _ := m.Enter(Cursor{State: "W", Input: json.RawMessage(`{"d":"soon"}`)}, Context{Now: now})
	if act.Kind != ActFail || act.Error != ErrRuntime {
		t.Fatalf("SecondsPath to a string: %v %s", act.Kind, act.Error)
	}
}

const retryingTask = `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","Parameters":{"x.$":"$.a"},"TimeoutSecondsPath":"$.to","HeartbeatSeconds":3,
	"Retry":[{"ErrorEquals":["Flaky"],"IntervalSeconds":2,"BackoffRate":3,"MaxAttempts":4,"MaxDelaySeconds":10},
	         {"ErrorEquals":["Jittery"],"IntervalSeconds":4,"JitterStrategy":"FULL"},
	         {"ErrorEquals":["States.ALL"],"MaxAttempts":0}],
	"Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":"$.err","Next":"H"}],"End":true},"H":{"Type":"Pass","End":true}}}`

func TestTaskActionAndRetryBackoff(t *testing.T) {
	m := mustParse(t, retryingTask)
	cur := Cursor{State: "T", Input: json.RawMessage(`{"a":1,"to":60}`)}
	act, err := m.Enter(cur, Context{})
	if err != nil || act.Kind != ActTask || act.Resource != "r" || string(act.TaskInput) != `{"x":1}` || act.Timeout != time.Minute || act.Heartbeat != 3*time.Second {
		t.Fatalf("Enter: %+v %v", act, err)
	}
	// Backoff 2, 6, 18→10 (MaxDelaySeconds), 10, then the retrier is spent and Catch applies.
	var delays []time.Duration
	for range 5 {
		act, err = m.TaskDone(cur, Context{}, nil, &Error{Name: "Flaky", Cause: "again"})
		if err != nil {
			t.Fatal(err)
		}
		if act.Kind != ActRetry {
			break
		}
		delays = append(delays, act.Delay)
		cur.Retries = act.Retries
	}
	if fmt.Sprint(delays) != "[2s 6s 10s 10s]" {
		t.Fatalf("delays %v", delays)
	}
	if act.Kind != ActNext || act.Next != "H" || string(act.Output) != `{"a":1,"err":{"Cause":"again","Error":"Flaky"},"to":60}` {
		t.Fatalf("after retries: %+v %s", act, act.Output)
	}
}

func TestRetryJitterErrorNamesAndSuccess(t *testing.T) {
	m := mustParse(t, retryingTask)
	cur := Cursor{State: "T", Input: json.RawMessage(`{"a":1,"to":60}`)}
	// FULL jitter scales the delay by Context.Rand; counters are per retrier.
	act, _ := m.TaskDone(Cursor{State: "T", Input: cur.Input, Retries: []int{4, 1, 0}}, Context{Rand: func() float64 { return 0.25 }}, nil, &Error{Name: "Jittery"})
	if act.Kind != ActRetry || act.Delay != 2*time.Second || fmt.Sprint(act.Retries) != "[4 2 0]" {
		t.Fatalf("jitter: %+v", act)
	}
	// A plain Go error is States.TaskFailed; DeadlineExceeded is States.Timeout; both reach the States.ALL catcher after MaxAttempts 0.
	for _, e := range []error{errors.New("plain"), context.DeadlineExceeded} {
		act, _ = m.TaskDone(Cursor{State: "T", Input: cur.Input}, Context{}, nil, e)
		if act.Kind != ActNext || act.Next != "H" {
			t.Fatalf("%v: %+v", e, act)
		}
	}
	// Success applies ResultPath... (none here: result replaces input).
	act, _ = m.TaskDone(Cursor{State: "T", Input: cur.Input}, Context{}, json.RawMessage(`{"ok":true}`), nil)
	if act.Kind != ActSucceed || string(act.Output) != `{"ok":true}` {
		t.Fatalf("success: %+v", act)
	}
}

func TestRuntimeErrorIsNotCaught(t *testing.T) {
	m := mustParse(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","InputPath":"$.missing",
		"Retry":[{"ErrorEquals":["States.ALL"]}],"Catch":[{"ErrorEquals":["States.ALL"],"Next":"H"}],"End":true},"H":{"Type":"Pass","End":true}}}`)
	act, err := m.Enter(Cursor{State: "T", Input: json.RawMessage(`{}`)}, Context{})
	if err != nil || act.Kind != ActFail || act.Error != ErrRuntime {
		t.Fatalf("got %+v %v, want ActFail States.Runtime", act, err)
	}
}

func TestErrorName(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("x"), ErrTaskFailed},
		{context.DeadlineExceeded, ErrTimeout},
		{fmt.Errorf("wrapped: %w", &Error{Name: "Recycler.NotReady"}), "Recycler.NotReady"},
		{&ExecutionError{Name: "Sub.Failed"}, "Sub.Failed"},
	} {
		if got := ErrorName(tc.err); got != tc.want {
			t.Errorf("ErrorName(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	_, err := Registry{}.Invoke(context.Background(), "nope", nil)
	if ErrorName(err) != ErrRuntime {
		t.Fatalf("unknown resource: %v", err)
	}
}

// TestRunnerWaitsOnItsClock drives a 20-hour Wait with a stepped fake clock.
func TestRunnerWaitsOnItsClock(t *testing.T) {
	m := mustParse(t, `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":72000,"Next":"T"},"T":{"Type":"Task","Resource":"r","End":true}}}`)
	fc := testingclock.NewFakeClock(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	r := &Runner{Clock: fc, Registry: Registry{"r": func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`"done"`), nil
	}}}
	type result struct {
		out json.RawMessage
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := r.Run(context.Background(), m, json.RawMessage(`{}`))
		done <- result{out, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !fc.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the Runner never waited on its clock")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case res := <-done:
		t.Fatalf("finished before the wait elapsed: %s %v", res.out, res.err)
	default:
	}
	fc.Step(20 * time.Hour)
	select {
	case res := <-done:
		if res.err != nil || string(res.out) != `"done"` {
			t.Fatalf("got %s %v", res.out, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not finish after the clock passed the deadline")
	}
}

func TestRunnerTaskTimeoutAndRetryDelays(t *testing.T) {
	m := mustParse(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"slow","TimeoutSeconds":5,
		"Retry":[{"ErrorEquals":["States.Timeout"],"IntervalSeconds":3,"MaxAttempts":2}],"End":true}}}`)
	clk := newInstantClock()
	var calls atomic.Int32
	r := &Runner{Clock: clk, Registry: Registry{"slow": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		clk.Step(6 * time.Second) // the task outlives its TimeoutSeconds
		<-ctx.Done()
		return nil, ctx.Err()
	}}}
	_, err := r.Run(context.Background(), m, nil)
	var ee *ExecutionError
	if !errors.As(err, &ee) || ee.Name != ErrTimeout {
		t.Fatalf("got %v, want States.Timeout", err)
	}
	if calls.Load() != 3 || fmt.Sprint(clk.waited) != "[3s 6s]" {
		t.Fatalf("calls %d, retry waits %v", calls.Load(), clk.waited)
	}
}

func TestRunnerMapMaxConcurrency(t *testing.T) {
	m := mustParse(t, `{"StartAt":"M","States":{"M":{"Type":"Map","MaxConcurrency":2,"ItemProcessor":{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","End":true}}},"End":true}}}`)
	var running, peak atomic.Int32
	var mu sync.Mutex
	release := make(chan struct{})
	r := &Runner{Clock: newInstantClock(), Registry: Registry{"r": func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		n := running.Add(1)
		mu.Lock()
		if n > peak.Load() {
			peak.Store(n)
		}
		mu.Unlock()
		<-release
		running.Add(-1)
		return in, nil
	}}}
	go func() {
		for range 6 {
			release <- struct{}{}
		}
	}()
	out, err := r.Run(context.Background(), m, json.RawMessage(`[1,2,3,4,5,6]`))
	if err != nil || string(out) != `[1,2,3,4,5,6]` {
		t.Fatalf("got %s %v", out, err)
	}
	if peak.Load() > 2 {
		t.Fatalf("%d items ran at once, MaxConcurrency is 2", peak.Load())
	}
}

func TestRunnerExecutionTimeout(t *testing.T) {
	m := mustParse(t, `{"TimeoutSeconds":10,"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","End":true}}}`)
	clk := newInstantClock()
	r := &Runner{Clock: clk, Registry: Registry{"r": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		clk.Step(11 * time.Second)
		<-ctx.Done()
		return nil, ctx.Err()
	}}}
	_, err := r.Run(context.Background(), m, nil)
	var ee *ExecutionError
	if !errors.As(err, &ee) || ee.Name != ErrTimeout {
		t.Fatalf("got %v, want States.Timeout", err)
	}
}

func TestBranchesDoneReportsLowestFailingBranch(t *testing.T) {
	m := mustParse(t, `{"StartAt":"P","States":{"P":{"Type":"Parallel","Branches":[
		{"StartAt":"A","States":{"A":{"Type":"Pass","End":true}}},{"StartAt":"B","States":{"B":{"Type":"Pass","End":true}}},{"StartAt":"C","States":{"C":{"Type":"Pass","End":true}}}],"End":true}}}`)
	cur := Cursor{State: "P", Input: json.RawMessage(`{}`)}
	act, _ := m.Enter(cur, Context{})
	if act.Kind != ActBranches || len(act.Branches) != 3 || act.Branches[2].Index != 2 {
		t.Fatalf("Enter: %+v", act)
	}
	act, err := m.BranchesDone(cur, Context{}, []BranchResult{{Output: json.RawMessage(`1`)}, {Error: "E1", Cause: "c1"}, {Error: "E2"}})
	if err != nil || act.Kind != ActFail || act.Error != "E1" || act.Cause != "c1" {
		t.Fatalf("got %+v %v", act, err)
	}
}
