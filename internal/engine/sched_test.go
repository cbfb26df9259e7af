package engine

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQueueNeverHandsOneFrameToTwoWorkers(t *testing.T) {
	q := newQueue()
	q.push(work{frame: 1})
	q.push(work{frame: 1}) // already queued: dropped
	q.push(work{frame: 2})
	w, _ := q.pop()
	if w.frame != 1 {
		t.Fatalf("first pop %d, want FIFO order", w.frame)
	}
	q.push(work{frame: 1, resumed: true}) // busy: remembered, not queued
	if w2, _ := q.pop(); w2.frame != 2 {
		t.Fatalf("second pop %d: frame 1 is busy and must not be handed out", w2.frame)
	}
	q.done(work{frame: 2})
	q.done(w) // frame 1 finished: its remembered push is queued now
	w3, _ := q.pop()
	if w3.frame != 1 || !w3.resumed {
		t.Fatalf("after done: %+v, want the remembered frame 1 (resumed)", w3)
	}
	// Timeouts have their own key: the same frame id is not deduplicated against them.
	q.push(work{frame: 1, timeout: true})
	if w4, _ := q.pop(); !w4.timeout {
		t.Fatalf("timeout work not queued while frame 1 is busy: %+v", w4)
	}
	q.close()
	if _, ok := q.pop(); ok {
		t.Fatal("pop after close returned work")
	}
}

func TestTimerSetPopsInDueOrderAndSignalsEarlier(t *testing.T) {
	s := newTimerSet()
	s.add(timerEntry{frame: 1, due: t0.Add(time.Hour)})
	<-s.wake // first timer is the earliest
	s.add(timerEntry{frame: 2, due: t0.Add(2 * time.Hour)})
	select {
	case <-s.wake:
		t.Fatal("a later timer must not wake the loop")
	default:
	}
	s.add(timerEntry{frame: 3, due: t0.Add(time.Minute)})
	select {
	case <-s.wake:
	default:
		t.Fatal("an earlier timer must wake the loop")
	}
	due, next, ok := s.popDue(t0.Add(time.Hour))
	if len(due) != 2 || due[0].frame != 3 || due[1].frame != 1 {
		t.Fatalf("due %+v, want frames 3 then 1", due)
	}
	if !ok || !next.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("next %v %v", next, ok)
	}
}

func TestSchemaIsVersionedAndNewerFilesAreRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	for range 2 { // the second Open finds the schema current and changes nothing
		e, err := Open(context.Background(), Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		var n, v int
		if err := e.db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations)-1 || v != len(migrations)-1 {
			t.Fatalf("schema_migrations has %d rows, max %d", n, v)
		}
		e.Close()
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations(version, applied_at) VALUES(99, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(context.Background(), Options{Path: path})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

// A passive (read-only) open never migrates: a file of schema version 1 (written by an
// older recycler, which may still drive it) stays version 1, and the refusal says what
// upgrades it; a driving open upgrades it and keeps its executions.
func TestPassiveOpenNeverMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := append([]string{`CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`}, migrations[1]...)
	stmts = append(stmts, `INSERT INTO schema_migrations VALUES(1, 0)`,
		`INSERT INTO definitions VALUES('h', '{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}')`,
		`INSERT INTO executions(id, state_machine, name, def_hash, input, status, start_time, stop_time) VALUES('x', 'm', 'n', 'h', '{}', 'SUCCEEDED', 1, 2)`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	version := func() int {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v int
		if err := db.QueryRow(`SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	_, err = Open(context.Background(), Options{Path: path, Passive: true})
	if err == nil || !strings.Contains(err.Error(), "older recycler") || !strings.Contains(err.Error(), "recycler resume") {
		t.Fatalf("passive open of a version 1 file: %v, want a refusal saying how to upgrade", err)
	}
	if v := version(); v != 1 {
		t.Fatalf("a passive open migrated the file to version %d", v)
	}
	e, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if ex, err := e.Describe(context.Background(), "x"); err != nil || ex.Status != StatusSucceeded {
		t.Fatalf("after the upgrade: %+v %v", ex, err)
	}
	e.Close()
	if v := version(); v != len(migrations)-1 {
		t.Fatalf("a driving open left version %d", v)
	}
	p, err := Open(context.Background(), Options{Path: path, Passive: true})
	if err != nil {
		t.Fatalf("passive open of the upgraded file: %v", err)
	}
	p.Close()
}
