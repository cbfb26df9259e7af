package recycle

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/asl"
)

func TestDefinitionsPassTheStatesLanguageValidators(t *testing.T) {
	defs := map[string][]byte{"recycle": mustDef(t), "rollback": RollbackDefinition()}
	arn, err := Definition("arn:aws:lambda:eu-west-1:123456789012:function:recycler")
	if err != nil {
		t.Fatal(err)
	}
	defs["recycle-deployed"] = arn
	for name, def := range defs {
		if _, err := asl.Parse(def); err != nil {
			t.Errorf("%s: our parser rejects it: %v", name, err)
		}
	}
	if strings.Contains(string(arn), FunctionPlaceholder) {
		t.Errorf("deployed definition still contains %s", FunctionPlaceholder)
	}
	if _, err := Definition("not-an-arn"); err == nil {
		t.Error("Definition accepted a function ARN that is not an ARN")
	}

	// The npm asl-validator is the third-party judge (`make node-deps` installs it).
	nodeDir, _ := filepath.Abs("../../tools/node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "asl-validator")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("asl-validator missing: run `make node-deps`")
		}
		t.Skip("asl-validator missing: run `make node-deps`")
	}
	for name, def := range defs {
		script := `const v = require("asl-validator"); const d = JSON.parse(require("fs").readFileSync(0, "utf8"));
const r = v(d, { checkArn: false, checkPaths: true }); if (!r.isValid) { console.log(JSON.stringify(r.errors)); process.exit(1); }`
		cmd := exec.Command("node", "-e", script)
		cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(nodeDir, "node_modules"))
		cmd.Stdin = strings.NewReader(string(def))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("asl-validator rejects the %s definition: %v\n%s", name, err, out)
		}
	}
}

func mustDef(t *testing.T) []byte {
	t.Helper()
	d, err := Definition("")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// script is a fake task function: each task name maps to the results it returns in
// turn (the last one repeats). It checks the ASL wiring, not the tasks themselves —
// those run against the real control plane and simulated AWS in internal/scenario.
type script map[string][]any

// registry counts the tasks in flight in busy: the test's clock must not move while
// one runs, or its TimeoutSeconds passes on the fake clock and the runner starts the
// task again beside the first (the flake this replaced, under load).
func (s script) registry(calls *[]string, busy *atomic.Int32) asl.Registry {
	n := map[string]int{}
	return asl.Registry{FunctionPlaceholder: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
		busy.Add(1)
		defer busy.Add(-1)
		var p Payload
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		*calls = append(*calls, p.Task)
		rs, ok := s[p.Task]
		if !ok {
			return json.RawMessage(`{"done": true}`), nil
		}
		r := rs[min(n[p.Task], len(rs)-1)]
		n[p.Task]++
		if err, ok := r.(error); ok {
			return nil, err
		}
		return json.Marshal(r)
	}}
}

func TestStateMachinePaths(t *testing.T) {
	done := map[string]bool{"done": true}
	notYet := map[string]bool{"done": false}
	hookOnly := map[string]any{"hookOnly": map[string]any{"by": "exec-1", "reason": "answer only"}}
	for _, tc := range []struct {
		name      string
		script    script
		wantErr   string // "" = success
		wantCalls string
	}{
		{"happy path, loops until done",
			script{"CheckReplacement": {notYet, done}, "Drain": {notYet, notYet, done}, "CheckWorkloads": {done}},
			"", "Resolve Fence Surge CheckReplacement CheckReplacement Drain Drain Drain CheckWorkloads Retire"},
		{"the drain's recording pass (passes 1) loops back to Drain",
			script{"CheckReplacement": {done}, "Drain": {map[string]any{"done": false, "passes": 1}, map[string]any{"done": false, "passes": 2}, done}, "CheckWorkloads": {done}},
			"", "Resolve Fence Surge CheckReplacement Drain Drain Drain CheckWorkloads Retire"},
		{"bad input is refused before anything changes",
			script{"Resolve": {newError(ErrBadInput, "node x not found")}},
			ErrBadInput, "Resolve"},
		{"a transient error is retried, not rolled back",
			script{"Surge": {newError(ErrTransient, "throttled"), map[string]any{}}, "CheckReplacement": {done}, "Drain": {done}, "CheckWorkloads": {done}},
			"", "Resolve Fence Surge Surge CheckReplacement Drain CheckWorkloads Retire"},
		{"a Lambda service error is retried, not rolled back",
			script{"CheckReplacement": {done}, "Drain": {asl.Errorf("Lambda.AWSLambdaException", "500"), done}, "CheckWorkloads": {done}},
			"", "Resolve Fence Surge CheckReplacement Drain Drain CheckWorkloads Retire"},
		{"a timed-out check is retried, not rolled back",
			script{"CheckReplacement": {asl.Errorf(asl.ErrTimeout, "task timed out"), done}, "Drain": {done}, "CheckWorkloads": {done}},
			"", "Resolve Fence Surge CheckReplacement CheckReplacement Drain CheckWorkloads Retire"},
		{"replacement timeout rolls back and fails with its own error",
			script{"CheckReplacement": {newError(ErrReplacementTimeout, "no replacement")}},
			ErrReplacementTimeout, "Resolve Fence Surge CheckReplacement Rollback"},
		{"drain timeout rolls back",
			script{"CheckReplacement": {done}, "Drain": {newError(ErrDrainTimeout, "pods still running")}},
			ErrDrainTimeout, "Resolve Fence Surge CheckReplacement Drain Rollback"},
		{"a rollback waiting for AWS loops until done",
			script{"Fence": {errors.New("boom")}, "Rollback": {notYet, notYet, done}},
			"States.TaskFailed", "Resolve Fence Rollback Rollback Rollback"},
		{"a rollback past its deadline needs a person, without retries",
			script{"Fence": {errors.New("boom")}, "Rollback": {notYet, newError(ErrRollbackTimeout, "still EnteringStandby")}},
			ErrRollbackFailed, "Resolve Fence Rollback Rollback"},
		{"not yet at Retire is waited out, not rolled back",
			script{"CheckReplacement": {done}, "Drain": {done}, "CheckWorkloads": {done}, "Retire": {notYet, notYet, done}},
			"", "Resolve Fence Surge CheckReplacement Drain CheckWorkloads Retire Retire Retire"},
		{"an unnamed failure after fencing rolls back",
			script{"Fence": {errors.New("boom")}},
			"States.TaskFailed", "Resolve Fence Rollback"},
		{"a lifecycle action that only needs an answer is answered, nothing recycled",
			script{"Resolve": {hookOnly}, "AnswerHook": {done}},
			"", "Resolve AnswerHook"},
		{"a lifecycle action for a node another recycle holds waits for its drain",
			script{"Resolve": {hookOnly}, "AnswerHook": {notYet, notYet, done}},
			"", "Resolve AnswerHook AnswerHook AnswerHook"},
		{"a holder that let go of the node: back to Resolve, which recycles it",
			script{"Resolve": {hookOnly, map[string]any{}}, "AnswerHook": {map[string]any{"done": false, "resolve": true}}, "CheckReplacement": {done}, "Drain": {done}, "CheckWorkloads": {done}},
			"", "Resolve AnswerHook Resolve Fence Surge CheckReplacement Drain CheckWorkloads Retire"},
		{"a failing answer goes to Rollback (which answers CONTINUE)",
			script{"Resolve": {hookOnly}, "AnswerHook": {errors.New("boom")}},
			"States.TaskFailed", "Resolve AnswerHook Rollback"},
		{"a failing rollback needs a person",
			script{"Fence": {errors.New("boom")}, "Rollback": {errors.New("still broken")}},
			ErrRollbackFailed, "Resolve Fence Rollback Rollback Rollback Rollback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := asl.Parse(mustDef(t))
			if err != nil {
				t.Fatal(err)
			}
			var calls []string
			clk := clocktesting.NewFakeClock(time.Now())
			var busy atomic.Int32
			r := &asl.Runner{Registry: tc.script.registry(&calls, &busy), Clock: clk}
			input, _ := json.Marshal(State{Request: NewRequest("node-a")})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Wait and Retry states wait on the fake clock: keep stepping it.
			go func() {
				for ctx.Err() == nil {
					// Small steps, never while a task runs: the shortest task timeout
					// (120 s) is twelve steps away from a task about to start.
					if clk.HasWaiters() && busy.Load() == 0 {
						clk.Step(10 * time.Second)
					}
					time.Sleep(time.Millisecond)
				}
			}()
			_, err = r.Run(ctx, m, input)
			var ee *asl.ExecutionError
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("failed: %v", err)
			case tc.wantErr != "" && (!errors.As(err, &ee) || ee.Name != tc.wantErr):
				t.Fatalf("error %v, want %s", err, tc.wantErr)
			}
			if got := strings.Join(calls, " "); got != tc.wantCalls {
				t.Errorf("tasks ran\n  %s\nwant\n  %s", got, tc.wantCalls)
			}
		})
	}
}

// transientTaskErrors are the errors every Task retries instead of rolling back: our
// own Recycler.Transient, a Task timeout (every task is idempotent, so a hung call is
// simply asked again), and the Lambda service errors AWS documents as transient
// ("Handle Lambda service exceptions", Step Functions best practices).
var transientTaskErrors = []string{
	ErrTransient, asl.ErrTimeout,
	"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
	"Lambda.ClientExecutionTimeoutException", "Lambda.TooManyRequestsException",
}

func TestEveryTaskRetriesTransientErrors(t *testing.T) {
	for name, def := range map[string][]byte{"recycle": mustDef(t), "rollback": RollbackDefinition()} {
		var m struct {
			States map[string]struct {
				Type  string
				Retry []struct{ ErrorEquals []string }
			}
		}
		if err := json.Unmarshal(def, &m); err != nil {
			t.Fatal(err)
		}
		for state, s := range m.States {
			if s.Type != "Task" {
				continue
			}
			if len(s.Retry) == 0 {
				t.Errorf("%s: Task %s has no Retry", name, state)
				continue
			}
			// The first retrier must name them: a States.ALL retrier further down
			// would give them only its few attempts.
			for _, e := range transientTaskErrors {
				if !slices.Contains(s.Retry[0].ErrorEquals, e) {
					t.Errorf("%s: Task %s does not retry %s (first retrier: %v)", name, state, e, s.Retry[0].ErrorEquals)
				}
			}
		}
	}
}

// instantClock is a fake clock whose After returns at once, stepping time by the
// wait: the Runner's retry delays and Wait states take no wall time.
type instantClock struct{ *clocktesting.FakeClock }

func (c instantClock) After(d time.Duration) <-chan time.Time {
	c.Step(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// An EKS control-plane upgrade can leave the API unreachable for minutes. A task that
// meets it fails with Recycler.Transient on every attempt until the API is back; the
// Retry must outlast such an outage, also when full jitter draws short delays, or the
// recycle rolls back. rand is what the jitter draws (0.5: the mean).
func TestTransientRetryRidesOutAnAPIOutage(t *testing.T) {
	done := json.RawMessage(`{"done":true}`)
	for _, tc := range []struct {
		name   string
		def    []byte
		task   string // fails while the API is down
		outage time.Duration
		rand   float64
	}{
		{"drain, mean jitter, 10 min down", mustDef(t), TaskDrain, 10 * time.Minute, 0.5},
		{"drain, every delay a quarter of its cap, 5 min down", mustDef(t), TaskDrain, 5 * time.Minute, 0.25},
		{"fence, mean jitter, 10 min down", mustDef(t), TaskFence, 10 * time.Minute, 0.5},
		{"abort rollback, mean jitter, 10 min down", RollbackDefinition(), TaskRollback, 10 * time.Minute, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := asl.Parse(tc.def)
			if err != nil {
				t.Fatal(err)
			}
			clk := instantClock{clocktesting.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))}
			var down time.Time
			attempts := 0
			reg := asl.Registry{FunctionPlaceholder: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
				var p Payload
				if err := json.Unmarshal(raw, &p); err != nil {
					return nil, err
				}
				if p.Task != tc.task {
					return done, nil
				}
				if down.IsZero() {
					down = clk.Now()
				}
				if clk.Since(down) < tc.outage {
					attempts++
					return nil, newError(ErrTransient, "%s: dial tcp 10.0.0.1:443: connect: connection refused", p.Task)
				}
				return done, nil
			}}
			r := &asl.Runner{Registry: reg, Clock: clk, Rand: func() float64 { return tc.rand }}
			input, _ := json.Marshal(State{Request: NewRequest("node-a")})
			if tc.task == TaskRollback {
				input, _ = json.Marshal(map[string]any{"Execution": map[string]any{"Id": "x"}, "StateInput": State{Request: NewRequest("node-a")}})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := r.Run(ctx, m, input); err != nil {
				t.Fatalf("a %s API outage in %s ended the execution after %d attempts: %v", tc.outage, tc.task, attempts, err)
			}
		})
	}
}

func TestEveryTaskTimesOutBeforeTheLambda(t *testing.T) {
	rb, err := DeployedRollbackDefinition("arn:aws:lambda:eu-west-1:123456789012:function:recycler")
	if err != nil {
		t.Fatal(err)
	}
	for name, def := range map[string][]byte{"recycle": mustDef(t), "rollback": rb} {
		var m struct {
			States map[string]struct {
				Type           string
				TimeoutSeconds int
			}
		}
		if err := json.Unmarshal(def, &m); err != nil {
			t.Fatal(err)
		}
		for state, s := range m.States {
			if s.Type == "Task" && (s.TimeoutSeconds <= 0 || s.TimeoutSeconds > MaxTaskSeconds) {
				t.Errorf("%s: Task %s has TimeoutSeconds %d, want 1–%d (below the Lambda's own 900 s)", name, state, s.TimeoutSeconds, MaxTaskSeconds)
			}
		}
	}
	if _, err := DeployedRollbackDefinition(""); err == nil {
		t.Error("the deployed rollback definition was rendered without a function ARN")
	}
}
