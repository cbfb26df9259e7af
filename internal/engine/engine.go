// Package engine runs Amazon States Language executions durably: every transition
// computed by internal/asl is written to SQLite in one transaction before the next
// action starts, waits are stored deadlines woken by a scheduler, and on Open every
// unfinished execution continues from its last recorded transition. See docs/engine.md.
package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/google/uuid"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
)

// Status is an execution's status, spelled as Step Functions does.
type Status string

const (
	StatusRunning   Status = "RUNNING"
	StatusSucceeded Status = "SUCCEEDED"
	StatusFailed    Status = "FAILED"
	StatusAborted   Status = "ABORTED"
	StatusTimedOut  Status = "TIMED_OUT"
)

// Done reports whether the status is final.
func (s Status) Done() bool { return s != StatusRunning && s != "" }

var (
	// ErrNotFound: no execution with that id.
	ErrNotFound = errors.New("execution not found")
	// ErrExecutionAlreadyExists: Start was called with a name already used for this
	// state machine but with a different input or definition.
	ErrExecutionAlreadyExists = errors.New("ExecutionAlreadyExists")
	// ErrNotRunning: Stop was called on an execution that already ended.
	ErrNotRunning = errors.New("execution is not running")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine closed")
	// ErrPassive: Start or Stop on an engine opened with Options.Passive.
	ErrPassive = errors.New("engine opened passive (read-only): send this to the process that runs executions")
)

// Options configure Open.
type Options struct {
	Path     string           // SQLite file; created if missing
	Clock    clock.WithTicker // nil = real clock
	Registry asl.Registry     // Task resources; tasks must be idempotent (re-run after a crash)
	// Workers bounds how many frames (transitions and running Tasks) proceed at once.
	// 0 = max(8, 4×GOMAXPROCS): Tasks are I/O-bound calls, the database is the real limit.
	Workers int
	Logger  *slog.Logger // nil = slog.Default()
	// SyncFull makes every commit fsync (synchronous=FULL): survives power loss, not only
	// process crashes. The default (NORMAL, WAL) already survives kill -9. See docs/engine.md.
	SyncFull bool
	// OnEvent, if set, is called after each history event is committed, from the worker
	// that wrote it: it must return quickly. For per-execution streams use Watch.
	OnEvent func(Event)
	// AdoptAll: besides the executions it starts, drive every unfinished execution that
	// no live process drives — on Open, and whenever a driver dies (checked every
	// second). For `recycler serve` and the crash tests; `recycler recycle` drives only
	// its own executions, `recycler resume` adopts them one by one (Adopt).
	AdoptAll bool
	// Passive opens the store read-only for Describe/List/History/Watch/Wait: no
	// scheduler, no tasks, no driving, no schema migration; Start/Stop/Adopt return
	// ErrPassive.
	Passive bool
	// PollInterval: how often the engine looks for other processes' commits (SQLite's
	// data_version), which wakes Wait and Watch on executions driven elsewhere and
	// delivers abort requests to the driver. 0 = 100 ms. Real time, whatever Clock is:
	// other processes commit in real time.
	PollInterval time.Duration
}

// StartInput describes a new execution.
type StartInput struct {
	StateMachine string       // state machine name (required); Name is unique per StateMachine
	Definition   []byte       // ASL JSON; or
	Machine      *asl.Machine // an already parsed machine
	// Name is the idempotency key: a second Start with the same StateMachine and Name
	// returns the first execution (ErrExecutionAlreadyExists if input or definition
	// differ). Empty = a random name.
	Name  string
	Input json.RawMessage // empty = {}
	// ID is the new execution's id ($$.Execution.Id); empty = a random UUID. The
	// simulated Step Functions passes the execution ARN, as AWS's id reads.
	ID string
	// OnAbort, if set, is started as a new execution when this one is stopped or times
	// out (see docs/engine.md, "Abort and rollback").
	OnAbort *Rollback
}

// Rollback is the state machine run when an execution is aborted. Its input is
// {"Execution":{"Id","Name","StateMachine","Input"},"Error","Cause","State","StateInput"}
// where State/StateInput are the top-level state the execution was in.
type Rollback struct {
	StateMachine string // name; empty = "<StateMachine>-rollback"
	Definition   []byte
}

// Execution is the durable record of one run.
type Execution struct {
	ID           string          `json:"id"`
	StateMachine string          `json:"stateMachine"`
	Name         string          `json:"name"`
	Status       Status          `json:"status"`
	Input        json.RawMessage `json:"input"`
	Output       json.RawMessage `json:"output,omitempty"`
	Error        string          `json:"error,omitempty"`
	Cause        string          `json:"cause,omitempty"`
	StartTime    time.Time       `json:"startTime"`
	StopTime     time.Time       `json:"stopTime,omitzero"`
	RollbackOf   string          `json:"rollbackOf,omitempty"` // set on a rollback execution
	RollbackID   string          `json:"rollbackId,omitempty"` // set on an aborted execution that started one
}

// Event is one history event, shaped like Step Functions' HistoryEvent.
type Event struct {
	ExecutionID     string          `json:"executionId"`
	ID              int64           `json:"id"`
	Type            string          `json:"type"`
	Timestamp       time.Time       `json:"timestamp"`
	PreviousEventID int64           `json:"previousEventId"`
	Details         json.RawMessage `json:"details"`
}

// ListFilter selects executions for List; zero fields match everything.
type ListFilter struct {
	StateMachine string
	Status       Status
	Name         string // exact name
	NamePrefix   string // names that start with it
	Limit        int    // 0 = no limit
}

// Engine runs executions. It is safe for concurrent use.
type Engine struct {
	path    string
	db      *sql.DB // one connection: the committer's writes
	rdb     *sql.DB // read-only pool
	pdb     *sql.DB // one read-only connection: data_version polling (per connection)
	poll    time.Duration
	clock   clock.WithTicker
	reg     asl.Registry
	log     *slog.Logger
	onEvent func(Event)

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	q           *queue
	timers      *timerSet
	writes      chan *writeReq // to the committer
	checkpoint  chan struct{}  // to the checkpointer
	commits     atomic.Int64   // committed transactions, for benchmarks
	transitions atomic.Int64   // committed state transitions, for benchmarks
	docs        docCache       // history documents read (immutable)
	stmts       sync.Map       // query → *sql.Stmt prepared on the single connection
	rstmts      sync.Map       // query → *sql.Stmt prepared on the read pool

	machMu   sync.Mutex
	machines map[string]*machineInfo // by definition hash
	hashes   map[*asl.Machine]string // branch machines already hashed

	passive  bool
	adoptAll bool

	lockMu sync.Mutex // serialises lockExec

	mu       sync.Mutex
	owned    map[string]*os.File        // executions this engine drives: their flocked driver files
	ending   map[string]ending          // executions being ended from outside (abort, timeout)
	running  map[string]*execRun        // in-flight task cancellation per execution
	waiters  map[string][]chan struct{} // closed when the execution ends
	watchers map[string]map[chan struct{}]struct{}
}

type execRun struct {
	ctx    context.Context
	cancel context.CancelFunc
	tasks  int
}

// machineInfo is a parsed definition plus the state types the history needs.
type machineInfo struct {
	hash  string
	def   []byte // what is stored and hashed: the definition, re-parseable by asl.Parse
	m     *asl.Machine
	types map[string]string
}

// Open opens the store and starts the scheduler. It drives no execution yet: only the
// ones it Starts or Adopts (every abandoned one with Options.AdoptAll).
func Open(ctx context.Context, o Options) (*Engine, error) {
	if o.Path == "" {
		return nil, errors.New("engine: Options.Path is empty: name the SQLite file to use")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Workers <= 0 {
		o.Workers = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.Passive {
		if _, err := os.Stat(o.Path); err != nil {
			return nil, fmt.Errorf("engine: open passive: no engine database at %s: %w", o.Path, err)
		}
	}
	db, err := openDB(ctx, o.Path, o.SyncFull, o.Passive)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	rdb, err := openReadDB(o.Path, 4)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	pdb, err := openReadDB(o.Path, 1)
	if err != nil {
		db.Close()
		rdb.Close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	e := &Engine{
		path: o.Path, db: db, rdb: rdb, pdb: pdb, poll: o.PollInterval,
		clock: o.Clock, reg: o.Registry, log: o.Logger, onEvent: o.OnEvent,
		q:          newQueue(),
		timers:     newTimerSet(),
		machines:   map[string]*machineInfo{},
		hashes:     map[*asl.Machine]string{},
		owned:      map[string]*os.File{},
		ending:     map[string]ending{},
		running:    map[string]*execRun{},
		waiters:    map[string][]chan struct{}{},
		watchers:   map[string]map[chan struct{}]struct{}{},
		passive:    o.Passive,
		adoptAll:   o.AdoptAll && !o.Passive,
		writes:     make(chan *writeReq), // unbuffered: accepted means the committer answers
		checkpoint: make(chan struct{}, 1),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(2)
	go e.committer()
	go e.pollChanges()
	if o.Passive {
		return e, nil
	}
	cdb, err := openCheckpointDB(o.Path)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.wg.Add(1)
	go e.checkpointer(cdb)
	for range o.Workers {
		e.wg.Add(1)
		go e.worker()
	}
	e.wg.Add(1)
	go e.timerLoop()
	if e.adoptAll {
		if err := e.adoptAbandoned(ctx); err != nil {
			e.Close()
			return nil, fmt.Errorf("engine: resume: %w", err)
		}
	}
	return e, nil
}

// Close stops the scheduler and waits for workers. Tasks in flight are canceled and
// their results dropped; the executions it drove are released (driver locks dropped)
// and continue in whichever process adopts them.
func (e *Engine) Close() error {
	e.cancel()
	e.q.close()
	e.wg.Wait()
	err := errors.Join(e.db.Close(), e.rdb.Close(), e.pdb.Close())
	e.mu.Lock()
	ids := make([]string, 0, len(e.owned))
	for id := range e.owned {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	for _, id := range ids {
		e.unlockExec(id, false)
	}
	return err
}

// pollChanges notices commits of other processes (SQLite's data_version changes):
// it wakes Wait and Watch, carries out abort requests for executions driven here, and
// (AdoptAll) adopts executions whose driver died.
func (e *Engine) pollChanges() {
	defer e.wg.Done()
	t := time.NewTicker(e.poll)
	defer t.Stop()
	last := int64(-1)
	lastScan := time.Now()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		if e.adoptAll && time.Since(lastScan) >= time.Second {
			// A driver that dies changes nothing in the file: look, now and then.
			lastScan = time.Now()
			if err := e.adoptAbandoned(e.ctx); err != nil && e.ctx.Err() == nil {
				e.log.Warn("engine: adopting executions", "err", err)
			}
		}
		var v int64
		if err := e.pdb.QueryRowContext(e.ctx, `PRAGMA data_version`).Scan(&v); err != nil {
			continue
		}
		if v == last {
			continue
		}
		last = v
		if !e.passive {
			e.noticeAborts(e.ctx)
		}
		e.mu.Lock()
		for id, ws := range e.waiters {
			for _, ch := range ws {
				close(ch)
			}
			delete(e.waiters, id)
		}
		for _, set := range e.watchers {
			for ch := range set {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
		e.mu.Unlock()
	}
}

// Start creates an execution (or returns the existing one with the same name).
func (e *Engine) Start(ctx context.Context, in StartInput) (Execution, error) {
	if e.ctx.Err() != nil {
		return Execution{}, ErrClosed
	}
	if e.passive {
		return Execution{}, fmt.Errorf("start %s: %w", in.StateMachine, ErrPassive)
	}
	if in.StateMachine == "" {
		return Execution{}, errors.New("start: StateMachine is empty: name the state machine")
	}
	if err := checkName(in.Name); err != nil {
		return Execution{}, fmt.Errorf("start %s: %w", in.StateMachine, err)
	}
	mi, err := e.machineFromInput(in.Definition, in.Machine)
	if err != nil {
		return Execution{}, fmt.Errorf("start %s: %w", in.StateMachine, err)
	}
	input := in.Input
	if len(input) == 0 {
		input = json.RawMessage(`{}`)
	}
	if !json.Valid(input) {
		return Execution{}, fmt.Errorf("start %s: input is not valid JSON", in.StateMachine)
	}
	var onAbort []byte
	var rbInfo *machineInfo
	if in.OnAbort != nil {
		rb, err := e.machineFromInput(in.OnAbort.Definition, nil)
		if err != nil {
			return Execution{}, fmt.Errorf("start %s: OnAbort: %w", in.StateMachine, err)
		}
		name := in.OnAbort.StateMachine
		if name == "" {
			name = in.StateMachine + "-rollback"
		}
		rbInfo = rb
		onAbort, _ = json.Marshal(abortSpec{StateMachine: name, DefHash: rb.hash})
	}
	name := in.Name
	if name == "" {
		name = uuid.NewString()
	}
	// The new execution is ours from its first commit: lock it before it exists.
	id := in.ID
	if id == "" {
		id = uuid.NewString()
	}
	if err := e.lockExec(id); err != nil {
		return Execution{}, fmt.Errorf("start %s: %w", in.StateMachine, err)
	}
	var ex Execution
	var prev *prevExec
	var post []func()
	err = e.write(ctx, func(w *writer) error {
		p, found, err := w.byName(in.StateMachine, name)
		if err != nil {
			return err
		}
		if found {
			prev = &p
			return nil
		}
		if rbInfo != nil {
			if err := w.putDefinition(rbInfo.hash, rbInfo.def, rbInfo); err != nil {
				return err
			}
		}
		ex, err = e.createExecution(w, id, mi, in.StateMachine, name, input, onAbort, "", nil)
		return err
	}, &post)
	if err != nil || prev != nil {
		e.unlockExec(id, true)
	}
	if err != nil {
		return Execution{}, err
	}
	if prev != nil {
		return e.startExisting(ctx, prev, mi.hash, input)
	}
	e.runPost(post)
	return ex, nil
}

// startExisting answers a Start whose name is taken, as Step Functions does: the same
// request (same input and definition) while the execution runs returns it — and this
// engine drives it, unless a live process does — anything else is ExistsError.
func (e *Engine) startExisting(ctx context.Context, prev *prevExec, defHash string, input json.RawMessage) (Execution, error) {
	ex := prev.Execution
	switch {
	case prev.defHash != defHash || !sameJSON(ex.Input, input):
		return Execution{}, &ExistsError{Existing: ex, Reason: "exists with a different input or definition: use another name"}
	case ex.Status.Done():
		return Execution{}, &ExistsError{Existing: ex, SameRequest: true, Reason: fmt.Sprintf("already ended (%s): a name is used once; use another name", ex.Status)}
	}
	got, err := e.Adopt(ctx, ex.ID)
	var driven *DrivenError
	if errors.As(err, &driven) {
		d := driven.Driver
		return Execution{}, &ExistsError{Existing: ex, Driver: &d, SameRequest: true, Reason: fmt.Sprintf("is running, driven by another recycler process (%s)", d)}
	}
	if err != nil {
		return Execution{}, fmt.Errorf("start %s %q: %w", ex.StateMachine, ex.Name, err)
	}
	if got.Status.Done() {
		return Execution{}, &ExistsError{Existing: got, SameRequest: true, Reason: fmt.Sprintf("already ended (%s): a name is used once; use another name", got.Status)}
	}
	return got, nil
}

// abortSpec is the executions.on_abort column.
type abortSpec struct {
	StateMachine string `json:"stateMachine"`
	DefHash      string `json:"defHash"`
}

// createExecution inserts the execution, its top frame and ExecutionStarted, inside w.
// The caller holds the driver lock of id.
func (e *Engine) createExecution(w *writer, id string, mi *machineInfo, machine, name string, input json.RawMessage,
	onAbort []byte, rollbackOf string, extra map[string]any) (Execution, error) {
	now := e.clock.Now().UTC()
	ex := Execution{ID: id, StateMachine: machine, Name: name, Status: StatusRunning,
		Input: input, StartTime: now, RollbackOf: rollbackOf}
	if err := w.putDefinition(mi.hash, mi.def, mi); err != nil {
		return ex, err
	}
	if _, err := w.exec(`INSERT INTO executions(id, state_machine, name, def_hash, input, status, start_time, on_abort, rollback_of, last_event_id)
		VALUES(?,?,?,?,?,?,?,?,?,1)`, ex.ID, machine, name, mi.hash, []byte(input), StatusRunning, nanos(now), onAbort, rollbackOf); err != nil {
		return ex, fmt.Errorf("insert execution: %w", err)
	}
	details := map[string]any{"input": input, "stateMachine": machine, "name": name}
	for k, v := range extra {
		details[k] = v
	}
	if err := w.insertEvent(ex.ID, 1, "ExecutionStarted", now, 0, details); err != nil {
		return ex, err
	}
	cur, _ := json.Marshal(asl.Cursor{State: mi.m.StartAt(), Input: input})
	res, err := w.exec(`INSERT INTO frames(exec_id, def_hash, phase, cursor, last_event_id) VALUES(?,?,?,?,1)`,
		ex.ID, mi.hash, phaseEnter, cur)
	if err != nil {
		return ex, fmt.Errorf("insert frame: %w", err)
	}
	fid, _ := res.LastInsertId()
	w.post(func() { e.q.push(work{frame: fid}) })
	if s := mi.m.TimeoutSeconds(); s > 0 {
		due := now.Add(time.Duration(s) * time.Second)
		if err := w.addTimer(ex.ID, fid, timerTimeout, due); err != nil {
			return ex, err
		}
	}
	return ex, nil
}

func checkName(n string) error {
	if len(n) > 80 {
		return fmt.Errorf("name %q is longer than 80 characters", n)
	}
	for _, r := range n {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`<>{}[]?*"#%\^|~`+"`$&,;:/", r) {
			return fmt.Errorf("name %q contains %q: use letters, digits, '-' and '_'", n, r)
		}
	}
	return nil
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(x, y)
}

// machineFromInput parses a definition (or takes a parsed machine) and caches it by hash.
func (e *Engine) machineFromInput(def []byte, m *asl.Machine) (*machineInfo, error) {
	switch {
	case m != nil && len(def) > 0:
		return nil, errors.New("give either Definition or Machine, not both")
	case m != nil:
		return e.machineInfo(m), nil
	case len(def) == 0:
		return nil, errors.New("no definition: set Definition (ASL JSON) or Machine")
	}
	m, err := asl.Parse(def)
	if err != nil {
		return nil, fmt.Errorf("definition: %w", err)
	}
	return e.machineInfo(m), nil
}

// machineInfo returns the cached info for a parsed machine, hashing its definition once.
func (e *Engine) machineInfo(m *asl.Machine) *machineInfo {
	e.machMu.Lock()
	defer e.machMu.Unlock()
	if h, ok := e.hashes[m]; ok {
		return e.machines[h]
	}
	def := storableDefinition(m.Definition())
	sum := sha256.Sum256(def)
	h := hex.EncodeToString(sum[:])
	if mi, ok := e.machines[h]; ok {
		// A new parse of a known definition: use the cached machine (whose branch
		// machines are the ones already hashed) and forget this one.
		return mi
	}
	mi := &machineInfo{hash: h, def: def, m: m, types: stateTypes(def)}
	e.machines[h] = mi
	e.hashes[m] = h
	return mi
}

// machineByHash returns a cached machine or parses the stored definition.
func (e *Engine) machineByHash(ctx context.Context, q querier, h string) (*machineInfo, error) {
	e.machMu.Lock()
	mi, ok := e.machines[h]
	e.machMu.Unlock()
	if ok {
		return mi, nil
	}
	var def []byte
	if err := q.QueryRowContext(ctx, `SELECT json FROM definitions WHERE hash = ?`, h).Scan(&def); err != nil {
		return nil, fmt.Errorf("load definition %s: %w", h, err)
	}
	m, err := asl.Parse(def)
	if err != nil {
		return nil, fmt.Errorf("parse stored definition %s: %w: %w", h, errBadDefinition, err)
	}
	e.machMu.Lock()
	defer e.machMu.Unlock()
	if cached, ok := e.machines[h]; ok {
		return cached, nil
	}
	mi = &machineInfo{hash: h, def: def, m: m, types: stateTypes(def)}
	e.machines[h] = mi
	e.hashes[m] = h
	return mi, nil
}

// errBadDefinition: a stored definition no longer parses (e.g. a newer binary's
// validation is stricter); its executions fail with States.Runtime instead of hanging.
var errBadDefinition = errors.New("stored definition does not parse")

// storableDefinition is the form stored and hashed: compact JSON (so whitespace does not
// make a "different" definition for idempotent Start), without a Map ItemProcessor's
// ProcessorConfig, which asl.Parse accepts only inside a Map, so a child frame's
// machine parses on its own.
func storableDefinition(def []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, def) == nil {
		def = buf.Bytes()
	}
	if !bytes.Contains(def, []byte(`"ProcessorConfig"`)) {
		return def
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(def, &obj) != nil {
		return def
	}
	if _, ok := obj["ProcessorConfig"]; !ok {
		return def
	}
	delete(obj, "ProcessorConfig")
	out, err := json.Marshal(obj)
	if err != nil {
		return def
	}
	return out
}

// querier is *sql.DB or *sql.Tx: inside a transaction the single connection is taken,
// so reads there must go through the transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func stateTypes(def []byte) map[string]string {
	var d struct {
		States map[string]struct {
			Type string
		}
	}
	_ = json.Unmarshal(def, &d)
	t := make(map[string]string, len(d.States))
	for n, s := range d.States {
		t[n] = s.Type
	}
	return t
}

const execColumns = `id, state_machine, name, status, input, output, error, cause, start_time, stop_time, rollback_of, rollback_id, def_hash`

type execRow struct {
	Execution
	defHash string
}

func scanExec(s interface{ Scan(...any) error }) (execRow, error) {
	var r execRow
	var in, out []byte
	var start, stop int64
	err := s.Scan(&r.ID, &r.StateMachine, &r.Name, &r.Status, &in, &out, &r.Error, &r.Cause, &start, &stop,
		&r.RollbackOf, &r.RollbackID, &r.defHash)
	r.Input, r.Output = in, out
	r.StartTime, r.StopTime = fromNanos(start), fromNanos(stop)
	return r, err
}

// Describe returns the execution's current record.
func (e *Engine) Describe(ctx context.Context, id string) (Execution, error) {
	r, err := scanExec(e.queryRowDB(ctx, `SELECT `+execColumns+` FROM executions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Execution{}, fmt.Errorf("describe %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Execution{}, fmt.Errorf("describe %s: %w", id, err)
	}
	return r.Execution, nil
}

// List returns executions, newest first.
func (e *Engine) List(ctx context.Context, f ListFilter) ([]Execution, error) {
	q := `SELECT ` + execColumns + ` FROM executions WHERE (?1 = '' OR state_machine = ?1) AND (?2 = '' OR status = ?2)
		AND (?3 = '' OR name = ?3) AND (?4 = '' OR substr(name, 1, length(?4)) = ?4)
		ORDER BY start_time DESC, id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := e.rdb.QueryContext(ctx, q, f.StateMachine, string(f.Status), f.Name, f.NamePrefix)
	if err != nil {
		return nil, fmt.Errorf("list executions: %w", err)
	}
	defer rows.Close()
	var out []Execution
	for rows.Next() {
		r, err := scanExec(rows)
		if err != nil {
			return nil, fmt.Errorf("list executions: %w", err)
		}
		out = append(out, r.Execution)
	}
	return out, rows.Err()
}

// History returns the execution's events in order.
func (e *Engine) History(ctx context.Context, id string) ([]Event, error) {
	if _, err := e.Describe(ctx, id); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return e.eventsAfter(ctx, id, 0)
}

// RecentHistory returns the execution's last n events, in order: what a summary
// (current step, latest state) needs without reading a long history.
func (e *Engine) RecentHistory(ctx context.Context, id string, n int) ([]Event, error) {
	var last int64
	if err := e.queryRowDB(ctx, `SELECT last_event_id FROM executions WHERE id = ?`, id).Scan(&last); errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("history: describe %s: %w", id, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("history %s: %w", id, err)
	}
	return e.eventsAfter(ctx, id, max(0, last-int64(n)))
}

func (e *Engine) eventsAfter(ctx context.Context, id string, after int64) ([]Event, error) {
	rows, err := e.rdb.QueryContext(ctx, `SELECT id, type, ts, previous_id, details FROM events WHERE exec_id = ? AND id > ? ORDER BY id`, id, after)
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", id, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		ev := Event{ExecutionID: id}
		var ts int64
		var d []byte
		if err := rows.Scan(&ev.ID, &ev.Type, &ts, &ev.PreviousEventID, &d); err != nil {
			return nil, fmt.Errorf("history %s: %w", id, err)
		}
		ev.Timestamp, ev.Details = fromNanos(ts), d
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history %s: %w", id, err)
	}
	rows.Close()
	for i := range out {
		d, err := rehydrate(out[i].Details, func(h string) ([]byte, error) { return e.document(ctx, h) })
		if err != nil {
			return nil, fmt.Errorf("history %s event %d: %w", id, out[i].ID, err)
		}
		out[i].Details = d
	}
	return out, nil
}

// Wait blocks until the execution ends (or ctx is done) and returns its final record.
func (e *Engine) Wait(ctx context.Context, id string) (Execution, error) {
	ch := e.addWaiter(id)
	defer func() { e.dropWaiter(id, ch) }()
	for {
		ex, err := e.Describe(ctx, id)
		if err != nil || ex.Status.Done() {
			return ex, err
		}
		select {
		case <-ch:
			ch = e.addWaiter(id) // re-arm in case of a spurious wake
		case <-ctx.Done():
			return ex, fmt.Errorf("wait %s: %w", id, ctx.Err())
		case <-e.ctx.Done():
			return ex, fmt.Errorf("wait %s: %w", id, ErrClosed)
		}
	}
}

// addWaiter returns a channel closed when the execution ends (or, spuriously, when
// another process committed something).
func (e *Engine) addWaiter(id string) chan struct{} {
	ch := make(chan struct{})
	e.mu.Lock()
	e.waiters[id] = append(e.waiters[id], ch)
	e.mu.Unlock()
	return ch
}

func (e *Engine) dropWaiter(id string, ch chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := e.waiters[id]
	for i, c := range ws {
		if c == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(e.waiters, id)
	} else {
		e.waiters[id] = ws
	}
}

// Watch calls fn for every history event of the execution, from the first one, as
// they are committed, and returns nil after the last event of a finished execution.
// It is how a CLI shows live progress.
func (e *Engine) Watch(ctx context.Context, id string, fn func(Event) error) error {
	sig := make(chan struct{}, 1)
	e.mu.Lock()
	if e.watchers[id] == nil {
		e.watchers[id] = map[chan struct{}]struct{}{}
	}
	e.watchers[id][sig] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.watchers[id], sig)
		if len(e.watchers[id]) == 0 {
			delete(e.watchers, id)
		}
		e.mu.Unlock()
	}()
	var after int64
	for {
		// Status before events: the final event commits with the final status, so a
		// finished status read first guarantees the events read next are complete.
		ex, err := e.Describe(ctx, id)
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		evs, err := e.eventsAfter(ctx, id, after)
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			after = ev.ID
		}
		if ex.Status.Done() {
			return nil
		}
		select {
		case <-sig:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.ctx.Done():
			return ErrClosed
		}
	}
}
