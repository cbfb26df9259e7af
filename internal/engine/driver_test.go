package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/asl"
)

// whoDef: a Wait of an hour, then a task that says which engine ran it.
const whoDef = `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"Next":"T"},
	"T":{"Type":"Task","Resource":"who","End":true}}}`

func whoRegistry(name string) asl.Registry {
	return asl.Registry{"who": func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.Marshal(name)
	}}
}

// openDriver opens another engine (another "process") on path with its own clock.
func openDriver(t *testing.T, path string, reg asl.Registry, o Options) *testEngine {
	t.Helper()
	fc := clocktesting.NewFakeClock(t0)
	rec := &recorder{ch: make(chan Event, 10000)}
	o.Path, o.Clock, o.Registry, o.OnEvent, o.Workers = path, fc, reg, rec.add, 4
	if o.PollInterval == 0 {
		o.PollInterval = 10 * time.Millisecond
	}
	e, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return &testEngine{Engine: e, clock: fc, path: path, rec: rec}
}

func within(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two engines on one file each drive only the executions they started: neither runs
// the other's steps, the second cannot take over (Adopt, Start of the same name) while
// the first lives, and takes over once it has gone.
func TestEachEngineDrivesOnlyItsOwnExecutions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	a := openDriver(t, path, whoRegistry("A"), Options{})
	b := openDriver(t, path, whoRegistry("B"), Options{})
	ctx := within(t)
	start := func(te *testEngine, name string) Execution {
		ex, err := te.Start(ctx, StartInput{StateMachine: "m", Name: name, Definition: []byte(whoDef)})
		if err != nil {
			t.Fatal(err)
		}
		te.waitEvent(t, ex.ID, "WaitStateEntered")
		return ex
	}
	exA, exB := start(a, "a"), start(b, "b")

	a.clock.Step(time.Hour) // only A's execution is due on A's clock
	if got := a.wait(t, exA.ID); got.Status != StatusSucceeded || string(got.Output) != `"A"` {
		t.Fatalf("A's execution: %s %s", got.Status, got.Output)
	}
	if got, _ := b.Describe(ctx, exB.ID); got.Status != StatusRunning {
		t.Fatalf("B's execution %s after A's clock moved: A drove it", got.Status)
	}

	exA2 := start(a, "a2")
	var driven *DrivenError
	if _, err := b.Adopt(ctx, exA2.ID); !errors.As(err, &driven) || driven.Driver.PID != os.Getpid() || driven.Driver.Self {
		t.Fatalf("B adopts A's running execution: %v, want *DrivenError naming pid %d", err, os.Getpid())
	}
	var exists *ExistsError
	_, err := b.Start(ctx, StartInput{StateMachine: "m", Name: "a2", Definition: []byte(whoDef)})
	if !errors.As(err, &exists) || exists.Driver == nil || exists.Existing.ID != exA2.ID {
		t.Fatalf("B starts the same request A drives: %v, want ExistsError with the driver", err)
	}
	if d, ok := b.DriverOf(exA2.ID); !ok || d.Self || d.PID != os.Getpid() {
		t.Fatalf("B sees driver %+v %v of A's execution", d, ok)
	}
	if d, ok := a.DriverOf(exA2.ID); !ok || !d.Self {
		t.Fatalf("A sees driver %+v %v of its own execution", d, ok)
	}

	// A goes away (Close, or a crash: the kernel drops its locks): B may take over.
	a.Close()
	if _, ok := b.DriverOf(exA2.ID); ok {
		t.Fatal("a closed engine still counts as the driver")
	}
	if _, err := b.Adopt(ctx, exA2.ID); err != nil {
		t.Fatal(err)
	}
	b.clock.Step(2 * time.Hour) // A's clock was an hour ahead when exA2 started
	if got := b.wait(t, exA2.ID); got.Status != StatusSucceeded || string(got.Output) != `"B"` {
		t.Fatalf("adopted execution: %s %s", got.Status, got.Output)
	}
	if got := b.wait(t, exB.ID); got.Status != StatusSucceeded || string(got.Output) != `"B"` {
		t.Fatalf("B's own execution: %s %s", got.Status, got.Output)
	}
	// The driver lets go right after the final commit (Wait may see the commit first).
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		_, err := os.Stat(b.driverPath(exA2.ID))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the driver file of an ended execution stays: %v", err)
		}
	}
}

// holdingTask runs until canceled and then takes until release is closed to return,
// like an AWS call that lands after the abort: what ran after it returned is checked.
type holdingTask struct {
	started  chan struct{}
	canceled chan struct{}
	release  chan struct{}
	once     sync.Once
	returned atomic.Bool
	calls    atomic.Int32
}

// let lets the task return (once; also on a failing test's way out, before Close).
func (h *holdingTask) let() { h.once.Do(func() { close(h.release) }) }

func newHoldingTask() *holdingTask {
	return &holdingTask{started: make(chan struct{}, 10), canceled: make(chan struct{}, 10), release: make(chan struct{})}
}

func (h *holdingTask) fn(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
	h.calls.Add(1)
	h.started <- struct{}{}
	<-ctx.Done()
	h.canceled <- struct{}{}
	<-h.release
	h.returned.Store(true)
	return nil, ctx.Err()
}

const holdDef = `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"hold","End":true}}}`

// The rollback's task fails if the aborted task has not returned yet.
const undoDef = `{"StartAt":"U","States":{"U":{"Type":"Task","Resource":"undo","End":true}}}`

func (h *holdingTask) registry(name string, undone *atomic.Value) asl.Registry {
	return asl.Registry{
		"hold": h.fn,
		"undo": func(context.Context, json.RawMessage) (json.RawMessage, error) {
			if !h.returned.Load() {
				return nil, asl.Errorf("Test.TooEarly", "the rollback ran while the aborted task was still running")
			}
			undone.Store(name)
			return json.RawMessage(`"undone"`), nil
		},
	}
}

// An abort (Stop) or a TimeoutSeconds that ends an execution with a task in flight
// cancels the task and starts the rollback only once the task has returned: the
// rollback never runs beside a call of the step it undoes (issue 8 item 4).
func TestRollbackStartsAfterTheAbortedTaskReturned(t *testing.T) {
	for _, how := range []string{"stop", "timeout"} {
		t.Run(how, func(t *testing.T) {
			h := newHoldingTask()
			var undone atomic.Value
			te := openTest(t, h.registry("self", &undone), "", nil)
			t.Cleanup(h.let)
			ctx := within(t)
			def := holdDef
			if how == "timeout" {
				def = `{"TimeoutSeconds":60,` + holdDef[1:]
			}
			ex, err := te.Start(ctx, StartInput{StateMachine: "m", Name: "x", Definition: []byte(def),
				OnAbort: &Rollback{Definition: []byte(undoDef)}})
			if err != nil {
				t.Fatal(err)
			}
			<-h.started
			stopped := make(chan Execution, 1)
			go func() {
				if how == "timeout" {
					te.clock.Step(time.Minute)
					stopped <- te.wait(t, ex.ID)
					return
				}
				got, err := te.Stop(ctx, ex.ID, "User.Abort", "test")
				if err != nil {
					t.Error(err)
				}
				stopped <- got
			}()
			// The task is canceled but has not returned: nothing may end or roll back.
			time.Sleep(200 * time.Millisecond) // a window in which a premature rollback would show
			select {
			case got := <-stopped:
				t.Fatalf("ended (%s, rollback %q) while the aborted task was still running", got.Status, got.RollbackID)
			default:
			}
			if exs, _ := te.List(ctx, ListFilter{StateMachine: "m-rollback"}); len(exs) != 0 {
				t.Fatalf("rollback %s created while the aborted task was still running", exs[0].ID)
			}
			h.let()
			got := <-stopped
			if want := map[string]Status{"stop": StatusAborted, "timeout": StatusTimedOut}[how]; got.Status != want || got.RollbackID == "" {
				t.Fatalf("after the task returned: %s rollback %q, want %s with a rollback", got.Status, got.RollbackID, want)
			}
			if rb := te.wait(t, got.RollbackID); rb.Status != StatusSucceeded {
				t.Fatalf("rollback %s: %s %s", rb.Status, rb.Error, rb.Cause)
			}
			if h.calls.Load() != 1 {
				t.Fatalf("the aborted task ran %d times", h.calls.Load())
			}
		})
	}
}

// abort, asked by another process: the driver picks the request up (within its poll
// interval), cancels its task, waits for it, and drives the rollback; the asking side's
// Stop returns once the execution ended.
func TestStopFromAnotherProcessIsCarriedOutByTheDriver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	h := newHoldingTask()
	var undone atomic.Value
	a := openDriver(t, path, h.registry("A", &undone), Options{})
	t.Cleanup(h.let)
	b := openDriver(t, path, asl.Registry{}, Options{})
	ctx := within(t)
	ex, err := a.Start(ctx, StartInput{StateMachine: "m", Name: "x", Definition: []byte(holdDef),
		OnAbort: &Rollback{Definition: []byte(undoDef)}})
	if err != nil {
		t.Fatal(err)
	}
	<-h.started
	stopped := make(chan error, 1)
	var got Execution
	asked := time.Now()
	go func() {
		var err error
		got, err = b.Stop(ctx, ex.ID, "User.Abort", "from another process")
		stopped <- err
	}()
	select {
	case <-h.canceled:
		t.Logf("the driver canceled its task %s after the abort was asked for", time.Since(asked).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the driver did not cancel its task within 10s of the abort request")
	}
	if r, _ := a.AbortRequested(ctx, ex.ID); r == nil {
		t.Fatal("no abort request recorded")
	}
	time.Sleep(100 * time.Millisecond) // the task still runs: nothing may end yet
	if d, _ := a.Describe(ctx, ex.ID); d.Status != StatusRunning || d.RollbackID != "" {
		t.Fatalf("ended (%s) while the aborted task was still running", d.Status)
	}
	h.let()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusAborted || got.Cause != "from another process" || got.RollbackID == "" {
		t.Fatalf("after stop: %+v", got)
	}
	if rb := a.wait(t, got.RollbackID); rb.Status != StatusSucceeded || undone.Load() != "A" {
		t.Fatalf("rollback %s, run by %v; want it run by A, the driver", rb.Status, undone.Load())
	}
}

// abort of an execution nobody drives: the aborting engine ends it itself without
// running anything of it first (not even the task that was in flight when its driver
// died), and drives the rollback. A request left behind by an aborting process that
// went away is carried out by whoever adopts the execution.
func TestStopWithoutADriverEndsItHere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	ctx := within(t)
	h := newHoldingTask()
	var undone atomic.Value
	a := openDriver(t, path, h.registry("A", &undone), Options{})
	ex, err := a.Start(ctx, StartInput{StateMachine: "m", Name: "x", Definition: []byte(holdDef),
		OnAbort: &Rollback{Definition: []byte(undoDef)}})
	if err != nil {
		t.Fatal(err)
	}
	<-h.started
	h.let()
	a.Close() // the driver goes away with the task in flight
	<-h.canceled

	b := openDriver(t, path, h.registry("B", &undone), Options{})
	got, err := b.Stop(ctx, ex.ID, "User.Abort", "nobody drove it")
	if err != nil || got.Status != StatusAborted || got.RollbackID == "" {
		t.Fatalf("stop: %+v %v", got, err)
	}
	if rb := b.wait(t, got.RollbackID); rb.Status != StatusSucceeded || undone.Load() != "B" {
		t.Fatalf("rollback %s run by %v, want B", rb.Status, undone.Load())
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("the aborted step ran %d times, want once (not again before the abort)", n)
	}

	// A request recorded while the driver does not look (here: an abort whose caller gave
	// up before the driver answered, and the driver then went away).
	c := openDriver(t, path, whoRegistry("C"), Options{PollInterval: time.Hour})
	ex2, err := c.Start(ctx, StartInput{StateMachine: "m", Name: "y", Definition: []byte(whoDef),
		OnAbort: &Rollback{Definition: []byte(`{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}`)}})
	if err != nil {
		t.Fatal(err)
	}
	c.waitEvent(t, ex2.ID, "WaitStateEntered")
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := b.Stop(short, ex2.ID, "User.Abort", "left behind"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stop while the driver does not look: %v, want the deadline", err)
	}
	c.Close()
	d := openDriver(t, path, whoRegistry("D"), Options{})
	if got, err := d.Adopt(ctx, ex2.ID); err != nil || got.Status != StatusAborted || got.Cause != "left behind" {
		t.Fatalf("adopt with a pending abort: %+v %v, want it aborted", got, err)
	}
	if h := d.history(t, ex2.ID); types(h)[len(h)-1] != "ExecutionAborted" || len(h) != 3 {
		t.Fatalf("history %v: something ran before the abort", types(h))
	}
}
