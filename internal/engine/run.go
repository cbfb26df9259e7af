package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
)

// Frame phases. A frame is one cursor of an execution: the top-level machine, or one
// Parallel branch / Map iteration (a child frame of the frame running that state).
const (
	phaseEnter    = "enter"    // ready: Enter the cursor's state (records XStateEntered)
	phaseRetry    = "retry"    // timer: Enter again after a Retry delay (no XStateEntered)
	phaseWait     = "wait"     // timer: AfterWait at due
	phaseTask     = "task"     // ready: invoke the stored task, then TaskDone
	phaseBranches = "branches" // waiting for child frames
	phaseJoin     = "join"     // ready: all children done, BranchesDone
	phasePending  = "pending"  // child not started yet (MaxConcurrency)
	phaseDone     = "done"     // child finished; result holds its BranchResult
)

const (
	timerWake    = "wake"
	timerTimeout = "timeout"
)

// stepsPerTurn bounds how many transitions one worker runs for a frame before it
// yields the worker to other ready frames.
const stepsPerTurn = 64

type pendingTask struct {
	Resource  string          `json:"resource"`
	Input     json.RawMessage `json:"input"`
	Timeout   time.Duration   `json:"timeout,omitempty"`
	Heartbeat time.Duration   `json:"heartbeat,omitempty"`
}

// frame is the in-memory copy of one frames row, owned by one worker at a time.
type frame struct {
	id, parentID int64
	idx          int
	kind         string // "map", "parallel" or "" (top)
	execID       string
	phase        string
	cur          asl.Cursor
	enteredAt    time.Time
	task         *pendingTask
	lastEvent    int64
	forkEvent    int64
	version      int64
	due          time.Time // wake timer of wait/retry phases
	hasWake      bool
	mi           *machineInfo

	machine, name string
	input         json.RawMessage
	start         time.Time
}

func (e *Engine) loadFrame(ctx context.Context, id int64) (*frame, error) {
	f := &frame{id: id}
	var cur, task []byte
	var entered, due, start int64
	var defHash, status string
	var input []byte
	err := e.queryRowDB(ctx, `SELECT f.exec_id, f.parent_id, f.idx, f.kind, f.def_hash, f.phase, f.cursor, f.entered_at,
			f.task, f.last_event_id, f.fork_event_id, f.version, COALESCE(t.due_at, 0),
			x.state_machine, x.name, x.input, x.start_time, x.status
		FROM frames f JOIN executions x ON x.id = f.exec_id
		LEFT JOIN timers t ON t.frame_id = f.id AND t.kind = 'wake'
		WHERE f.id = ?`, id).Scan(&f.execID, &f.parentID, &f.idx, &f.kind, &defHash, &f.phase, &cur, &entered,
		&task, &f.lastEvent, &f.forkEvent, &f.version, &due, &f.machine, &f.name, &input, &start, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load frame %d: %w", id, err)
	}
	if Status(status) != StatusRunning {
		return nil, nil
	}
	if err := json.Unmarshal(cur, &f.cur); err != nil {
		return nil, fmt.Errorf("load frame %d cursor: %w", id, err)
	}
	if len(task) > 0 {
		f.task = &pendingTask{}
		if err := json.Unmarshal(task, f.task); err != nil {
			return nil, fmt.Errorf("load frame %d task: %w", id, err)
		}
	}
	f.enteredAt, f.start, f.input = fromNanos(entered), fromNanos(start), input
	f.due, f.hasWake = fromNanos(due), due != 0
	if f.mi, err = e.machineByHash(ctx, e.rdb, defHash); err != nil {
		return nil, err
	}
	return f, nil
}

// queryRowDB runs a read on the read pool with a cached prepared statement.
func (e *Engine) queryRowDB(ctx context.Context, q string, args ...any) *sql.Row {
	st, ok := e.rstmts.Load(q)
	if !ok {
		prepared, err := e.rdb.PrepareContext(ctx, q)
		if err != nil {
			return e.rdb.QueryRowContext(ctx, q, args...)
		}
		if st, ok = e.rstmts.LoadOrStore(q, prepared); ok {
			prepared.Close()
		} else {
			st = prepared
		}
	}
	return st.(*sql.Stmt).QueryRowContext(ctx, args...)
}

func (e *Engine) aslContext(f *frame, now time.Time) asl.Context {
	// RetryCount stays 0: asl derives $$.State.RetryCount from Cursor.Retries.
	return asl.Context{
		ExecutionID: f.execID, ExecutionName: f.name, ExecutionInput: f.input, StartTime: f.start,
		StateMachineID: f.machine, StateMachine: f.machine,
		EnteredTime: f.enteredAt, Now: now,
	}
}

// runFrame drives one frame until it blocks (timer, task elsewhere, children) or ends.
func (e *Engine) runFrame(w work) {
	f, err := e.loadFrame(e.ctx, w.frame)
	if errors.Is(err, errBadDefinition) {
		e.failBroken(w.frame, err)
		return
	}
	if err != nil {
		if e.ctx.Err() == nil {
			e.log.Error("engine: load frame", "frame", w.frame, "err", err)
		}
		return
	}
	if f == nil {
		return
	}
	if w.resumed && f.phase == phaseTask {
		// Make the re-run visible: the task was in flight when the process stopped.
		var post []func()
		err := e.write(e.ctx, func(wr *writer) error {
			if _, err := wr.frameEvent(f, "TaskStarted", map[string]any{"resource": f.task.Resource, "resumed": true}); err != nil {
				return err
			}
			return wr.saveFrame(f)
		}, &post)
		if err != nil {
			e.dropTransition(f, err)
			return
		}
		e.runPost(post)
	}
	steps := 0
	for {
		if e.ctx.Err() != nil {
			return
		}
		if steps >= stepsPerTurn && f.phase == phaseEnter {
			e.q.push(work{frame: f.id})
			return
		}
		var task *taskOutcome
		if f.phase == phaseTask {
			// Everything before the task is committed; the task runs outside any transaction.
			if task = e.invoke(f); task == nil {
				return
			}
		}
		var more bool
		var post []func()
		err := e.write(e.ctx, func(w *writer) error {
			// Pure transitions (Pass, Choice, a due Wait, a join) share one transaction:
			// it commits before the next action with an effect outside (a Task, a timer,
			// child frames) starts, so the write-ahead rule holds for each of them.
			for n := 0; n < maxBatch; n++ {
				var err error
				more, err = e.step(w, f, task)
				task = nil
				steps++
				if err != nil || !more || f.phase == phaseTask {
					return err
				}
			}
			return nil
		}, &post)
		if err != nil {
			e.dropTransition(f, err)
			return
		}
		e.runPost(post)
		if !more {
			return
		}
	}
}

// failBroken fails the execution of a frame whose definition cannot be loaded.
func (e *Engine) failBroken(frameID int64, cause error) {
	var post []func()
	err := e.write(e.ctx, func(w *writer) error {
		var execID string
		if err := w.queryRow(`SELECT exec_id FROM frames WHERE id = ?`, frameID).Scan(&execID); err != nil {
			return errStale
		}
		if _, err := w.emit(execID, "ExecutionFailed", latestEvent, map[string]any{"error": "States.Runtime", "cause": cause.Error()}); err != nil {
			return err
		}
		return w.finishExec(execID, StatusFailed, nil, "States.Runtime", cause.Error())
	}, &post)
	if err != nil {
		e.dropTransition(&frame{id: frameID}, err)
		return
	}
	e.log.Error("engine: execution failed: definition does not load", "frame", frameID, "err", cause)
	e.runPost(post)
}

// retryWriteAfter: a transition whose write failed (disk full, I/O error) is tried again
// from its last committed state after this delay, instead of waiting for a restart.
const retryWriteAfter = time.Second

func (e *Engine) dropTransition(f *frame, err error) {
	var abort *abortRequestedError
	if errors.As(err, &abort) {
		// Another process asked for an abort; nothing of the execution may run now.
		e.endOwned(abort.id, ending{status: StatusAborted, event: "ExecutionAborted", err: abort.req.Error, cause: abort.req.Cause})
		return
	}
	if errors.Is(err, errStale) || e.ctx.Err() != nil {
		return
	}
	e.log.Warn("engine: transition not recorded; retrying from the last recorded one",
		"execution", f.execID, "state", f.cur.State, "in", retryWriteAfter, "err", err)
	// An in-memory timer only: the frame's committed phase says what to do when it fires.
	e.timers.add(timerEntry{frame: f.id, kind: timerWake, due: e.clock.Now().Add(retryWriteAfter)})
}

func sumRetries(r []int) int {
	n := 0
	for _, c := range r {
		n += c
	}
	return n
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

type taskOutcome struct {
	res json.RawMessage
	err error
}

// maxBatch bounds the transitions written in one transaction (a Pass/Choice loop
// must still commit regularly).
const maxBatch = 32

// step performs one transition inside w: compute the action (pure), then record it
// with its history events. It returns whether the frame can go on at once.
func (e *Engine) step(w *writer, f *frame, task *taskOutcome) (bool, error) {
	now := e.clock.Now().UTC()
	w.now = now
	typ := f.mi.types[f.cur.State]
	var act asl.Action
	var err error
	switch f.phase {
	case phaseEnter:
		f.enteredAt = now
		if _, err := w.frameEvent(f, typ+"StateEntered", map[string]any{"name": f.cur.State, "input": f.cur.Input}); err != nil {
			return false, err
		}
		act, err = f.mi.m.Enter(f.cur, e.aslContext(f, now))
	case phaseRetry, phaseWait:
		if now.Before(f.due) {
			return false, nil
		}
		if f.phase == phaseRetry {
			act, err = f.mi.m.Enter(f.cur, e.aslContext(f, now))
		} else {
			act, err = f.mi.m.AfterWait(f.cur, e.aslContext(f, now))
		}
	case phaseTask:
		if task == nil {
			return false, nil
		}
		res, terr := task.res, task.err
		var everr error
		switch {
		case terr == nil:
			_, everr = w.frameEvent(f, "TaskSucceeded", map[string]any{"resource": f.task.Resource, "output": res})
		case asl.ErrorName(terr) == "States.Timeout":
			_, everr = w.frameEvent(f, "TaskTimedOut", map[string]any{"resource": f.task.Resource, "error": "States.Timeout", "cause": terr.Error()})
		default:
			_, everr = w.frameEvent(f, "TaskFailed", map[string]any{"resource": f.task.Resource, "error": asl.ErrorName(terr), "cause": terr.Error()})
		}
		if everr != nil {
			return false, everr
		}
		act, err = f.mi.m.TaskDone(f.cur, e.aslContext(f, now), res, terr)
		if err == nil && act.Kind == asl.ActRetry {
			// Logged after the commit: a retried task is worth a warning, a dropped write is not.
			name, delay, attempt, state, id := asl.ErrorName(terr), act.Delay, sumRetries(act.Retries), f.cur.State, f.execID
			w.post(func() {
				e.log.Warn("engine: task failed; the state machine retries it", "execution", id, "state", state,
					"error", name, "cause", firstLine(terr.Error()), "attempt", attempt, "in", delay)
			})
		}
	case phaseJoin:
		results, ok, lerr := childResults(w.tx, f.id)
		if lerr != nil {
			return false, lerr
		}
		outcome := "Succeeded"
		if !ok {
			outcome = "Failed"
		}
		id, everr := w.emit(f.execID, typ+"State"+outcome, f.forkEvent, map[string]any{"name": f.cur.State})
		if everr != nil {
			return false, everr
		}
		f.lastEvent = id
		if _, err := w.exec(`DELETE FROM frames WHERE parent_id = ?`, f.id); err != nil {
			return false, fmt.Errorf("delete children: %w", err)
		}
		act, err = f.mi.m.BranchesDone(f.cur, e.aslContext(f, now), results)
	default:
		return false, nil
	}
	if err != nil {
		// A returned error is a broken definition at run time: fail like Step Functions.
		act = asl.Action{Kind: asl.ActFail, Error: "States.Runtime", Cause: err.Error()}
	}
	w.steps++
	return e.apply(w, f, typ, act)
}

// apply writes the action's effect on the frame (inside the transition's transaction).
func (e *Engine) apply(w *writer, f *frame, typ string, act asl.Action) (bool, error) {
	switch act.Kind {
	case asl.ActNext:
		if _, err := w.frameEvent(f, typ+"StateExited", map[string]any{"name": f.cur.State, "output": act.Output}); err != nil {
			return false, err
		}
		f.cur = asl.Cursor{State: act.Next, Input: act.Output}
		f.phase, f.task = phaseEnter, nil
		return true, w.saveFrame(f)
	case asl.ActSucceed:
		if _, err := w.frameEvent(f, typ+"StateExited", map[string]any{"name": f.cur.State, "output": act.Output}); err != nil {
			return false, err
		}
		return false, e.endFrame(w, f, asl.BranchResult{Output: act.Output})
	case asl.ActFail:
		return false, e.endFrame(w, f, asl.BranchResult{Error: act.Error, Cause: act.Cause})
	case asl.ActWait:
		f.phase, f.task, f.due = phaseWait, nil, act.Until
		return !act.Until.After(w.now), w.saveFrame(f)
	case asl.ActRetry:
		f.cur.Retries = act.Retries
		f.phase, f.task, f.due = phaseRetry, nil, w.now.Add(act.Delay)
		return act.Delay <= 0, w.saveFrame(f)
	case asl.ActTask:
		if _, err := w.frameEvent(f, "TaskScheduled", map[string]any{"resource": act.Resource, "parameters": act.TaskInput,
			"timeoutInSeconds": int64(act.Timeout / time.Second), "heartbeatInSeconds": int64(act.Heartbeat / time.Second)}); err != nil {
			return false, err
		}
		if _, err := w.frameEvent(f, "TaskStarted", map[string]any{"resource": act.Resource}); err != nil {
			return false, err
		}
		f.phase = phaseTask
		f.task = &pendingTask{Resource: act.Resource, Input: act.TaskInput, Timeout: act.Timeout, Heartbeat: act.Heartbeat}
		return true, w.saveFrame(f)
	case asl.ActBranches:
		return e.fork(w, f, typ, act)
	}
	return false, fmt.Errorf("state %s: unknown action %v", f.cur.State, act.Kind)
}

// fork persists the child frames of a Parallel or Map state; the first MaxConcurrency
// start at once, the rest wait as "pending" and start as others finish.
func (e *Engine) fork(w *writer, f *frame, typ string, act asl.Action) (bool, error) {
	kind := "parallel"
	if typ == "Map" {
		kind = "map"
	}
	fork, err := w.frameEvent(f, typ+"StateStarted", map[string]any{"name": f.cur.State, "length": len(act.Branches)})
	if err != nil {
		return false, err
	}
	f.forkEvent = fork
	if len(act.Branches) == 0 {
		f.phase = phaseJoin
		return true, w.saveFrame(f)
	}
	f.phase, f.task = phaseBranches, nil
	if err := w.saveFrame(f); err != nil {
		return false, err
	}
	limit := act.MaxConcurrency
	if limit <= 0 {
		limit = len(act.Branches)
	}
	for i, b := range act.Branches {
		mi := e.machineInfo(b.Machine)
		if err := w.putDefinition(mi.hash, mi.def, mi); err != nil {
			return false, err
		}
		phase, last := phasePending, fork
		if i < limit {
			phase = phaseEnter
			if kind == "map" {
				if last, err = w.emit(f.execID, "MapIterationStarted", fork, map[string]any{"index": b.Index}); err != nil {
					return false, err
				}
			}
		}
		cur, _ := json.Marshal(asl.Cursor{State: b.Machine.StartAt(), Input: b.Input})
		res, err := w.exec(`INSERT INTO frames(exec_id, parent_id, idx, kind, def_hash, phase, cursor, last_event_id)
			VALUES(?,?,?,?,?,?,?,?)`, f.execID, f.id, b.Index, kind, mi.hash, phase, cur, last)
		if err != nil {
			return false, fmt.Errorf("insert child frame: %w", err)
		}
		if phase == phaseEnter {
			id, _ := res.LastInsertId()
			w.post(func() { e.q.push(work{frame: id}) })
		}
	}
	return false, nil
}

// endFrame finishes a frame: the execution for the top frame, otherwise the child's
// result is stored, the next pending sibling starts, and the last one wakes the parent.
func (e *Engine) endFrame(w *writer, f *frame, res asl.BranchResult) error {
	if f.parentID == 0 {
		if res.Error == "" {
			if _, err := w.frameEvent(f, "ExecutionSucceeded", map[string]any{"output": res.Output}); err != nil {
				return err
			}
			return w.finishExec(f.execID, StatusSucceeded, res.Output, "", "")
		}
		if _, err := w.frameEvent(f, "ExecutionFailed", map[string]any{"error": res.Error, "cause": res.Cause}); err != nil {
			return err
		}
		return w.finishExec(f.execID, StatusFailed, nil, res.Error, res.Cause)
	}
	var parentFork int64
	if err := w.queryRow(`SELECT fork_event_id FROM frames WHERE id = ? AND phase = ?`,
		f.parentID, phaseBranches).Scan(&parentFork); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return errStale
		}
		return fmt.Errorf("read parent frame: %w", err)
	}
	if f.kind == "map" {
		typ := "MapIterationSucceeded"
		if res.Error != "" {
			typ = "MapIterationFailed"
		}
		if _, err := w.frameEvent(f, typ, map[string]any{"index": f.idx, "error": res.Error, "cause": res.Cause}); err != nil {
			return err
		}
	}
	result, _ := json.Marshal(res)
	f.phase, f.task = phaseDone, nil
	if err := w.saveFrame(f, result); err != nil {
		return err
	}
	if res.Error != "" {
		if err := e.stopSiblings(w, f, parentFork); err != nil {
			return err
		}
	}
	var next int64
	var nextIdx int
	err := w.queryRow(`SELECT id, idx FROM frames WHERE parent_id = ? AND phase = ? ORDER BY idx LIMIT 1`,
		f.parentID, phasePending).Scan(&next, &nextIdx)
	switch {
	case err == nil:
		last := parentFork
		if f.kind == "map" {
			if last, err = w.emit(f.execID, "MapIterationStarted", parentFork, map[string]any{"index": nextIdx}); err != nil {
				return err
			}
		}
		if _, err := w.exec(`UPDATE frames SET phase = ?, last_event_id = ?, version = version + 1 WHERE id = ?`, phaseEnter, last, next); err != nil {
			return fmt.Errorf("start pending child: %w", err)
		}
		w.post(func() { e.q.push(work{frame: next}) })
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("find pending child: %w", err)
	}
	var open int
	if err := w.queryRow(`SELECT COUNT(*) FROM frames WHERE parent_id = ? AND phase != ?`, f.parentID, phaseDone).Scan(&open); err != nil {
		return fmt.Errorf("count children: %w", err)
	}
	if open == 0 {
		if _, err := w.exec(`UPDATE frames SET phase = ?, version = version + 1 WHERE id = ?`, phaseJoin, f.parentID); err != nil {
			return fmt.Errorf("wake parent: %w", err)
		}
		parent := f.parentID
		w.post(func() { e.q.push(work{frame: parent}) })
	}
	return nil
}

// stopSiblings: a failed branch fails the whole Parallel or Map (asl refuses the
// Distributed Map's ToleratedFailure* fields), so the other branches stop, as in Step
// Functions: unfinished siblings become done (their results are ignored once one branch
// failed), their sub-frames and timers are deleted, and tasks still running there lose
// their result (their frame version moved on).
func (e *Engine) stopSiblings(w *writer, f *frame, fork int64) error {
	rows, err := w.tx.Query(`SELECT idx, phase FROM frames WHERE parent_id = ? AND phase != ?`, f.parentID, phaseDone)
	if err != nil {
		return fmt.Errorf("stop branches: %w", err)
	}
	type sib struct {
		idx   int
		phase string
	}
	var sibs []sib
	for rows.Next() {
		var s sib
		if err := rows.Scan(&s.idx, &s.phase); err != nil {
			rows.Close()
			return fmt.Errorf("stop branches: %w", err)
		}
		sibs = append(sibs, s)
	}
	rows.Close()
	if len(sibs) == 0 {
		return nil
	}
	for _, s := range sibs {
		if f.kind == "map" && s.phase != phasePending {
			if _, err := w.emit(f.execID, "MapIterationAborted", fork, map[string]any{"index": s.idx}); err != nil {
				return err
			}
		}
	}
	const subtree = `WITH RECURSIVE d(id) AS (
		SELECT id FROM frames WHERE parent_id = ?1 AND phase != 'done'
		UNION ALL SELECT fr.id FROM frames fr JOIN d ON fr.parent_id = d.id)`
	if _, err := w.exec(subtree+` DELETE FROM timers WHERE frame_id IN (SELECT id FROM d)`, f.parentID); err != nil {
		return fmt.Errorf("stop branches: %w", err)
	}
	if _, err := w.exec(subtree+` DELETE FROM frames WHERE parent_id IN (SELECT id FROM d)`, f.parentID); err != nil {
		return fmt.Errorf("stop branches: %w", err)
	}
	stopped, _ := json.Marshal(asl.BranchResult{Output: json.RawMessage(`null`)})
	if _, err := w.exec(`UPDATE frames SET phase = ?, result = ?, task = NULL, version = version + 1 WHERE parent_id = ? AND phase != ?`,
		phaseDone, stopped, f.parentID, phaseDone); err != nil {
		return fmt.Errorf("stop branches: %w", err)
	}
	return nil
}

// frameEvent appends an event caused by the frame's previous event.
func (w *writer) frameEvent(f *frame, typ string, details any) (int64, error) {
	id, err := w.emit(f.execID, typ, f.lastEvent, details)
	if err != nil {
		return 0, err
	}
	f.lastEvent = id
	return id, nil
}

// saveFrame writes the frame if nobody changed it since it was read (version check),
// and keeps its wake timer in step with its phase.
func (w *writer) saveFrame(f *frame, result ...[]byte) error {
	cur, _ := json.Marshal(f.cur)
	var task, res []byte
	if f.task != nil {
		task, _ = json.Marshal(f.task)
	}
	if len(result) > 0 {
		res = result[0]
	}
	r, err := w.exec(`UPDATE frames SET phase = ?, cursor = ?, entered_at = ?, task = ?, result = ?, last_event_id = ?,
		fork_event_id = ?, version = version + 1 WHERE id = ? AND version = ?`,
		f.phase, cur, nanos(f.enteredAt), task, res, f.lastEvent, f.forkEvent, f.id, f.version)
	if err != nil {
		return fmt.Errorf("save frame: %w", err)
	}
	if n, _ := r.RowsAffected(); n != 1 {
		return errStale
	}
	f.version++
	if f.hasWake {
		if _, err := w.exec(`DELETE FROM timers WHERE frame_id = ? AND kind = ?`, f.id, timerWake); err != nil {
			return fmt.Errorf("delete timer: %w", err)
		}
		f.hasWake = false
	}
	if f.phase == phaseWait || f.phase == phaseRetry {
		if err := w.addTimer(f.execID, f.id, timerWake, f.due); err != nil {
			return err
		}
		f.hasWake = true
	}
	return nil
}

// childResults reads the finished children in Branch order; ok is false if any failed.
func childResults(tx *sql.Tx, parent int64) ([]asl.BranchResult, bool, error) {
	rows, err := tx.Query(`SELECT result FROM frames WHERE parent_id = ? ORDER BY idx`, parent)
	if err != nil {
		return nil, false, fmt.Errorf("read branch results: %w", err)
	}
	defer rows.Close()
	var out []asl.BranchResult
	ok := true
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, false, fmt.Errorf("read branch results: %w", err)
		}
		var r asl.BranchResult
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, false, fmt.Errorf("read branch result: %w", err)
		}
		ok = ok && r.Error == ""
		out = append(out, r)
	}
	return out, ok, rows.Err()
}

type taskTimeout struct{ after time.Duration }

func (t taskTimeout) Error() string     { return fmt.Sprintf("task timed out after %s", t.after) }
func (t taskTimeout) ErrorName() string { return "States.Timeout" }

var errTaskTimedOut = errors.New("task timed out")

// invoke runs the frame's task under its timeout and returns what it answered (its
// error is the task's, a value for the state machine). It returns nil when the run
// was cut by Stop or Close: then nothing is recorded and the task re-runs on resume
// (if any).
func (e *Engine) invoke(f *frame) *taskOutcome {
	ectx, ok := e.execCtx(f.execID)
	if !ok {
		return nil
	}
	defer e.execCtxDone(f.execID)
	ctx, cancel := context.WithCancelCause(ectx)
	defer cancel(nil)
	t := f.task
	if t.Timeout > 0 {
		if _, isReal := e.clock.(clock.RealClock); isReal {
			var c2 context.CancelFunc
			ctx, c2 = context.WithTimeout(ctx, t.Timeout)
			defer c2()
		} else {
			// An injected clock: the deadline follows it so tests can jump time.
			tm := e.clock.NewTimer(t.Timeout)
			defer tm.Stop()
			go func() {
				select {
				case <-tm.C():
					cancel(errTaskTimedOut)
				case <-ctx.Done():
				}
			}()
		}
	}
	var res json.RawMessage
	var terr error
	if e.reg == nil {
		terr = fmt.Errorf("no task registry: resource %q cannot run", t.Resource)
	} else {
		res, terr = e.callTask(ctx, t)
	}
	if ectx.Err() != nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(context.Cause(ctx), errTaskTimedOut) {
		return &taskOutcome{err: taskTimeout{after: t.Timeout}}
	}
	if terr == nil && !json.Valid(res) {
		if len(res) == 0 {
			res = json.RawMessage(`null`)
		} else {
			terr = fmt.Errorf("task %s returned invalid JSON", t.Resource)
		}
	}
	return &taskOutcome{res: res, err: terr}
}

// callTask runs the task, turning a panic into a task failure: one broken task must
// not take every other execution down with the process.
func (e *Engine) callTask(ctx context.Context, t *pendingTask) (res json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("engine: task panicked", "resource", t.Resource, "panic", p)
			res, err = nil, asl.Errorf(asl.ErrTaskFailed, "task %s panicked: %v", t.Resource, p)
		}
	}()
	return e.reg.Invoke(ctx, t.Resource, t.Input)
}

// execCtx counts a task of the execution in flight and returns the context Stop and
// the execution's end cancel. ok is false once the execution is being ended from
// outside: then no new task may start (the end waits for the running ones only).
func (e *Engine) execCtx(id string) (context.Context, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ending := e.ending[id]; ending {
		return nil, false
	}
	r := e.running[id]
	if r == nil {
		r = &execRun{}
		r.ctx, r.cancel = context.WithCancel(e.ctx)
		e.running[id] = r
	}
	r.tasks++
	return r.ctx, true
}

// execCtxDone: a task returned. When it was the last one of an execution being ended
// from outside, the end is recorded now — after the task, never while it may still act.
func (e *Engine) execCtxDone(id string) {
	e.mu.Lock()
	r := e.running[id]
	if r == nil {
		e.mu.Unlock()
		return
	}
	r.tasks--
	if r.tasks > 0 {
		e.mu.Unlock()
		return
	}
	r.cancel()
	delete(e.running, id)
	how, ending := e.ending[id]
	e.mu.Unlock()
	if ending {
		e.recordEnd(id, how)
	}
}

// fireTimeout ends an execution whose top-level TimeoutSeconds passed.
func (e *Engine) fireTimeout(frameID int64) {
	var execID string
	var due int64
	err := e.queryRowDB(e.ctx, `SELECT exec_id, due_at FROM timers WHERE frame_id = ? AND kind = ?`, frameID, timerTimeout).Scan(&execID, &due)
	if err != nil {
		if !errors.Is(err, sql.ErrNoRows) && e.ctx.Err() == nil {
			e.log.Warn("engine: read execution timeout", "frame", frameID, "err", err)
		}
		return
	}
	if e.clock.Now().Before(fromNanos(due)) {
		return
	}
	e.endOwned(execID, ending{status: StatusTimedOut, event: "ExecutionTimedOut",
		err: "States.Timeout", cause: "the execution ran longer than its TimeoutSeconds"})
}
