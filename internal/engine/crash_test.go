package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/asl"
)

// The crash test re-executes this test binary as a child that runs a fixed workload
// against a database in a directory; the parent SIGKILLs it at random moments and
// restarts it, then compares the outcome with an uninterrupted child's.
const crashChildEnv = "RECYCLER_ENGINE_CRASH_CHILD"

// pipeline: a task, a Wait until an absolute time, a task that fails its first two
// attempts (Retry), a Map of waits + flaky tasks with MaxConcurrency 3, a Parallel of a
// Wait and a task, then a Pass/Choice loop of 30 rounds.
const crashPipeline = `{"StartAt":"Prepare","States":{
 "Prepare":{"Type":"Task","Resource":"work","Parameters":{"key.$":"States.Format('{}-prepare', $.name)","v.$":"$.v"},"ResultPath":"$.prepared","Next":"Sleep"},
 "Sleep":{"Type":"Wait","TimestampPath":"$.t1","Next":"Flaky"},
 "Flaky":{"Type":"Task","Resource":"flaky","Parameters":{"key.$":"States.Format('{}-flaky', $.name)","attempt.$":"$$.State.RetryCount","failUntil":2},
   "Retry":[{"ErrorEquals":["Test.NotYet"],"IntervalSeconds":1,"MaxAttempts":3,"BackoffRate":1}],"ResultPath":"$.flaky","Next":"Fan"},
 "Fan":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":3,"ItemSelector":{"i.$":"$$.Map.Item.Value","name.$":"$.name","t.$":"$.t2"},
   "ItemProcessor":{"ProcessorConfig":{"Mode":"INLINE"},"StartAt":"IW","States":{
     "IW":{"Type":"Wait","TimestampPath":"$.t","Next":"IT"},
     "IT":{"Type":"Task","Resource":"flaky","Parameters":{"key.$":"States.Format('{}-item{}', $.name, $.i)","attempt.$":"$$.State.RetryCount","failUntil":1},
       "Retry":[{"ErrorEquals":["States.ALL"],"IntervalSeconds":1,"MaxAttempts":2}],"End":true}}},
   "ResultPath":"$.fan","Next":"Both"},
 "Both":{"Type":"Parallel","ResultPath":"$.both","Next":"Init","Branches":[
   {"StartAt":"BW","States":{"BW":{"Type":"Wait","TimestampPath":"$.t3","Next":"BP"},"BP":{"Type":"Pass","Result":"waited","End":true}}},
   {"StartAt":"BT","States":{"BT":{"Type":"Task","Resource":"work","Parameters":{"key.$":"States.Format('{}-branch', $.name)","v.$":"$.v"},"End":true}}}]},
 "Init":{"Type":"Pass","Result":{"n":0},"ResultPath":"$.count","Next":"Inc"},
 "Inc":{"Type":"Pass","Parameters":{"n.$":"States.MathAdd($.count.n, 1)"},"ResultPath":"$.count","Next":"Check"},
 "Check":{"Type":"Choice","Choices":[{"Variable":"$.count.n","NumericLessThan":30,"Next":"Inc"}],"Default":"Done"},
 "Done":{"Type":"Succeed"}}}`

// giveUp always fails; its Catch leads to a Fail state, so the execution FAILS.
const crashGiveUp = `{"StartAt":"Try","States":{
 "Try":{"Type":"Task","Resource":"flaky","Parameters":{"key.$":"States.Format('{}-try', $.name)","attempt.$":"$$.State.RetryCount","failUntil":99},
   "Retry":[{"ErrorEquals":["Test.NotYet"],"IntervalSeconds":1,"MaxAttempts":2}],
   "Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":"$.error","Next":"Undo"}],"End":true},
 "Undo":{"Type":"Task","Resource":"work","Parameters":{"key.$":"States.Format('{}-undo', $.name)","v":1},"Next":"Failed"},
 "Failed":{"Type":"Fail","Error":"Test.GaveUp","Cause":"flaky never recovered"}}}`

// crashAbortable waits far beyond the test; the child Stops it once it is in the Wait,
// and its OnAbort rollback runs a task.
const crashAbortable = `{"StartAt":"Long","States":{"Long":{"Type":"Wait","Seconds":3600,"End":true}}}`

const crashRollback = `{"StartAt":"Undo","States":{"Undo":{"Type":"Task","Resource":"work",
 "Parameters":{"key.$":"States.Format('{}rb-undo', $.Execution.Input.name)","v":7},"ResultPath":"$.undone","Next":"Report"},
 "Report":{"Type":"Pass","Parameters":{"undone.$":"$.undone","error.$":"$.Error","cause.$":"$.Cause","state.$":"$.State",
   "input.$":"$.Execution.Input"},"End":true}}}`

type crashJob struct {
	machine, name, def string
	input              map[string]any
	abort              bool // Stop it once it reached its first Wait; OnAbort = crashRollback
}

func crashJobs(base time.Time) []crashJob {
	ts := func(d time.Duration) string { return base.Add(d).UTC().Format(time.RFC3339Nano) }
	var jobs []crashJob
	for i := range 4 {
		off := time.Duration(i) * 250 * time.Millisecond
		jobs = append(jobs, crashJob{"pipeline", fmt.Sprintf("p%d", i), crashPipeline, map[string]any{
			"name": fmt.Sprintf("p%d", i), "v": i + 1, "items": []int{1, 2, 3, 4, 5, 6},
			"t1": ts(300*time.Millisecond + off), "t2": ts(4*time.Second + off), "t3": ts(8 * time.Second),
		}, false})
	}
	jobs = append(jobs, crashJob{"giveup", "g0", crashGiveUp, map[string]any{"name": "g0"}, false})
	jobs = append(jobs, crashJob{"abortable", "a0", crashAbortable, map[string]any{"name": "a0"}, true})
	return jobs
}

// crashRegistry: tasks append one line per physical invocation to dir/attempts/<key>,
// so re-runs after a kill are visible; "flaky" fails while its logical attempt
// ($$.State.RetryCount) is below failUntil, which keeps the outcome independent of
// re-runs.
func crashRegistry(dir string) asl.Registry {
	record := func(key string) error {
		f, err := os.OpenFile(filepath.Join(dir, "attempts", key), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("x\n")
		return err
	}
	busy := func(ctx context.Context, d time.Duration) {
		select {
		case <-time.After(d): // simulated remote call, so kills land inside tasks
		case <-ctx.Done():
		}
	}
	return asl.Registry{
		"work": func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			var p struct {
				Key string
				V   int
			}
			if err := json.Unmarshal(in, &p); err != nil {
				return nil, err
			}
			if err := record(p.Key); err != nil {
				return nil, err
			}
			busy(ctx, 10*time.Millisecond)
			return json.Marshal(map[string]any{"key": p.Key, "v2": p.V * 2})
		},
		"flaky": func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			var p struct {
				Key       string
				Attempt   int
				FailUntil int
			}
			if err := json.Unmarshal(in, &p); err != nil {
				return nil, err
			}
			if err := record(p.Key); err != nil {
				return nil, err
			}
			busy(ctx, 5*time.Millisecond)
			if p.Attempt < p.FailUntil {
				return nil, asl.Errorf("Test.NotYet", "attempt %d of %s", p.Attempt, p.Key)
			}
			return json.Marshal(map[string]any{"key": p.Key, "ok": true})
		},
	}
}

// TestCrashChild is the child process; it does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the crash test's child process")
	}
	if err := runCrashChild(dir); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
}

func runCrashChild(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "base"))
	if err != nil {
		return err
	}
	ms, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return err
	}
	ctx := context.Background()
	e, err := Open(ctx, Options{Path: filepath.Join(dir, "engine.db"), Registry: crashRegistry(dir), Workers: 4,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), AdoptAll: true})
	if err != nil {
		return err
	}
	defer e.Close()
	var ids []string
	for _, j := range crashJobs(time.UnixMilli(ms)) {
		in, _ := json.Marshal(j.input)
		si := StartInput{StateMachine: j.machine, Name: j.name, Definition: []byte(j.def), Input: in}
		if j.abort {
			si.OnAbort = &Rollback{Definition: []byte(crashRollback)}
		}
		ex, err := e.Start(ctx, si)
		var exists *ExistsError
		if errors.As(err, &exists) && exists.SameRequest && exists.Driver == nil {
			ex, err = exists.Existing, nil // it ended before the kill: a name is used once
		}
		if err != nil {
			return err
		}
		ids = append(ids, ex.ID)
		if j.abort {
			// Stop once the Wait is recorded, so the history is the same in every run; after
			// a restart the execution may already be aborted.
			errInWait := errors.New("in wait")
			err := e.Watch(ctx, ex.ID, func(ev Event) error {
				if ev.Type == "WaitStateEntered" {
					return errInWait
				}
				return nil
			})
			if errors.Is(err, errInWait) {
				if _, err := e.Stop(ctx, ex.ID, "Test.Abort", "operator"); err != nil && !errors.Is(err, ErrNotRunning) {
					return err
				}
			} else if err != nil {
				return err
			}
			ab, err := e.Describe(ctx, ex.ID)
			if err != nil {
				return err
			}
			if ab.RollbackID == "" {
				return fmt.Errorf("aborted %s has no rollback", ex.ID)
			}
			ids = append(ids, ab.RollbackID)
		}
	}
	for _, id := range ids {
		if _, err := e.Wait(ctx, id); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "done"), nil, 0o644)
}

type childRun struct {
	dir string
	out bytes.Buffer
}

func (c *childRun) start(t *testing.T) (*exec.Cmd, chan error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+c.dir)
	cmd.Stdout, cmd.Stderr = &c.out, &c.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return cmd, done
}

func newCrashDir(t *testing.T, base time.Time) string {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "attempts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base"), []byte(strconv.FormatInt(base.UnixMilli(), 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test takes ~10 s")
	}
	base := time.Now().Add(500 * time.Millisecond)
	ref := &childRun{dir: newCrashDir(t, base)}
	crash := &childRun{dir: newCrashDir(t, base)}

	_, refDone := ref.start(t)

	const minKills, maxKills = 50, 100
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills, finished := 0, false
	for kills < maxKills && !finished {
		cmd, done := crash.start(t)
		// Kill anywhere from the middle of Open to well into the run.
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("child failed: %v\n%s", err, crash.out.String())
			}
			finished = true
		case <-time.After(time.Duration(5+rng.IntN(100)) * time.Millisecond):
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
				t.Fatal(err)
			}
			if err := <-done; err == nil {
				finished = true // it ended by itself just before the kill
			} else {
				kills++
			}
		}
	}
	if kills < minKills {
		t.Fatalf("workload finished after only %d kills; it must outlast %d", kills, minKills)
	}
	if !finished {
		_, done := crash.start(t)
		if err := <-done; err != nil {
			t.Fatalf("final child: %v\n%s", err, crash.out.String())
		}
	}
	if err := <-refDone; err != nil {
		t.Fatalf("reference child: %v\n%s", err, ref.out.String())
	}
	t.Logf("%d SIGKILLs", kills)

	want := readOutcome(t, ref.dir)
	got := readOutcome(t, crash.dir)
	if len(got) != len(want) || len(want) != len(crashJobs(base))+1 {
		t.Fatalf("crash run has %d executions, reference %d, want %d jobs + 1 rollback", len(got), len(want), len(crashJobs(base)))
	}
	markers, events := 0, 0
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing after crashes", name)
			continue
		}
		if g.ex.Status != w.ex.Status || !sameJSON(g.ex.Output, w.ex.Output) || g.ex.Error != w.ex.Error || g.ex.Cause != w.ex.Cause {
			t.Errorf("%s: crash run %s %s %s/%s, reference %s %s %s/%s", name,
				g.ex.Status, g.ex.Output, g.ex.Error, g.ex.Cause, w.ex.Status, w.ex.Output, w.ex.Error, w.ex.Cause)
		}
		if w.resumed != 0 {
			t.Errorf("%s: the uninterrupted run has %d re-run markers", name, w.resumed)
		}
		if g.tree != w.tree {
			t.Errorf("%s: history differs beyond re-run markers:\ncrash:     %s\nreference: %s", name, g.tree, w.tree)
		}
		if g.badMarkers != 0 {
			t.Errorf("%s: %d re-run markers that do not follow a TaskStarted", name, g.badMarkers)
		}
		markers += g.resumed
		events += g.events
		// Physical task runs (side files): at least one per logical attempt in history,
		// at most one more per re-run marker.
		// Side files are named <execution name>-<step> (a rollback's: <name>rb-<step>).
		prefix := w.ex.Name + "-"
		if w.ex.RollbackOf != "" {
			prefix = w.ex.Name + "rb-"
		}
		gp, wp := attempts(t, crash.dir, prefix), attempts(t, ref.dir, prefix)
		if wp != w.logical {
			t.Errorf("%s: reference ran tasks %d times, history shows %d", name, wp, w.logical)
		}
		if g.logical != w.logical || gp < g.logical || gp > g.logical+g.resumed {
			t.Errorf("%s: crash run: %d task runs for %d logical attempts and %d re-runs (reference: %d attempts)",
				name, gp, g.logical, g.resumed, w.logical)
		}
		t.Logf("%s: %s, %d events, %d logical task attempts, %d physical, %d re-run after a kill",
			name, g.ex.Status, g.events, g.logical, gp, g.resumed)
	}
	if markers == 0 {
		t.Errorf("no task was in flight at any of %d kills: the test did not exercise re-runs", kills)
	}
	t.Logf("summary: %d SIGKILLs, %d executions, %d history events compared, %d tasks re-run after a kill",
		kills, len(want), events, markers)
}

type outcome struct {
	ex         Execution
	tree       string
	events     int
	logical    int // TaskScheduled events
	resumed    int // TaskStarted re-run markers
	badMarkers int
}

func readOutcome(t *testing.T, dir string) map[string]outcome {
	t.Helper()
	e, err := Open(context.Background(), Options{Path: filepath.Join(dir, "engine.db"), Workers: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var left int
	if err := e.db.QueryRow(`SELECT (SELECT COUNT(*) FROM frames) + (SELECT COUNT(*) FROM timers)`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%s: %d frames/timers left after every execution ended", dir, left)
	}
	list, err := e.List(context.Background(), ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]outcome{}
	for _, ex := range list {
		h, err := e.History(context.Background(), ex.ID)
		if err != nil {
			t.Fatal(err)
		}
		o := outcome{ex: ex, events: len(h)}
		o.tree, o.resumed, o.badMarkers = canonicalHistory(h)
		for _, ev := range h {
			if ev.Type == "TaskScheduled" {
				o.logical++
			}
		}
		out[ex.StateMachine+"/"+ex.Name] = o
	}
	return out
}

func isRerunMarker(ev Event) bool {
	if ev.Type != "TaskStarted" {
		return false
	}
	var d struct{ Resumed bool }
	_ = json.Unmarshal(ev.Details, &d)
	return d.Resumed
}

// canonicalHistory renders the history as its causal tree (PreviousEventID links),
// children sorted, with re-run markers spliced out. Parallel branches and Map
// iterations interleave differently from run to run; their causal trees do not.
func canonicalHistory(h []Event) (tree string, markers, bad int) {
	byID := map[int64]Event{}
	for _, ev := range h {
		byID[ev.ID] = ev
	}
	parent := func(ev Event) int64 {
		p := ev.PreviousEventID
		for p != 0 && isRerunMarker(byID[p]) {
			p = byID[p].PreviousEventID
		}
		return p
	}
	children := map[int64][]int64{}
	for _, ev := range h {
		if isRerunMarker(ev) {
			markers++
			if byID[ev.PreviousEventID].Type != "TaskStarted" {
				bad++
			}
			continue
		}
		children[parent(ev)] = append(children[parent(ev)], ev.ID)
	}
	var render func(id int64) string
	render = func(id int64) string {
		var kids []string
		for _, c := range children[id] {
			kids = append(kids, render(c))
		}
		slices.Sort(kids)
		s := ""
		if id != 0 {
			s = byID[id].Type
		}
		if len(kids) == 1 {
			return s + " " + kids[0]
		}
		if len(kids) > 1 {
			return s + " {" + strings.Join(kids, " | ") + "}"
		}
		return s
	}
	return render(0), markers, bad
}

func attempts(t *testing.T, dir, prefix string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "attempts", prefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += bytes.Count(b, []byte("\n"))
	}
	return n
}
