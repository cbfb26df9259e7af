package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Who drives an execution (docs/operations.md): at most one engine at a time runs an
// execution's transitions and tasks — the one holding an exclusive flock on
// <Path>.drivers/<execution id>. The kernel drops the lock when its process dies
// (kill -9 included), so a dead driver never blocks anybody: the next Adopt takes over.
// Several processes share one state file, each driving its own executions; SQLite
// (WAL, busy_timeout) serialises their commits.

var (
	// ErrDriven: another live process drives the execution (see *DrivenError).
	ErrDriven = errors.New("execution is driven by another process")
)

// Driver identifies the process that drives an execution.
type Driver struct {
	PID  int    `json:"pid"`
	Host string `json:"host"`
	Self bool   `json:"self,omitempty"` // this engine
}

func (d Driver) String() string {
	if d.Self {
		return fmt.Sprintf("this process (pid %d)", d.PID)
	}
	return fmt.Sprintf("pid %d on %s", d.PID, d.Host)
}

// DrivenError says which live process drives an execution this engine was asked to drive.
type DrivenError struct {
	ID     string
	Driver Driver
}

func (e *DrivenError) Error() string {
	return fmt.Sprintf("execution %s is driven by another recycler process (%s)", e.ID, e.Driver)
}

func (e *DrivenError) Is(target error) bool { return target == ErrDriven }

// ExistsError: Start named an execution that already exists and cannot be returned
// as the same request: it ended, it has another input or definition, or another
// live process drives it. Like Step Functions, a name is never used twice.
type ExistsError struct {
	Existing Execution
	Reason   string
	Driver   *Driver // set when a live process drives the existing execution
	// SameRequest: the existing execution has this Start's input and definition (a
	// request re-issued after a crash may use it: it is the one that request started).
	SameRequest bool
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("%s: execution %s (%s %q) %s", ErrExecutionAlreadyExists, e.Existing.ID, e.Existing.StateMachine, e.Existing.Name, e.Reason)
}

func (e *ExistsError) Is(target error) bool { return target == ErrExecutionAlreadyExists }

// driverPath is the execution's driver lock file (its id escaped: an id may be an ARN).
func (e *Engine) driverPath(id string) string {
	return filepath.Join(e.path+".drivers", url.PathEscape(id))
}

var hostname = func() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown-host"
	}
	return h
}()

// lockExec makes this engine the driver of execution id, or returns *DrivenError.
// It schedules nothing: the caller decides what to run.
func (e *Engine) lockExec(id string) error {
	e.lockMu.Lock()
	defer e.lockMu.Unlock()
	e.mu.Lock()
	_, mine := e.owned[id]
	e.mu.Unlock()
	if mine {
		return nil
	}
	path := e.driverPath(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("driver lock of %s: %w", id, err)
	}
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("driver lock of %s: %w", id, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				d, _ := readDriver(path)
				return &DrivenError{ID: id, Driver: d}
			}
			return fmt.Errorf("driver lock of %s: %w", id, err)
		}
		// The previous driver removes the file when the execution ends; if we locked a
		// removed (or replaced) file, the lock means nothing: take the current one.
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 != nil || err2 != nil || !os.SameFile(held, now) {
			f.Close()
			if attempt < 3 {
				continue
			}
			return fmt.Errorf("driver lock of %s: the lock file keeps changing", id)
		}
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), hostname)), 0)
		}
		e.mu.Lock()
		e.owned[id] = f
		e.mu.Unlock()
		return nil
	}
}

// unlockExec gives up driving id; ended removes the lock file (nobody drives an ended
// execution; removing it before the unlock keeps a waiting locker from taking it).
func (e *Engine) unlockExec(id string, ended bool) {
	e.mu.Lock()
	f, ok := e.owned[id]
	delete(e.owned, id)
	e.mu.Unlock()
	if !ok {
		return
	}
	if ended {
		_ = os.Remove(e.driverPath(id))
	} else {
		_ = f.Truncate(0) // a look (DriverOf) must not take a released lock for a live driver
	}
	f.Close()
}

func (e *Engine) drives(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.owned[id]
	return ok
}

func readDriver(path string) (Driver, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Driver{}, err
	}
	f := strings.Fields(string(b))
	var d Driver
	if len(f) > 0 {
		d.PID, _ = strconv.Atoi(f[0])
	}
	if len(f) > 1 {
		d.Host = f[1]
	}
	return d, nil
}

// DriverOf says which live process drives the execution, if any. It takes no lock (a
// look never disturbs a driver), so it judges liveness by the recorded pid: for
// display, while Adopt and Stop decide by the lock itself.
func (e *Engine) DriverOf(id string) (Driver, bool) {
	if e.drives(id) {
		return Driver{PID: os.Getpid(), Host: hostname, Self: true}, true
	}
	d, err := readDriver(e.driverPath(id))
	if err != nil || d.PID <= 0 {
		return Driver{}, false
	}
	if d.Host != hostname {
		return d, true // another machine's process: we cannot tell, so assume it lives
	}
	if err := syscall.Kill(d.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return Driver{}, false
	}
	return d, true
}

// Adopt makes this engine drive a running execution that no live process drives (its
// driver died or detached): its timers are armed and its ready frames run, a task that
// was in flight re-runs. It returns *DrivenError when a live process drives it, and
// the execution unchanged when it already ended. An abort requested meanwhile is
// carried out instead of running anything.
func (e *Engine) Adopt(ctx context.Context, id string) (Execution, error) {
	if e.passive {
		return Execution{}, fmt.Errorf("adopt %s: %w", id, ErrPassive)
	}
	if e.ctx.Err() != nil {
		return Execution{}, ErrClosed
	}
	ex, err := e.Describe(ctx, id)
	if err != nil || ex.Status.Done() {
		return ex, err
	}
	if e.drives(id) {
		return ex, nil
	}
	if err := e.lockExec(id); err != nil {
		return ex, fmt.Errorf("adopt %s: %w", id, err)
	}
	req, status, err := e.abortRequest(ctx, id)
	if err != nil {
		e.unlockExec(id, false)
		return ex, fmt.Errorf("adopt %s: %w", id, err)
	}
	if status.Done() {
		e.unlockExec(id, true)
		return e.Describe(ctx, id)
	}
	if req != nil {
		e.endOwned(id, ending{status: StatusAborted, event: "ExecutionAborted", err: req.Error, cause: req.Cause})
		return e.Describe(ctx, id)
	}
	if err := e.schedule(ctx, id); err != nil {
		e.unlockExec(id, false)
		return ex, fmt.Errorf("adopt %s: %w", id, err)
	}
	e.log.Info("engine: driving execution", "execution", id, "name", ex.Name)
	return ex, nil
}

// schedule arms the execution's stored timers and queues its ready frames.
func (e *Engine) schedule(ctx context.Context, id string) error {
	rows, err := e.rdb.QueryContext(ctx, `SELECT id, frame_id, kind, due_at FROM timers WHERE exec_id = ?`, id)
	if err != nil {
		return err
	}
	var ts []timerEntry
	for rows.Next() {
		var t timerEntry
		var due int64
		if err := rows.Scan(&t.id, &t.frame, &t.kind, &due); err != nil {
			rows.Close()
			return err
		}
		t.due = fromNanos(due)
		ts = append(ts, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = e.rdb.QueryContext(ctx, `SELECT id, phase FROM frames WHERE exec_id = ? AND phase IN (?, ?, ?) ORDER BY id`,
		id, phaseEnter, phaseTask, phaseJoin)
	if err != nil {
		return err
	}
	var ws []work
	for rows.Next() {
		var fid int64
		var phase string
		if err := rows.Scan(&fid, &phase); err != nil {
			rows.Close()
			return err
		}
		ws = append(ws, work{frame: fid, resumed: phase == phaseTask})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range ts {
		e.timers.add(t)
	}
	for _, w := range ws {
		e.q.push(w)
	}
	return nil
}

// adoptAbandoned adopts every running execution no live process drives (Options.AdoptAll).
func (e *Engine) adoptAbandoned(ctx context.Context) error {
	ids, err := scanIDs(e.rdb.QueryContext(ctx, `SELECT id FROM executions WHERE status = ? ORDER BY start_time, id`, StatusRunning))
	if err != nil {
		return err
	}
	for _, id := range ids {
		if e.drives(id) {
			continue
		}
		if _, err := e.Adopt(ctx, id); err != nil && !errors.Is(err, ErrDriven) {
			return err
		}
	}
	return nil
}

// scanIDs reads a one-column result of ids and closes it.
func scanIDs(rows *sql.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// abortReq is the executions.abort_request column: an abort asked for by any process,
// carried out by the execution's driver.
type abortReq struct {
	Error string    `json:"error"`
	Cause string    `json:"cause"`
	At    time.Time `json:"at"`
	PID   int       `json:"pid"`
	Host  string    `json:"host"`
}

func (e *Engine) abortRequest(ctx context.Context, id string) (*abortReq, Status, error) {
	var raw []byte
	var status Status
	err := e.queryRowDB(ctx, `SELECT status, abort_request FROM executions WHERE id = ?`, id).Scan(&status, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", ErrNotFound
	}
	if err != nil || len(raw) == 0 {
		return nil, status, err
	}
	var r abortReq
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, status, fmt.Errorf("read abort request of %s: %w", id, err)
	}
	return &r, status, nil
}

// AbortRequested reports when and by whom an abort of a still running execution was
// asked for (nil when none is pending).
func (e *Engine) AbortRequested(ctx context.Context, id string) (*time.Time, error) {
	r, status, err := e.abortRequest(ctx, id)
	if err != nil || r == nil || status.Done() {
		return nil, err
	}
	return &r.At, nil
}

// Stop aborts a running execution. The request is recorded in the state file first,
// so it holds whoever drives the execution: this engine, another live process (which
// picks it up within a PollInterval), or nobody (then this engine takes the execution
// over, without running anything of it, and ends it). The driver cancels the tasks in
// flight and waits until they have returned, then — in one transaction — records
// ExecutionAborted and creates the OnAbort rollback, which it drives. Stop returns once
// the execution has ended; if ctx ends first, the request stays recorded and is carried
// out by whoever drives the execution.
func (e *Engine) Stop(ctx context.Context, id, errName, cause string) (Execution, error) {
	if e.passive {
		return Execution{}, fmt.Errorf("stop %s: %w", id, ErrPassive)
	}
	var post []func()
	req := abortReq{Error: errName, Cause: cause, At: e.clock.Now().UTC(), PID: os.Getpid(), Host: hostname}
	raw, _ := json.Marshal(req)
	err := e.write(ctx, func(w *writer) error {
		var status Status
		var prev []byte
		err := w.queryRow(`SELECT status, abort_request FROM executions WHERE id = ?`, id).Scan(&status, &prev)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return fmt.Errorf("read execution: %w", err)
		case status != StatusRunning:
			return fmt.Errorf("%w (status %s)", ErrNotRunning, status)
		case len(prev) > 0:
			return nil // already requested: the first request's reason stands
		}
		_, err = w.exec(`UPDATE executions SET abort_request = ? WHERE id = ?`, raw, id)
		return err
	}, &post)
	if err != nil {
		return Execution{}, fmt.Errorf("stop %s: %w", id, err)
	}
	e.runPost(post)
	ch := e.addWaiter(id)
	defer func() { e.dropWaiter(id, ch) }()
	tick := time.NewTicker(e.poll)
	defer tick.Stop()
	for {
		ex, err := e.Describe(ctx, id)
		if err != nil || ex.Status.Done() {
			return ex, err
		}
		// Drive the abort here if we drive the execution or nobody does (its driver
		// may also die while we wait: then we take over).
		if err := e.lockExec(id); err == nil {
			r, _, rerr := e.abortRequest(ctx, id)
			if rerr != nil {
				return ex, fmt.Errorf("stop %s: %w", id, rerr)
			}
			if r != nil {
				e.endOwned(id, ending{status: StatusAborted, event: "ExecutionAborted", err: r.Error, cause: r.Cause})
			}
		} else if !errors.Is(err, ErrDriven) {
			return ex, fmt.Errorf("stop %s: %w", id, err)
		}
		select {
		case <-ch:
			ch = e.addWaiter(id)
		case <-tick.C:
		case <-ctx.Done():
			return ex, fmt.Errorf("stop %s: the abort is recorded and will be carried out by the execution's driver: %w", id, ctx.Err())
		case <-e.ctx.Done():
			return ex, ErrClosed
		}
	}
}

// ending is how an execution is ended from outside its definition.
type ending struct {
	status     Status
	event      string
	err, cause string
}

// endOwned ends an execution this engine drives (an abort or its TimeoutSeconds):
// nothing of it runs any more, tasks in flight are canceled, and once the last of
// them has returned the end is recorded (with its rollback). Safe to call repeatedly.
func (e *Engine) endOwned(id string, how ending) {
	e.mu.Lock()
	if _, already := e.ending[id]; already {
		e.mu.Unlock()
		return
	}
	e.ending[id] = how
	r := e.running[id]
	if r != nil && r.tasks > 0 {
		r.cancel() // execCtxDone records the end when the last task has returned
		e.mu.Unlock()
		e.log.Info("engine: ending execution once its running task returns", "execution", id, "reason", how.event)
		return
	}
	e.mu.Unlock()
	e.recordEnd(id, how)
}

// recordEnd commits the end of an execution whose tasks have all returned.
func (e *Engine) recordEnd(id string, how ending) {
	var post []func()
	err := e.write(e.ctx, func(w *writer) error {
		w.ending = id
		return e.endExternally(w, id, how.status, how.event, how.err, how.cause)
	}, &post)
	if err != nil {
		e.mu.Lock()
		delete(e.ending, id)
		e.mu.Unlock()
		if errors.Is(err, ErrNotRunning) || errors.Is(err, ErrNotFound) || errors.Is(err, errStale) {
			e.unlockExec(id, true)
			return
		}
		if e.ctx.Err() == nil {
			e.log.Warn("engine: end of execution not recorded; retrying", "execution", id, "reason", how.event, "in", retryWriteAfter, "err", err)
			t := e.clock.NewTimer(retryWriteAfter)
			go func() {
				defer t.Stop()
				select {
				case <-t.C():
					e.endOwned(id, how)
				case <-e.ctx.Done():
				}
			}()
		}
		return
	}
	e.runPost(post)
}

// noticeAborts carries out abort requests recorded by other processes for the
// executions this engine drives.
func (e *Engine) noticeAborts(ctx context.Context) {
	rows, err := e.pdb.QueryContext(ctx, `SELECT id, abort_request FROM executions WHERE status = ? AND abort_request IS NOT NULL`, StatusRunning)
	if err != nil {
		return
	}
	type req struct {
		id string
		r  abortReq
	}
	var reqs []req
	for rows.Next() {
		var q req
		var raw []byte
		if rows.Scan(&q.id, &raw) == nil && json.Unmarshal(raw, &q.r) == nil {
			reqs = append(reqs, q)
		}
	}
	rows.Close()
	for _, q := range reqs {
		if e.drives(q.id) {
			e.endOwned(q.id, ending{status: StatusAborted, event: "ExecutionAborted", err: q.r.Error, cause: q.r.Cause})
		}
	}
}
