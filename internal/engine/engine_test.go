package engine

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/asl"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testEngine opens an engine on a temp file with a fake clock; the recorder sees every
// committed event.
type testEngine struct {
	*Engine
	clock *clocktesting.FakeClock
	path  string
	rec   *recorder
}

type recorder struct {
	mu  sync.Mutex
	evs []Event
	ch  chan Event
}

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	select {
	case r.ch <- ev:
	default:
	}
}

func openTest(t *testing.T, reg asl.Registry, path string, fc *clocktesting.FakeClock) *testEngine {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "engine.db")
	}
	if fc == nil {
		fc = clocktesting.NewFakeClock(t0)
	}
	rec := &recorder{ch: make(chan Event, 10000)}
	e, err := Open(context.Background(), Options{Path: path, Clock: fc, Registry: reg, Workers: 4, OnEvent: rec.add})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	te := &testEngine{Engine: e, clock: fc, path: path, rec: rec}
	t.Cleanup(func() { e.Close() })
	return te
}

// waitEvent blocks until an event of type typ for execution id was committed.
func (te *testEngine) waitEvent(t *testing.T, id, typ string) {
	t.Helper()
	te.waitEventN(t, id, typ, 1)
}

// waitEventN blocks until the n-th event of type typ for execution id was committed.
func (te *testEngine) waitEventN(t *testing.T, id, typ string, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		te.rec.mu.Lock()
		seen := 0
		for _, ev := range te.rec.evs {
			if ev.ExecutionID == id && ev.Type == typ {
				if seen++; seen == n {
					te.rec.mu.Unlock()
					return
				}
			}
		}
		te.rec.mu.Unlock()
		select {
		case <-te.rec.ch:
		case <-deadline:
			t.Fatalf("no %s event for %s within 10s", typ, id)
		}
	}
}

func (te *testEngine) start(t *testing.T, def, input string) Execution {
	t.Helper()
	ex, err := te.Start(context.Background(), StartInput{StateMachine: "m", Definition: []byte(def), Input: json.RawMessage(input)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return ex
}

func (te *testEngine) wait(t *testing.T, id string) Execution {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ex, err := te.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	return ex
}

func types(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func (te *testEngine) history(t *testing.T, id string) []Event {
	t.Helper()
	h, err := te.History(context.Background(), id)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	return h
}

func jsonEq(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	if !sameJSON(got, json.RawMessage(want)) {
		t.Fatalf("output = %s, want %s", got, want)
	}
}

const passChain = `{"StartAt":"A","States":{
	"A":{"Type":"Pass","Result":1,"ResultPath":"$.a","Next":"B"},
	"B":{"Type":"Pass","Parameters":{"sum.$":"States.MathAdd($.a, $.x)"},"End":true}}}`

func TestPassChainSucceedsWithHistory(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ex := te.start(t, passChain, `{"x":41}`)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s (%s: %s)", ex.Status, ex.Error, ex.Cause)
	}
	jsonEq(t, ex.Output, `{"sum":42}`)
	h := te.history(t, ex.ID)
	want := []string{"ExecutionStarted", "PassStateEntered", "PassStateExited", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"}
	if !slices.Equal(types(h), want) {
		t.Fatalf("history %v, want %v", types(h), want)
	}
	for i, ev := range h {
		if ev.ID != int64(i+1) || ev.PreviousEventID != int64(i) {
			t.Fatalf("event %d: id %d previous %d", i, ev.ID, ev.PreviousEventID)
		}
	}
}

// Start is idempotent as Step Functions' StartExecution is: the same request again
// while the execution runs returns it; a name is never used for a second execution.
func TestStartIsIdempotentByName(t *testing.T) {
	te := openTest(t, nil, "", nil)
	in := StartInput{StateMachine: "m", Name: "node-1", Definition: []byte(waitDef), Input: json.RawMessage(`{"x":1}`)}
	a, err := te.Start(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	in.Input = json.RawMessage(` { "x" : 1 } `)
	b, err := te.Start(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Fatalf("second start created %s, want the first %s", b.ID, a.ID)
	}
	in.Input = json.RawMessage(`{"x":2}`)
	var exists *ExistsError
	if _, err := te.Start(context.Background(), in); !errors.Is(err, ErrExecutionAlreadyExists) || !errors.As(err, &exists) || exists.Existing.ID != a.ID {
		t.Fatalf("start with other input: err %v, want ErrExecutionAlreadyExists naming %s", err, a.ID)
	}
	// Same name under another state machine is a different execution.
	in.StateMachine = "other"
	c, err := te.Start(context.Background(), in)
	if err != nil || c.ID == a.ID {
		t.Fatalf("other machine: %v %v", c.ID, err)
	}
	list, err := te.List(context.Background(), ListFilter{StateMachine: "m"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list m: %d executions, err %v", len(list), err)
	}
	// Once it ended, the same request is refused: the name is taken for good.
	te.waitEvent(t, a.ID, "WaitStateEntered")
	te.clock.Step(20 * time.Hour)
	te.wait(t, a.ID)
	in.StateMachine, in.Input = "m", json.RawMessage(`{"x":1}`)
	if _, err := te.Start(context.Background(), in); !errors.As(err, &exists) || exists.Existing.Status != StatusSucceeded {
		t.Fatalf("start of an ended name: err %v, want ExistsError naming the SUCCEEDED execution", err)
	}
}

func TestStartRejectsBadInput(t *testing.T) {
	te := openTest(t, nil, "", nil)
	cases := map[string]StartInput{
		"no machine": {Definition: []byte(passChain)},
		"no def":     {StateMachine: "m"},
		"bad def":    {StateMachine: "m", Definition: []byte(`{"StartAt":"X","States":{}}`)},
		"bad input":  {StateMachine: "m", Definition: []byte(passChain), Input: json.RawMessage(`{`)},
		"bad name":   {StateMachine: "m", Definition: []byte(passChain), Name: "a b"},
	}
	for name, in := range cases {
		if _, err := te.Start(context.Background(), in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	list, _ := te.List(context.Background(), ListFilter{})
	if len(list) != 0 {
		t.Fatalf("rejected starts created %d executions", len(list))
	}
}

const waitDef = `{"StartAt":"W","States":{
	"W":{"Type":"Wait","Seconds":72000,"Next":"P"},
	"P":{"Type":"Pass","End":true}}}`

func TestLongWaitIsATimerRow(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ex := te.start(t, waitDef, `{"v":1}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	var n int
	var due int64
	if err := te.db.QueryRow(`SELECT COUNT(*), MAX(due_at) FROM timers WHERE exec_id = ?`, ex.ID).Scan(&n, &due); err != nil {
		t.Fatal(err)
	}
	if n != 1 || !fromNanos(due).Equal(t0.Add(20*time.Hour)) {
		t.Fatalf("timers: %d, due %v; want one at %v", n, fromNanos(due), t0.Add(20*time.Hour))
	}
	te.clock.Step(20*time.Hour - time.Second)
	if d, _ := te.Describe(context.Background(), ex.ID); d.Status != StatusRunning {
		t.Fatalf("status %s before the deadline", d.Status)
	}
	te.clock.Step(time.Second)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s", ex.Status)
	}
	jsonEq(t, ex.Output, `{"v":1}`)
}

func TestWaitSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	fc := clocktesting.NewFakeClock(t0)
	te := openTest(t, nil, path, fc)
	ex := te.start(t, waitDef, `{"v":2}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	te.Close()

	fc.Step(21 * time.Hour)
	te2 := openTest(t, nil, path, fc)
	if _, err := te2.Adopt(context.Background(), ex.ID); err != nil {
		t.Fatal(err)
	}
	ex = te2.wait(t, ex.ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s after restart", ex.Status)
	}
	want := []string{"ExecutionStarted", "WaitStateEntered", "WaitStateExited", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"}
	if got := types(te2.history(t, ex.ID)); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}

type flaky struct{ name string }

func (f flaky) Error() string     { return "not yet" }
func (f flaky) ErrorName() string { return f.name }

func TestRetryThenSucceed(t *testing.T) {
	var calls atomic.Int32
	reg := asl.Registry{"flaky": func(context.Context, json.RawMessage) (json.RawMessage, error) {
		if calls.Add(1) <= 2 {
			return nil, flaky{"Recycler.NotReady"}
		}
		return json.RawMessage(`"ok"`), nil
	}}
	te := openTest(t, reg, "", nil)
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"flaky","ResultPath":"$.r",
		"Retry":[{"ErrorEquals":["Recycler.NotReady"],"IntervalSeconds":10,"MaxAttempts":3,"BackoffRate":2}],"End":true}}}`
	ex := te.start(t, def, `{}`)
	te.waitEvent(t, ex.ID, "TaskFailed")
	// The first retry is due 10 s after the failure: nothing happens before.
	te.clock.Step(9 * time.Second)
	if calls.Load() != 1 {
		t.Fatalf("task ran %d times before the retry interval", calls.Load())
	}
	te.clock.Step(time.Second)
	te.waitEventN(t, ex.ID, "TaskFailed", 2)
	// Second retry: 20 s (BackoffRate 2).
	te.clock.Step(20 * time.Second)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusSucceeded || calls.Load() != 3 {
		t.Fatalf("status %s after %d calls", ex.Status, calls.Load())
	}
	jsonEq(t, ex.Output, `{"r":"ok"}`)
	want := []string{"ExecutionStarted", "TaskStateEntered",
		"TaskScheduled", "TaskStarted", "TaskFailed",
		"TaskScheduled", "TaskStarted", "TaskFailed",
		"TaskScheduled", "TaskStarted", "TaskSucceeded",
		"TaskStateExited", "ExecutionSucceeded"}
	if got := types(te.history(t, ex.ID)); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}

func TestTaskTimeoutIsStatesTimeout(t *testing.T) {
	reg := asl.Registry{"hang": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	te := openTest(t, reg, "", nil)
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"hang","TimeoutSeconds":30,
		"Catch":[{"ErrorEquals":["States.Timeout"],"ResultPath":"$.err","Next":"C"}],"End":true},
		"C":{"Type":"Pass","End":true}}}`
	ex := te.start(t, def, `{}`)
	te.waitEvent(t, ex.ID, "TaskStarted")
	for !te.clock.HasWaiters() {
		<-time.After(time.Millisecond) // the task's timer is armed right after TaskStarted commits
	}
	te.clock.Step(30 * time.Second)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s", ex.Status)
	}
	var out struct{ Err struct{ Error string } }
	_ = json.Unmarshal(ex.Output, &out)
	if out.Err.Error != "States.Timeout" {
		t.Fatalf("caught %s, want States.Timeout", ex.Output)
	}
	if !slices.Contains(types(te.history(t, ex.ID)), "TaskTimedOut") {
		t.Fatal("no TaskTimedOut event")
	}
}

func TestExecutionTimeout(t *testing.T) {
	te := openTest(t, nil, "", nil)
	def := `{"TimeoutSeconds":60,"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"End":true}}}`
	ex := te.start(t, def, `{}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	te.clock.Step(time.Minute)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusTimedOut || ex.Error != "States.Timeout" {
		t.Fatalf("status %s error %s", ex.Status, ex.Error)
	}
	var n int
	if err := te.db.QueryRow(`SELECT (SELECT COUNT(*) FROM frames) + (SELECT COUNT(*) FROM timers)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d frames/timers left after timeout", n)
	}
}

func TestMapRespectsMaxConcurrency(t *testing.T) {
	var cur, peak atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	reg := asl.Registry{"work": func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		n := cur.Add(1)
		entered <- struct{}{}
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		cur.Add(-1)
		return in, nil
	}}
	te := openTest(t, reg, "", nil)
	def := `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":2,
		"ItemProcessor":{"ProcessorConfig":{"Mode":"INLINE"},"StartAt":"T","States":{
			"T":{"Type":"Task","Resource":"work","End":true}}},"End":true}}}`
	ex := te.start(t, def, `{"items":[1,2,3,4,5]}`)
	// Hold two tasks running at every moment: a third would raise the peak.
	<-entered
	<-entered
	for i := range 5 {
		release <- struct{}{}
		if i < 3 {
			<-entered
		}
	}
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s %s %s", ex.Status, ex.Error, ex.Cause)
	}
	jsonEq(t, ex.Output, `[1,2,3,4,5]`)
	if peak.Load() != 2 {
		t.Fatalf("peak concurrency %d, want 2", peak.Load())
	}
	h := te.history(t, ex.ID)
	n := 0
	for _, ev := range h {
		if ev.Type == "MapIterationSucceeded" {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d MapIterationSucceeded, want 5: %v", n, types(h))
	}
}

func TestParallelFailureFailsExecution(t *testing.T) {
	te := openTest(t, nil, "", nil)
	// Branch A waits 20 hours; B fails at once: the Parallel fails without waiting for A
	// (the fake clock never moves), as in Step Functions.
	def := `{"StartAt":"P","States":{"P":{"Type":"Parallel","Branches":[
		{"StartAt":"A","States":{"A":{"Type":"Wait","Seconds":72000,"End":true}}},
		{"StartAt":"B","States":{"B":{"Type":"Fail","Error":"Boom","Cause":"branch b"}}}],"End":true}}}`
	ex := te.wait(t, te.start(t, def, `{}`).ID)
	if ex.Status != StatusFailed || ex.Error != "Boom" || ex.Cause != "branch b" {
		t.Fatalf("status %s error %s cause %s", ex.Status, ex.Error, ex.Cause)
	}
	var n int
	if err := te.db.QueryRow(`SELECT (SELECT COUNT(*) FROM frames) + (SELECT COUNT(*) FROM timers)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d frames/timers left after the Parallel failed", n)
	}
	ok := `{"StartAt":"P","States":{"P":{"Type":"Parallel","Branches":[
		{"StartAt":"A","States":{"A":{"Type":"Pass","Result":"a","End":true}}},
		{"StartAt":"B","States":{"B":{"Type":"Pass","Result":"b","End":true}}}],"End":true}}}`
	ex = te.wait(t, te.start(t, ok, `{}`).ID)
	jsonEq(t, ex.Output, `["a","b"]`)
}

func TestStopRunsRollback(t *testing.T) {
	te := openTest(t, nil, "", nil)
	rollback := `{"StartAt":"R","States":{"R":{"Type":"Pass","Parameters":{"undo.$":"$.State","why.$":"$.Cause","node.$":"$.Execution.Input.node"},"End":true}}}`
	ex, err := te.Start(context.Background(), StartInput{StateMachine: "recycle", Name: "n1", Definition: []byte(waitDef),
		Input: json.RawMessage(`{"node":"n1"}`), OnAbort: &Rollback{Definition: []byte(rollback)}})
	if err != nil {
		t.Fatal(err)
	}
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	stopped, err := te.Stop(context.Background(), ex.ID, "User.Abort", "operator said so")
	if err != nil {
		t.Fatal(err)
	}
	if stopped.Status != StatusAborted || stopped.RollbackID == "" {
		t.Fatalf("after stop: status %s rollback %q", stopped.Status, stopped.RollbackID)
	}
	rb := te.wait(t, stopped.RollbackID)
	if rb.Status != StatusSucceeded || rb.StateMachine != "recycle-rollback" || rb.RollbackOf != ex.ID {
		t.Fatalf("rollback %+v", rb)
	}
	jsonEq(t, rb.Output, `{"undo":"W","why":"operator said so","node":"n1"}`)
	if _, err := te.Stop(context.Background(), ex.ID, "", ""); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second stop: %v, want ErrNotRunning", err)
	}
	// The 20-hour timer is gone: stepping past it changes nothing.
	te.clock.Step(21 * time.Hour)
	if h := te.history(t, ex.ID); h[len(h)-1].Type != "ExecutionAborted" {
		t.Fatalf("history after abort %v", types(h))
	}
}

func TestStopCancelsRunningTask(t *testing.T) {
	started := make(chan struct{})
	reg := asl.Registry{"hang": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	te := openTest(t, reg, "", nil)
	ex := te.start(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"hang","End":true}}}`, `{}`)
	<-started
	if _, err := te.Stop(context.Background(), ex.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusAborted {
		t.Fatalf("status %s", ex.Status)
	}
	h := te.history(t, ex.ID)
	if h[len(h)-1].Type != "ExecutionAborted" {
		t.Fatalf("history %v", types(h))
	}
}

func TestTaskInFlightIsRerunAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	fc := clocktesting.NewFakeClock(t0)
	started := make(chan struct{}, 1)
	var calls atomic.Int32
	reg := asl.Registry{"t": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		if calls.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done() // the "crash" happens while we run
			return nil, ctx.Err()
		}
		return json.RawMessage(`"done"`), nil
	}}
	te := openTest(t, reg, path, fc)
	ex := te.start(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"t","End":true}}}`, `{}`)
	<-started
	te.Close()
	te2 := openTest(t, reg, path, fc)
	if _, err := te2.Adopt(context.Background(), ex.ID); err != nil {
		t.Fatal(err)
	}
	ex = te2.wait(t, ex.ID)
	if ex.Status != StatusSucceeded || calls.Load() != 2 {
		t.Fatalf("status %s after %d calls", ex.Status, calls.Load())
	}
	want := []string{"ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskStarted", "TaskSucceeded", "TaskStateExited", "ExecutionSucceeded"}
	h := te2.history(t, ex.ID)
	if got := types(h); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if !json.Valid(h[4].Details) || !sameJSON(h[4].Details, json.RawMessage(`{"resource":"t","resumed":true}`)) {
		t.Fatalf("re-run marker details %s", h[4].Details)
	}
}

func TestWatchStreamsLiveEvents(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ex := te.start(t, waitDef, `{}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	got := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- te.Watch(context.Background(), ex.ID, func(ev Event) error { got <- ev.Type; return nil })
	}()
	for _, want := range []string{"ExecutionStarted", "WaitStateEntered"} {
		if typ := <-got; typ != want {
			t.Fatalf("watch gave %s, want %s", typ, want)
		}
	}
	te.clock.Step(20 * time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(got)
	var rest []string
	for typ := range got {
		rest = append(rest, typ)
	}
	want := []string{"WaitStateExited", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"}
	if !slices.Equal(rest, want) {
		t.Fatalf("live events %v, want %v", rest, want)
	}
}

func TestListFiltersByStatus(t *testing.T) {
	te := openTest(t, nil, "", nil)
	a := te.start(t, passChain, `{"x":1}`)
	b := te.start(t, waitDef, `{}`)
	te.wait(t, a.ID)
	te.waitEvent(t, b.ID, "WaitStateEntered")
	run, _ := te.List(context.Background(), ListFilter{Status: StatusRunning})
	done, _ := te.List(context.Background(), ListFilter{Status: StatusSucceeded})
	if len(run) != 1 || run[0].ID != b.ID || len(done) != 1 || done[0].ID != a.ID {
		t.Fatalf("running %v, succeeded %v", run, done)
	}
	if _, err := te.Describe(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("describe unknown: %v", err)
	}
}

func TestPassiveEngineFollowsTheRunner(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ex := te.start(t, waitDef, `{"v":3}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")

	// Real clock: the passive side polls data_version every 5 ms.
	p, err := Open(context.Background(), Options{Path: te.path, Passive: true, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Start(context.Background(), StartInput{StateMachine: "m", Definition: []byte(passChain)}); !errors.Is(err, ErrPassive) {
		t.Fatalf("passive Start: %v, want ErrPassive", err)
	}
	if _, err := p.Stop(context.Background(), ex.ID, "", ""); !errors.Is(err, ErrPassive) {
		t.Fatalf("passive Stop: %v, want ErrPassive", err)
	}
	var seen []string
	watched := make(chan error, 1)
	go func() {
		watched <- p.Watch(context.Background(), ex.ID, func(ev Event) error { seen = append(seen, ev.Type); return nil })
	}()
	te.clock.Step(20 * time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := p.Wait(ctx, ex.ID)
	if err != nil || got.Status != StatusSucceeded {
		t.Fatalf("passive Wait: %v %v", got.Status, err)
	}
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	if seen[len(seen)-1] != "ExecutionSucceeded" || len(seen) != 6 {
		t.Fatalf("passive watch saw %v", seen)
	}
	if _, err := Open(context.Background(), Options{Path: filepath.Join(t.TempDir(), "missing.db"), Passive: true}); err == nil {
		t.Fatal("passive Open of a missing file succeeded")
	}
}

func TestMapStopsAfterAFailedIteration(t *testing.T) {
	var calls atomic.Int32
	reg := asl.Registry{"item": func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		if string(in) == "2" {
			return nil, flaky{"Recycler.NodeBroken"}
		}
		return in, nil
	}}
	te := openTest(t, reg, "", nil)
	def := `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":1,"ItemProcessor":{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"item","End":true}}},
		"Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":"$.error","Next":"Rollback"}],"End":true},
		"Rollback":{"Type":"Pass","End":true}}}`
	ex := te.wait(t, te.start(t, def, `{"items":[1,2,3,4]}`).ID)
	if ex.Status != StatusSucceeded {
		t.Fatalf("status %s %s %s", ex.Status, ex.Error, ex.Cause)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d items ran; a failed iteration must stop the Map before items 3 and 4", calls.Load())
	}
	var out struct{ Error struct{ Error string } }
	_ = json.Unmarshal(ex.Output, &out)
	if out.Error.Error != "Recycler.NodeBroken" {
		t.Fatalf("caught %s", ex.Output)
	}
	h := types(te.history(t, ex.ID))
	if !slices.Contains(h, "MapStateFailed") || !slices.Contains(h, "MapIterationFailed") {
		t.Fatalf("history %v", h)
	}
}

func TestPanickingTaskFailsOnlyItsExecution(t *testing.T) {
	reg := asl.Registry{"boom": func(context.Context, json.RawMessage) (json.RawMessage, error) {
		panic("nil map")
	}}
	te := openTest(t, reg, "", nil)
	ex := te.wait(t, te.start(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"boom","End":true}}}`, `{}`).ID)
	if ex.Status != StatusFailed || ex.Error != "States.TaskFailed" {
		t.Fatalf("status %s error %s", ex.Status, ex.Error)
	}
	// The engine still runs other executions.
	if ex := te.wait(t, te.start(t, passChain, `{"x":1}`).ID); ex.Status != StatusSucceeded {
		t.Fatalf("next execution: %s", ex.Status)
	}
}

func TestStartIgnoresDefinitionWhitespace(t *testing.T) {
	te := openTest(t, nil, "", nil)
	in := StartInput{StateMachine: "m", Name: "n", Definition: []byte(waitDef), Input: json.RawMessage(`{"x":1}`)}
	a, err := te.Start(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	in.Definition = []byte("\n  " + waitDef + "\n")
	b, err := te.Start(context.Background(), in)
	if err != nil || b.ID != a.ID {
		t.Fatalf("re-start with reformatted definition: %v (id %s vs %s)", err, b.ID, a.ID)
	}
}

func TestEarlierTimerRearmsTheTimerLoop(t *testing.T) {
	te := openTest(t, nil, "", nil)
	long := te.start(t, waitDef, `{}`) // due in 20 h: the loop sleeps until then
	te.waitEvent(t, long.ID, "WaitStateEntered")
	short := te.start(t, `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":60,"End":true}}}`, `{}`)
	te.waitEvent(t, short.ID, "WaitStateEntered")
	te.clock.Step(time.Minute)
	if ex := te.wait(t, short.ID); ex.Status != StatusSucceeded {
		t.Fatalf("short wait: %s", ex.Status)
	}
	if ex, _ := te.Describe(context.Background(), long.ID); ex.Status != StatusRunning {
		t.Fatalf("long wait ended early: %s", ex.Status)
	}
}

func TestExecutionTimeoutStartsRollback(t *testing.T) {
	te := openTest(t, nil, "", nil)
	def := `{"TimeoutSeconds":60,"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"End":true}}}`
	rb := `{"StartAt":"R","States":{"R":{"Type":"Pass","Parameters":{"error.$":"$.Error","state.$":"$.State"},"End":true}}}`
	ex, err := te.Start(context.Background(), StartInput{StateMachine: "m", Name: "x", Definition: []byte(def),
		OnAbort: &Rollback{StateMachine: "undo", Definition: []byte(rb)}})
	if err != nil {
		t.Fatal(err)
	}
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	te.clock.Step(time.Minute)
	ex = te.wait(t, ex.ID)
	if ex.Status != StatusTimedOut || ex.RollbackID == "" {
		t.Fatalf("status %s rollback %q", ex.Status, ex.RollbackID)
	}
	r := te.wait(t, ex.RollbackID)
	if r.StateMachine != "undo" {
		t.Fatalf("rollback machine %q", r.StateMachine)
	}
	jsonEq(t, r.Output, `{"error":"States.Timeout","state":"W"}`)
}

func TestFailedWriteIsRetriedWithoutRestart(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ex := te.start(t, `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":60,"Next":"P"},"P":{"Type":"Pass","End":true}}}`, `{}`)
	te.waitEvent(t, ex.ID, "WaitStateEntered")
	// Simulate a failing disk: every event insert aborts while the switch table has a row.
	for _, q := range []string{
		`CREATE TABLE fail_switch(x)`,
		`INSERT INTO fail_switch VALUES(1)`,
		`CREATE TRIGGER fail_events BEFORE INSERT ON events WHEN EXISTS (SELECT 1 FROM fail_switch)
			BEGIN SELECT RAISE(ABORT, 'simulated I/O error'); END`,
	} {
		if _, err := te.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	te.clock.Step(time.Minute) // the wake-up's write fails
	for !te.clock.HasWaiters() {
		<-time.After(time.Millisecond) // until the retry timer is armed
	}
	if d, _ := te.Describe(context.Background(), ex.ID); d.Status != StatusRunning {
		t.Fatalf("status %s while writes fail", d.Status)
	}
	if _, err := te.db.Exec(`DELETE FROM fail_switch`); err != nil {
		t.Fatal(err)
	}
	te.clock.Step(retryWriteAfter)
	if got := te.wait(t, ex.ID); got.Status != StatusSucceeded {
		t.Fatalf("after the disk recovered: %s", got.Status)
	}
	want := []string{"ExecutionStarted", "WaitStateEntered", "WaitStateExited", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"}
	if got := types(te.history(t, ex.ID)); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}
