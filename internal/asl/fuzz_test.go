package asl

import (
	"encoding/json"
	"testing"
)

// FuzzParse: Parse never panics, and an accepted machine can be entered from its
// StartAt without a contract error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"StartAt":"A","States":{"A":{"Type":"Pass","End":true}}}`,
		`{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Not":{"Variable":"$.a","IsNull":true},"Next":"S"}],"Default":"S"},"S":{"Type":"Succeed"}}}`,
		`{"StartAt":"P","States":{"P":{"Type":"Parallel","Branches":[{"StartAt":"X","States":{"X":{"Type":"Pass","End":true}}}],"End":true}}}`,
		`{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.i","ItemSelector":{"v.$":"$$.Map.Item.Value"},"ItemProcessor":{"StartAt":"Y","States":{"Y":{"Type":"Pass","End":true}}},"End":true}}}`,
		`{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"r","Retry":[{"ErrorEquals":["States.ALL"]}],"Catch":[{"ErrorEquals":["States.ALL"],"Next":"F"}],"End":true},"F":{"Type":"Fail","ErrorPath":"$.e"}}}`,
		`{"StartAt":"W","States":{"W":{"Type":"Wait","SecondsPath":"$.s","End":true}}}`,
		`{"StartAt":"A","States":{"A":{"Type":"Pass","Parameters":{"x.$":"States.Format('{}', $.a)"},"End":true}}}`,
		`{}`, `[]`, `{"StartAt":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, def []byte) {
		m, err := Parse(def)
		if err != nil {
			if !IsParseError(err) {
				t.Fatalf("Parse error %T is not a *ParseError", err)
			}
			return
		}
		if _, err := m.Enter(Cursor{State: m.StartAt(), Input: json.RawMessage(`{"a":1,"i":[1],"s":1,"e":"E"}`)}, Context{}); err != nil {
			t.Fatalf("Enter on a parsed machine: %v", err)
		}
	})
}

// FuzzIntrinsic: the intrinsic parser never panics, and a parsed call evaluates to a
// value or a States.IntrinsicFailure / States.Runtime error, nothing else.
func FuzzIntrinsic(f *testing.F) {
	for _, s := range []string{
		`States.Format('a {} b', $.x)`, `States.Array(1, 'two', null, true, $.y[0])`, `States.Format('it\'s \{\}')`,
		`States.ArrayLength(States.StringSplit('a,b', ','))`, `States.MathAdd(-1, 2.0)`, `States.Hash('x', 'MD5')`,
		`States.JsonMerge($.o, $.o, false)`, `States.UUID()`, `States.MathRandom(1, 10, 3)`, `States.Format(`, `States.(`,
		`States.ArrayGetItem($['x'], 0)`, `States.StringToJson('{"a":1}')`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		call, err := parseIntrinsic(expr)
		if err != nil {
			return
		}
		in, _ := decodeJSON([]byte(`{"x":"s","y":[1],"o":{"k":1}}`))
		env := &evalEnv{input: in, ctxObj: func() any { return map[string]any{} }, rand: func() float64 { return 0.5 }}
		v, serr := call.eval(env)
		if serr != nil {
			if serr.name != ErrIntrinsicFailure && serr.name != ErrRuntime {
				t.Fatalf("%s: error %s", expr, serr.name)
			}
			return
		}
		if _, err := encodeJSON(v); err != nil {
			t.Fatalf("%s: result does not encode: %v", expr, err)
		}
	})
}
