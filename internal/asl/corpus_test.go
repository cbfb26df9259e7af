package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// corpusCase is one file of testdata/corpus: a definition, its input, what its
// Task resources do, and (for most) the output or error AWS documents.
type corpusCase struct {
	Comment    string                  `json:"comment"`
	Definition json.RawMessage         `json:"definition"`
	Input      json.RawMessage         `json:"input"`
	Tasks      map[string]taskBehavior `json:"tasks"`
	Valid      *bool                   `json:"valid"`
	Expect     *struct {
		Output json.RawMessage `json:"output"`
		Error  string          `json:"error"`
	} `json:"expect"`
}

type taskBehavior struct {
	Kind  string          `json:"kind"` // echo, const, add, fail, failTimes
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
	Cause string          `json:"cause"`
	Times int             `json:"times"`
}

// nodeResult is what testdata/run-corpus.mjs reports for a case.
type nodeResult struct {
	Valid  bool            `json:"valid"`
	Errors []string        `json:"errors"`
	Output json.RawMessage `json:"output"`
	Error  string          `json:"error"`
	Cause  string          `json:"cause"`
}

// Where aws-local-stepfunctions disagrees with AWS's documented behaviour, the
// documented behaviour wins: the case's "expect" is asserted for our Runner, and the
// test checks that the library still differs (so this list stays true).
var interpreterDisagreements = map[string]string{
	"bracket-notation": "ResultPath \"$['new key']\": the library stores the result under a key \"$\"; AWS reference paths " +
		"accept bracket notation (Step Functions guide, 'Reference paths': \"access object fields using only dot (.) and square bracket ([ ]) notation\").",
	"choice-ispresent-false": "IsPresent: false on a missing path: the library says no match; the States Language spec " +
		"(Choice Rules: IsPresent) matches when the Variable's presence equals the operand.",
	"choice-isnumeric-false": "IsNumeric: false on a string: the library says no match; the spec's type tests compare " +
		"\"is numeric\" with the boolean operand, so a string matches IsNumeric: false.",
	"intrinsic-failure": "An intrinsic function given a wrong argument type: the library fails with States.Runtime; the " +
		"Step Functions guide ('Error names') names this States.IntrinsicFailure.",
	"resultpath-match-failure-caught": "ResultPath \"$.s.deeper\" where $.s is a string: the library overwrites the string; " +
		"AWS raises States.ResultPathMatchFailure (Step Functions guide, 'Error names').",
}

// Definitions asl-validator accepts although the States Language forbids them, or that
// Parse refuses on purpose because the embedded engine would run them differently from
// Step Functions (the reason names which).
var validatorDisagreements = map[string]string{
	"invalid-map-tolerance-inline":  tolerance,
	"map-tolerated-failures":        tolerance,
	"map-tolerated-exceeded":        tolerance,
	"invalid-querylanguage-jsonata": "refused on purpose: JSONata is valid ASL, but the embedded engine evaluates JSONPath only",
	"invalid-choice-end":            "spec, Choice State: \"Choice states ... MUST NOT be End states\"",
	"invalid-next-in-and":           "spec, Choice Rules: Next is only allowed in top-level rules, not inside And/Or/Not",
	"invalid-retry-backoff":         "spec, Retrying after error: BackoffRate MUST be greater than or equal to 1.0",
	"invalid-states-all-not-last":   "spec, Error names: States.ALL MUST appear alone and only in the last Retrier/Catcher",
}

const tolerance = "refused on purpose: AWS documents ToleratedFailure* for Distributed Map (its items are child " +
	"executions); an Inline Map fails on its first failed iteration, and the embedded engine runs Inline Maps only"

func loadCorpus(t *testing.T) map[string]corpusCase {
	t.Helper()
	files, err := filepath.Glob("testdata/corpus/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus files: %v", err)
	}
	cases := map[string]corpusCase{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c corpusCase
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cases[strings.TrimSuffix(filepath.Base(f), ".json")] = c
	}
	return cases
}

// runNode runs the whole corpus through the npm packages once.
func runNode(t *testing.T) map[string]nodeResult {
	t.Helper()
	nodeDir, _ := filepath.Abs("../../tools/node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "aws-local-stepfunctions")); err != nil {
		msg := "npm packages missing: run `make node-deps` (npm ci in tools/node)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed")
		}
		t.Skip("node is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "testdata/run-corpus.mjs", nodeDir, "testdata/corpus")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node run-corpus.mjs: %v\n%s", err, stderr.String())
	}
	res := map[string]nodeResult{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node output: %v\n%s", err, out)
	}
	return res
}

// corpusRegistry implements the task behaviours of run-corpus.mjs.
func corpusRegistry(c corpusCase) Registry {
	reg := Registry{}
	var mu sync.Mutex
	counts := map[string]int{}
	resources := map[string]bool{}
	for r := range c.Tasks {
		resources[r] = true
	}
	var walk func(def map[string]any)
	walk = func(def map[string]any) {
		states, _ := def["States"].(map[string]any)
		for _, s := range states {
			st, _ := s.(map[string]any)
			if r, ok := st["Resource"].(string); ok {
				resources[r] = true
			}
			for _, b := range asSlice(st["Branches"]) {
				bm, _ := b.(map[string]any)
				walk(bm)
			}
			for _, k := range []string{"Iterator", "ItemProcessor"} {
				if p, ok := st[k].(map[string]any); ok {
					walk(p)
				}
			}
		}
	}
	var def map[string]any
	_ = json.Unmarshal(c.Definition, &def)
	walk(def)
	for r := range resources {
		b, ok := c.Tasks[r]
		if !ok {
			b = taskBehavior{Kind: "echo"}
		}
		reg[r] = func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
			switch b.Kind {
			case "echo":
				return in, nil
			case "const":
				return b.Value, nil
			case "add":
				var ab struct{ A, B float64 }
				if err := json.Unmarshal(in, &ab); err != nil {
					return nil, err
				}
				return json.RawMessage(fmt.Sprint(ab.A + ab.B)), nil
			case "fail":
				return nil, &Error{Name: b.Error, Cause: b.Cause}
			case "failTimes":
				mu.Lock()
				counts[r]++
				n := counts[r]
				mu.Unlock()
				if n <= b.Times {
					cause := b.Cause
					if cause == "" {
						cause = fmt.Sprintf("attempt %d", n)
					}
					return nil, &Error{Name: b.Error, Cause: cause}
				}
				return json.RawMessage(fmt.Sprintf(`{"attempts":%d,"input":%s}`, n, in)), nil
			}
			return nil, fmt.Errorf("unknown task kind %q", b.Kind)
		}
	}
	return reg
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// instantClock is a fake clock whose waits return at once, advancing time by the
// wait: corpus runs need no real or stepped time. Task timeouts use NewTimer and so
// still only fire when time is stepped past them.
type instantClock struct {
	*testingclock.FakeClock
	mu     sync.Mutex
	waited []time.Duration
}

func newInstantClock() *instantClock {
	return &instantClock{FakeClock: testingclock.NewFakeClock(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))}
}

func (c *instantClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waited = append(c.waited, d)
	c.mu.Unlock()
	c.Step(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

func runOurs(t *testing.T, c corpusCase) (json.RawMessage, *ExecutionError) {
	t.Helper()
	m, err := Parse(c.Definition)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	r := &Runner{Registry: corpusRegistry(c), Clock: newInstantClock(), Rand: func() float64 { return 0.5 }, Name: "corpus"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := r.Run(ctx, m, c.Input)
	if err != nil {
		var ee *ExecutionError
		if !errors.As(err, &ee) {
			t.Fatalf("Run: %v", err)
		}
		return nil, ee
	}
	return out, nil
}

func jsonEq(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	va, err1 := decodeJSON(a)
	vb, err2 := decodeJSON(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return jsonEqual(va, vb)
}

// TestCorpusDifferential runs every corpus machine through our Runner and through
// aws-local-stepfunctions, and every definition through asl-validator and Parse.
func TestCorpusDifferential(t *testing.T) {
	cases := loadCorpus(t)
	if len(cases) < 40 {
		t.Fatalf("corpus has %d cases, want at least 40", len(cases))
	}
	node := runNode(t)
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		c := cases[name]
		nr, ok := node[name]
		if !ok {
			t.Errorf("%s: no result from node", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			if checkCorpusValidity(t, name, c, nr) {
				checkCorpusResult(t, name, c, nr)
			}
		})
	}
}

// checkCorpusValidity compares Parse and asl-validator with the case's validity and
// reports whether the case is valid (and so is to be run).
func checkCorpusValidity(t *testing.T, name string, c corpusCase, nr nodeResult) bool {
	t.Helper()
	wantValid := c.Valid == nil || *c.Valid
	_, perr := Parse(c.Definition)
	if (perr == nil) != wantValid {
		t.Fatalf("Parse valid=%v (err %v), corpus says valid=%v", perr == nil, perr, wantValid)
	}
	if reason, listed := validatorDisagreements[name]; listed {
		if !nr.Valid {
			t.Fatalf("listed as an asl-validator disagreement (%s) but asl-validator now rejects it too: remove it from the list", reason)
		}
	} else if nr.Valid != wantValid {
		t.Fatalf("asl-validator valid=%v (%v), Parse valid=%v", nr.Valid, nr.Errors, wantValid)
	}
	return wantValid
}

// checkCorpusResult runs a valid case on our Runner and compares the outcome with
// the AWS-documented expectation and with aws-local-stepfunctions.
func checkCorpusResult(t *testing.T, name string, c corpusCase, nr nodeResult) {
	t.Helper()
	out, execErr := runOurs(t, c)
	if c.Expect != nil {
		if c.Expect.Error != "" {
			if execErr == nil || execErr.Name != c.Expect.Error {
				t.Errorf("ours: got output %s / error %v, want error %s", out, execErr, c.Expect.Error)
			}
		} else if execErr != nil || !jsonEq(t, out, c.Expect.Output) {
			t.Errorf("ours: got output %s / error %v, want output %s", out, execErr, c.Expect.Output)
		}
	}
	agree := false
	if execErr != nil {
		agree = nr.Error == execErr.Name
	} else {
		agree = nr.Error == "" && jsonEq(t, out, nr.Output)
	}
	reason, listed := interpreterDisagreements[name]
	switch {
	case listed && agree:
		t.Errorf("listed as a disagreement (%s) but aws-local-stepfunctions now agrees: remove it from the list", reason)
	case listed && c.Expect == nil:
		t.Errorf("a disagreement needs the AWS-documented result in the case's \"expect\"")
	case !listed && !agree:
		t.Errorf("disagreement with aws-local-stepfunctions:\n ours:  output %s error %v\n node:  output %s error %s (%s)", out, execErr, nr.Output, nr.Error, nr.Cause)
	}
}
