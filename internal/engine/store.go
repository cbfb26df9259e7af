package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// migrations are applied in order; each runs in its own transaction and records its
// version in schema_migrations, so a later issue appends a statement list here and
// existing files upgrade on Open.
var migrations = [][]string{
	1: {
		`CREATE TABLE definitions(
			hash TEXT PRIMARY KEY,
			json BLOB NOT NULL)`,
		`CREATE TABLE executions(
			id            TEXT PRIMARY KEY,
			state_machine TEXT NOT NULL,
			name          TEXT NOT NULL,
			def_hash      TEXT NOT NULL REFERENCES definitions(hash),
			input         BLOB NOT NULL,
			status        TEXT NOT NULL,
			output        BLOB,
			error         TEXT NOT NULL DEFAULT '',
			cause         TEXT NOT NULL DEFAULT '',
			start_time    INTEGER NOT NULL,
			stop_time     INTEGER NOT NULL DEFAULT 0,
			last_event_id INTEGER NOT NULL DEFAULT 0,
			on_abort      BLOB,
			rollback_of   TEXT NOT NULL DEFAULT '',
			rollback_id   TEXT NOT NULL DEFAULT '',
			UNIQUE(state_machine, name))`,
		`CREATE INDEX executions_status ON executions(status, state_machine)`,
		`CREATE TABLE frames(
			id            INTEGER PRIMARY KEY,
			exec_id       TEXT NOT NULL REFERENCES executions(id),
			parent_id     INTEGER NOT NULL DEFAULT 0,
			idx           INTEGER NOT NULL DEFAULT 0,
			kind          TEXT NOT NULL DEFAULT '',
			def_hash      TEXT NOT NULL REFERENCES definitions(hash),
			phase         TEXT NOT NULL,
			cursor        BLOB NOT NULL,
			entered_at    INTEGER NOT NULL DEFAULT 0,
			task          BLOB,
			result        BLOB,
			last_event_id INTEGER NOT NULL DEFAULT 0,
			fork_event_id INTEGER NOT NULL DEFAULT 0,
			version       INTEGER NOT NULL DEFAULT 0)`,
		`CREATE INDEX frames_exec ON frames(exec_id)`,
		`CREATE INDEX frames_parent ON frames(parent_id, phase, idx)`,
		`CREATE INDEX frames_phase ON frames(phase)`,
		`CREATE TABLE timers(
			id       INTEGER PRIMARY KEY,
			exec_id  TEXT NOT NULL,
			frame_id INTEGER NOT NULL,
			kind     TEXT NOT NULL,
			due_at   INTEGER NOT NULL,
			UNIQUE(frame_id, kind))`,
		`CREATE INDEX timers_due ON timers(due_at)`,
		`CREATE INDEX timers_exec ON timers(exec_id)`,
		`CREATE TABLE events(
			exec_id     TEXT NOT NULL,
			id          INTEGER NOT NULL,
			type        TEXT NOT NULL,
			ts          INTEGER NOT NULL,
			previous_id INTEGER NOT NULL,
			details     BLOB NOT NULL,
			PRIMARY KEY(exec_id, id)) WITHOUT ROWID`,
	},
	// 2: an abort asked for by any process, carried out by the execution's driver.
	2: {
		`ALTER TABLE executions ADD COLUMN abort_request BLOB`,
	},
	// 3: large values of event details stored once, content-addressed (documents.go).
	3: {
		`CREATE TABLE documents(
			hash TEXT PRIMARY KEY,
			json BLOB NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE event_documents(
			exec_id TEXT NOT NULL,
			hash    TEXT NOT NULL,
			PRIMARY KEY(exec_id, hash)) WITHOUT ROWID`,
		`CREATE INDEX event_documents_hash ON event_documents(hash)`,
		`CREATE INDEX executions_stop ON executions(stop_time)`,
	},
}

// openReadDB opens a pool of read-only connections: in WAL mode readers never wait
// for the writer, so loading frames and API reads do not queue behind commits.
func openReadDB(path string, conns int) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

// openCheckpointDB opens the connection that copies the WAL back into the database.
func openCheckpointDB(path string) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// openDB opens (creating if needed) the SQLite file and brings its schema up to date.
// Passive: read-only, never created or migrated (a look must not change the file an
// older binary may still be driving); a schema other than this binary's is refused.
func openDB(ctx context.Context, path string, syncFull, passive bool) (*sql.DB, error) {
	if passive {
		return openPassiveDB(ctx, path)
	}
	sync := "NORMAL"
	if syncFull {
		sync = "FULL"
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	// Several processes may drive executions from one file: a writer waits for another's
	// commit (they are short) instead of failing with SQLITE_BUSY.
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(on)")
	// Checkpoints run on their own connection (checkpointer), not inside a commit where
	// their fsyncs would stall every transition queued behind it.
	q.Add("_pragma", "wal_autocheckpoint(0)")
	// After a checkpoint resets the WAL, SQLite truncates the file to this size.
	q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walLimit))
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One connection: SQLite has a single writer anyway, and serialising in Go avoids
	// SQLITE_BUSY retries and lets prepared statements stay on that connection.
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return db, nil
}

func openPassiveDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := openReadDB(path, 1)
	if err != nil {
		return nil, err
	}
	var cur int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version),0) FROM schema_migrations`).Scan(&cur); err != nil {
		db.Close()
		return nil, fmt.Errorf("read schema version of %s: %w (is it a recycler state file?)", path, err)
	}
	if want := len(migrations) - 1; cur != want {
		db.Close()
		if cur > want {
			return nil, fmt.Errorf("%s has schema version %d, newer than this binary knows (%d): use a newer recycler", path, cur, want)
		}
		return nil, fmt.Errorf("%s has schema version %d from an older recycler (this one uses %d); a read-only look does not upgrade it: run 'recycler resume' once (it upgrades the file), after the older recycler has stopped", path, cur, want)
	}
	return db, nil
}

// abandon rolls back a transaction that already failed. The failure is the error
// worth reporting; Rollback's own error adds nothing, and database/sql releases the
// connection whatever it returns.
func abandon(tx *sql.Tx) { _ = tx.Rollback() }

func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations(
		version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	var cur int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version),0) FROM schema_migrations`).Scan(&cur); err != nil {
		return err
	}
	if cur > len(migrations)-1 {
		return fmt.Errorf("database schema version %d is newer than this binary knows (%d): use a newer recycler", cur, len(migrations)-1)
	}
	for v := cur + 1; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				abandon(tx)
				return fmt.Errorf("version %d: %w", v, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES(?, ?)`, v, time.Now().Unix()); err != nil {
			abandon(tx)
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("version %d: %w", v, err)
		}
	}
	return nil
}

// walLimit bounds the WAL file: the checkpointer truncates it when it grew past this
// (SQLite otherwise keeps a WAL at its largest size for good), and journal_size_limit
// truncates it to this size whenever a checkpoint lets it start over.
const walLimit = 4 << 20

// errStale means the row a transition was computed from changed underneath it (the
// execution was stopped or timed out, or another worker moved the frame): the
// transition is dropped, nothing is written.
var errStale = errors.New("stale transition")

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
