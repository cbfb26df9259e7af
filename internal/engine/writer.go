package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
)

// writer is one transaction: every change of one transition goes through it, and the
// side effects in memory (queue pushes, timers, notifications) run only after commit.
type writer struct {
	e      *Engine
	tx     *sql.Tx
	now    time.Time
	posts  []func()
	events []Event  // as recorded (published to OnEvent and Watch)
	stored [][]byte // their details as stored: large values as document references
	docs   map[string]bool
	execs  map[string]*execState
	defs   map[string]bool

	unprepared []string // statements to prepare once the connection is free
	flushed    int      // events[:flushed] are written
	steps      int64    // state transitions in this transaction
	ending     string   // the execution this write ends from outside (exempt from its abort request)
	undo       []func() // run if the write is rolled back (e.g. release a driver lock taken for it)
}

// onRollback registers f to run if this write does not commit.
func (w *writer) onRollback(f func()) { w.undo = append(w.undo, f) }

func (w *writer) rolledBack() {
	for _, f := range w.undo {
		f()
	}
}

// exec and queryRow run a statement in the transaction, reusing the statement
// prepared on the (single) connection: parsing SQL was a quarter of the CPU time.
func (w *writer) exec(q string, args ...any) (sql.Result, error) {
	if st, ok := w.e.stmts.Load(q); ok {
		return w.tx.Stmt(st.(*sql.Stmt)).Exec(args...)
	}
	w.unprepared = append(w.unprepared, q)
	return w.tx.Exec(q, args...)
}

func (w *writer) queryRow(q string, args ...any) *sql.Row {
	if st, ok := w.e.stmts.Load(q); ok {
		return w.tx.Stmt(st.(*sql.Stmt)).QueryRow(args...)
	}
	w.unprepared = append(w.unprepared, q)
	return w.tx.QueryRow(q, args...)
}

// prepare caches a prepared statement; it must not be called inside a transaction
// (it needs the connection).
func (e *Engine) prepare(q string) {
	if _, ok := e.stmts.Load(q); ok {
		return
	}
	st, err := e.db.Prepare(q)
	if err != nil {
		return // the unprepared path keeps working
	}
	if _, loaded := e.stmts.LoadOrStore(q, st); loaded {
		st.Close()
	}
}

type execState struct {
	lastEvent int64
	dirty     bool
}

func (w *writer) post(f func()) { w.posts = append(w.posts, f) }

// writeReq is one transition (or API change) waiting for the committer.
type writeReq struct {
	fn   func(*writer) error
	done chan writeRes
}

type writeRes struct {
	err  error
	post []func()
}

// checkpointEvery: commits between two WAL checkpoints (SQLite's own default is
// about every 1,000 pages); the WAL's size is looked at every walCheckEvery commits.
const (
	checkpointEvery = 256
	walCheckEvery   = 32
)

// checkpointer runs PASSIVE checkpoints, which never block the writer, so the WAL
// stays small without a commit ever paying for the copy and its fsyncs. A WAL that
// grew past walLimit anyway (a writer that never pauses: the checkpoint cannot catch up
// and the file is never started over) gets a TRUNCATE checkpoint, which waits for the
// writers of every process between two commits and empties the file.
func (e *Engine) checkpointer(db *sql.DB) {
	defer e.wg.Done()
	defer db.Close()
	last := int64(0)
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.checkpoint:
		}
		mode := ""
		if fi, err := os.Stat(e.path + "-wal"); err == nil && fi.Size() > walLimit {
			mode = "TRUNCATE"
		} else if n := e.commits.Load(); n-last >= checkpointEvery {
			mode, last = "PASSIVE", n
		}
		if mode == "" {
			continue
		}
		if _, err := db.ExecContext(e.ctx, `PRAGMA wal_checkpoint(`+mode+`)`); err != nil && e.ctx.Err() == nil {
			e.log.Warn("engine: WAL checkpoint", "mode", mode, "err", err)
		}
	}
}

// maxGroup bounds how many writes share one commit.
const maxGroup = 128

// write runs fn inside a transaction and returns, via post, what must happen after the
// commit (in order: scheduling, then event notifications). fn's changes are atomic and
// committed before write returns. Writes of concurrent workers are group-committed:
// each runs in its own SAVEPOINT (a failing one is rolled back alone) and one COMMIT
// covers them all, so a burst of wake-ups pays one WAL write per page, not per transition.
func (e *Engine) write(ctx context.Context, fn func(*writer) error, post *[]func()) error {
	req := &writeReq{fn: fn, done: make(chan writeRes, 1)}
	select {
	case e.writes <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-e.ctx.Done():
		return ErrClosed
	}
	res := <-req.done
	if res.err != nil {
		return res.err
	}
	*post = res.post
	return nil
}

// committer owns the write side of the connection.
func (e *Engine) committer() {
	defer e.wg.Done()
	for {
		var first *writeReq
		select {
		case first = <-e.writes:
		case <-e.ctx.Done():
			return
		}
		batch := []*writeReq{first}
	drain:
		for len(batch) < maxGroup {
			select {
			case r := <-e.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		e.commitGroup(batch)
	}
}

func (e *Engine) commitGroup(batch []*writeReq) {
	writers := make([]*writer, len(batch))
	fail := func(err error) {
		for i, r := range batch {
			if writers[i] != nil {
				writers[i].rolledBack()
			}
			r.done <- writeRes{err: err}
		}
	}
	// Not e.ctx: an accepted write is finished even while Close is in progress.
	tx, err := e.db.BeginTx(context.Background(), nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	errs := make([]error, len(batch))
	var unprepared []string
	if len(batch) == 1 {
		// Alone: no savepoint needed, a failure rolls back the transaction.
		r := batch[0]
		w := &writer{e: e, tx: tx, now: e.clock.Now().UTC(), execs: map[string]*execState{}, defs: map[string]bool{}}
		err := r.fn(w)
		if err == nil {
			err = w.flush()
		}
		if err != nil {
			abandon(tx)
			w.rolledBack()
			r.done <- writeRes{err: err}
			return
		}
		if err := tx.Commit(); err != nil {
			w.rolledBack()
			r.done <- writeRes{err: fmt.Errorf("commit: %w", err)}
			return
		}
		e.afterCommit(w.unprepared)
		e.transitions.Add(w.steps)
		evs := w.events
		r.done <- writeRes{post: append(w.posts, func() { e.publish(evs) })}
		return
	}
	for i, r := range batch {
		w := &writer{e: e, tx: tx, now: e.clock.Now().UTC(), execs: map[string]*execState{}, defs: map[string]bool{}}
		if _, err := tx.Exec(`SAVEPOINT w`); err != nil {
			abandon(tx)
			fail(fmt.Errorf("savepoint: %w", err))
			return
		}
		writers[i] = w
		err := r.fn(w)
		if err == nil {
			err = w.flush()
		}
		unprepared = append(unprepared, w.unprepared...)
		if err != nil {
			errs[i] = err
			w.rolledBack()
			w.undo = nil
			if _, rerr := tx.Exec(`ROLLBACK TO w`); rerr != nil {
				abandon(tx)
				fail(fmt.Errorf("rollback to savepoint: %w (after %w)", rerr, err))
				return
			}
		}
		if _, err := tx.Exec(`RELEASE w`); err != nil {
			abandon(tx)
			fail(fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	e.afterCommit(unprepared)
	for i, r := range batch {
		if errs[i] != nil {
			r.done <- writeRes{err: errs[i]}
			continue
		}
		w := writers[i]
		e.transitions.Add(w.steps)
		evs := w.events
		r.done <- writeRes{post: append(w.posts, func() { e.publish(evs) })}
	}
}

// afterCommit counts the commit, asks for a checkpoint now and then, and prepares
// statements first seen in it (the connection is free now).
func (e *Engine) afterCommit(unprepared []string) {
	if n := e.commits.Add(1); n%walCheckEvery == 0 {
		select {
		case e.checkpoint <- struct{}{}:
		default:
		}
	}
	for _, q := range unprepared {
		e.prepare(q)
	}
}

// flush writes the buffered events (up to eventsPerInsert rows per statement) and the
// executions' event counters, inside the write's savepoint so the next write in the
// same group reads them.
func (w *writer) flush() error {
	for w.flushed < len(w.events) {
		n := min(len(w.events)-w.flushed, eventsPerInsert)
		q := `INSERT INTO events(exec_id, id, type, ts, previous_id, details) VALUES(?,?,?,?,?,?)` +
			strings.Repeat(`,(?,?,?,?,?,?)`, n-1)
		args := make([]any, 0, 6*n)
		for i, ev := range w.events[w.flushed : w.flushed+n] {
			args = append(args, ev.ExecutionID, ev.ID, ev.Type, nanos(ev.Timestamp), ev.PreviousEventID, w.stored[w.flushed+i])
		}
		if _, err := w.exec(q, args...); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		w.flushed += n
	}
	for id, st := range w.execs {
		if !st.dirty {
			continue
		}
		if _, err := w.exec(`UPDATE executions SET last_event_id = ? WHERE id = ?`, st.lastEvent, id); err != nil {
			return fmt.Errorf("update event counter: %w", err)
		}
		st.dirty = false
	}
	return nil
}

// eventsPerInsert bounds a multi-row INSERT (6 variables per row).
const eventsPerInsert = 32

func (e *Engine) runPost(post []func()) {
	for _, f := range post {
		f()
	}
}

func (e *Engine) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	if e.onEvent != nil {
		for _, ev := range evs {
			e.onEvent(ev)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	last := ""
	for _, ev := range evs {
		if ev.ExecutionID == last {
			continue
		}
		last = ev.ExecutionID
		for ch := range e.watchers[ev.ExecutionID] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// execEnded cancels the execution's Tasks in flight, wakes its waiters and releases
// its driver lock.
func (e *Engine) execEnded(id string) {
	e.unlockExec(id, true)
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.ending, id)
	if r := e.running[id]; r != nil {
		r.cancel()
		delete(e.running, id)
	}
	for _, ch := range e.waiters[id] {
		close(ch)
	}
	delete(e.waiters, id)
	for ch := range e.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// abortRequestedError: a transition of an execution whose abort was requested; it is
// dropped and the driver ends the execution instead.
type abortRequestedError struct {
	id  string
	req abortReq
}

func (e *abortRequestedError) Error() string        { return "execution " + e.id + ": abort requested" }
func (e *abortRequestedError) Is(target error) bool { return target == errStale }

// latestEvent as emit's prev: the event follows the execution's latest event (for
// events that end it from outside, like ExecutionAborted).
const latestEvent = -1

// emit appends an event to the execution's history. It fails with errStale when the
// execution is no longer running, which makes the whole transition a no-op.
func (w *writer) emit(execID, typ string, prev int64, details any) (int64, error) {
	st, ok := w.execs[execID]
	if !ok {
		var status string
		var abort []byte
		st = &execState{}
		if err := w.queryRow(`SELECT status, last_event_id, abort_request FROM executions WHERE id = ?`, execID).Scan(&status, &st.lastEvent, &abort); err != nil {
			return 0, fmt.Errorf("read execution %s: %w", execID, err)
		}
		if Status(status) != StatusRunning {
			return 0, errStale
		}
		if len(abort) > 0 && w.ending != execID {
			// An abort was asked for: no transition of this execution commits any more.
			e := &abortRequestedError{id: execID}
			_ = json.Unmarshal(abort, &e.req)
			return 0, e
		}
		w.execs[execID] = st
	}
	if prev == latestEvent {
		prev = st.lastEvent
	}
	st.lastEvent++
	st.dirty = true
	return st.lastEvent, w.insertEvent(execID, st.lastEvent, typ, w.now, prev, details)
}

func (w *writer) insertEvent(execID string, id int64, typ string, ts time.Time, prev int64, details any) error {
	d, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("event %s details: %w", typ, err)
	}
	var perr error
	stored := dehydrate(d, func(h string, doc []byte) {
		if perr == nil {
			perr = w.putDocument(execID, h, doc)
		}
	})
	if perr != nil {
		return perr
	}
	// Written by flush, several rows per statement.
	w.events = append(w.events, Event{ExecutionID: execID, ID: id, Type: typ, Timestamp: ts, PreviousEventID: prev, Details: d})
	w.stored = append(w.stored, stored)
	return nil
}

// putDocument stores a history document once and records that execID's history uses
// it (prune removes documents no history uses any more).
func (w *writer) putDocument(execID, h string, doc []byte) error {
	key := execID + "/" + h
	if w.docs[key] {
		return nil
	}
	if _, err := w.exec(`INSERT OR IGNORE INTO documents(hash, json) VALUES(?, ?)`, h, doc); err != nil {
		return fmt.Errorf("store history document: %w", err)
	}
	if _, err := w.exec(`INSERT OR IGNORE INTO event_documents(exec_id, hash) VALUES(?, ?)`, execID, h); err != nil {
		return fmt.Errorf("store history document: %w", err)
	}
	if w.docs == nil {
		w.docs = map[string]bool{}
	}
	w.docs[key] = true
	return nil
}

func (w *writer) putDefinition(hash string, def []byte, _ *machineInfo) error {
	if w.defs[hash] {
		return nil
	}
	if _, err := w.exec(`INSERT OR IGNORE INTO definitions(hash, json) VALUES(?, ?)`, hash, def); err != nil {
		return fmt.Errorf("store definition: %w", err)
	}
	w.defs[hash] = true
	return nil
}

func (w *writer) addTimer(execID string, frame int64, kind string, due time.Time) error {
	res, err := w.exec(`INSERT INTO timers(exec_id, frame_id, kind, due_at) VALUES(?,?,?,?)
		ON CONFLICT(frame_id, kind) DO UPDATE SET due_at = excluded.due_at`, execID, frame, kind, nanos(due))
	if err != nil {
		return fmt.Errorf("store timer: %w", err)
	}
	id, _ := res.LastInsertId()
	w.post(func() { w.e.timers.add(timerEntry{id: id, frame: frame, kind: kind, due: due}) })
	return nil
}

type prevExec struct {
	Execution
	defHash string
}

func (w *writer) byName(machine, name string) (prevExec, bool, error) {
	r, err := scanExec(w.queryRow(`SELECT `+execColumns+` FROM executions WHERE state_machine = ? AND name = ?`, machine, name))
	if errors.Is(err, sql.ErrNoRows) {
		return prevExec{}, false, nil
	}
	if err != nil {
		return prevExec{}, false, fmt.Errorf("look up execution %s/%s: %w", machine, name, err)
	}
	return prevExec(r), true, nil
}

// finishExec records the final status and removes the execution's frames and timers.
func (w *writer) finishExec(id string, status Status, output json.RawMessage, errName, cause string) error {
	if _, err := w.exec(`UPDATE executions SET status = ?, output = ?, error = ?, cause = ?, stop_time = ? WHERE id = ?`,
		status, []byte(output), errName, cause, nanos(w.now), id); err != nil {
		return fmt.Errorf("finish execution %s: %w", id, err)
	}
	if _, err := w.exec(`DELETE FROM frames WHERE exec_id = ?`, id); err != nil {
		return fmt.Errorf("finish execution %s: %w", id, err)
	}
	if _, err := w.exec(`DELETE FROM timers WHERE exec_id = ?`, id); err != nil {
		return fmt.Errorf("finish execution %s: %w", id, err)
	}
	w.post(func() { w.e.execEnded(id) })
	return nil
}

// endExternally ends a running execution from outside its definition (Stop, or the
// top-level TimeoutSeconds) and starts its OnAbort rollback in the same transaction.
func (e *Engine) endExternally(w *writer, id string, status Status, evType, errName, cause string) error {
	var onAbort []byte
	if err := w.queryRow(`SELECT on_abort FROM executions WHERE id = ?`, id).Scan(&onAbort); errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("read execution: %w", err)
	}
	ex, err := scanExec(w.queryRow(`SELECT `+execColumns+` FROM executions WHERE id = ?`, id))
	if err != nil {
		return fmt.Errorf("read execution: %w", err)
	}
	if ex.Status != StatusRunning {
		return fmt.Errorf("%w (status %s)", ErrNotRunning, ex.Status)
	}
	if _, err := w.emit(id, evType, latestEvent, map[string]any{"error": errName, "cause": cause}); err != nil {
		return err
	}
	var state string
	var stateInput json.RawMessage
	var curJSON []byte
	if err := w.queryRow(`SELECT cursor FROM frames WHERE exec_id = ? AND parent_id = 0`, id).Scan(&curJSON); err == nil {
		var c struct {
			State string          `json:"state"`
			Input json.RawMessage `json:"input"`
		}
		if json.Unmarshal(curJSON, &c) == nil {
			state, stateInput = c.State, c.Input
		}
	}
	if err := w.finishExec(id, status, nil, errName, cause); err != nil {
		return err
	}
	if len(onAbort) == 0 {
		return nil
	}
	var spec abortSpec
	if err := json.Unmarshal(onAbort, &spec); err != nil {
		return fmt.Errorf("read OnAbort of %s: %w", id, err)
	}
	mi, err := e.machineByHash(context.Background(), w.tx, spec.DefHash)
	if err != nil {
		return fmt.Errorf("OnAbort of %s: %w", id, err)
	}
	in, _ := json.Marshal(map[string]any{
		"Execution":  map[string]any{"Id": ex.ID, "Name": ex.Name, "StateMachine": ex.StateMachine, "Input": ex.Input},
		"Error":      errName,
		"Cause":      cause,
		"State":      state,
		"StateInput": stateInput,
	})
	name := ex.Name
	if _, found, err := w.byName(spec.StateMachine, name); err != nil {
		return err
	} else if found {
		name = ex.ID
	}
	// The engine that ends the execution drives its rollback: locked before it exists.
	rbID := uuid.NewString()
	if err := e.lockExec(rbID); err != nil {
		return fmt.Errorf("start rollback of %s: %w", id, err)
	}
	w.onRollback(func() { e.unlockExec(rbID, true) })
	rb, err := e.createExecution(w, rbID, mi, spec.StateMachine, name, in, nil, ex.ID, map[string]any{"rollbackOf": ex.ID})
	if err != nil {
		return fmt.Errorf("start rollback of %s: %w", id, err)
	}
	if _, err := w.exec(`UPDATE executions SET rollback_id = ? WHERE id = ?`, rb.ID, id); err != nil {
		return fmt.Errorf("link rollback of %s: %w", id, err)
	}
	return nil
}
