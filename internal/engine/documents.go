package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// History events carry the state document (a state's input and output, a task's
// parameters) again and again: a polling loop repeats it in seven of its nine events.
// So the events table stores each large JSON value once, content-addressed: a value
// of at least docThreshold bytes is written to the documents table under its hash
// and the event holds a reference {"$doc":"<hash>"} instead. Objects and arrays are
// split bottom-up, so a state document whose one small field changed shares its
// large fields (the group's instance list, the surge record) with the previous one.
// History rehydrates the references: callers see the events exactly as recorded
// (same key order, same numbers). See docs/engine.md, "Stored history".

const (
	docThreshold = 256
	docRefKey    = "$doc"
	docEscKey    = "$doc-literal" // wraps a value that looks like a reference
)

var (
	docRefPrefix = []byte(`{"` + docRefKey + `":"`)
	docMarker    = []byte(`"$doc`)
)

// dehydrate returns raw with its large values replaced by references, calling put for
// every document to store (hash, dehydrated bytes).
func dehydrate(raw json.RawMessage, put func(hash string, doc []byte)) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) < docThreshold && !bytes.Contains(raw, docMarker) {
		return raw
	}
	out, err := dehydrateValue(raw, put)
	if err != nil {
		return raw // not JSON we can split: store it as it is
	}
	return out
}

func dehydrateValue(raw []byte, put func(string, []byte)) ([]byte, error) {
	if len(raw) == 0 || (raw[0] != '{' && raw[0] != '[') {
		return raw, nil
	}
	if len(raw) < docThreshold && !bytes.Contains(raw, docMarker) {
		return raw, nil
	}
	var buf bytes.Buffer
	if raw[0] == '{' {
		keys, vals, err := splitObject(raw)
		if err != nil {
			return nil, err
		}
		if len(keys) == 1 && (keys[0] == docRefKey || keys[0] == docEscKey) {
			// Looks like a reference: escape it, so rehydration gives it back unchanged.
			buf.WriteString(`{"` + docEscKey + `":`)
			buf.Write(raw)
			buf.WriteByte('}')
			return buf.Bytes(), nil
		}
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeKey(&buf, k)
			v, err := dehydrateValue(vals[i], put)
			if err != nil {
				return nil, err
			}
			buf.Write(v)
		}
		buf.WriteByte('}')
	} else {
		vals, err := splitArray(raw)
		if err != nil {
			return nil, err
		}
		buf.WriteByte('[')
		for i, e := range vals {
			if i > 0 {
				buf.WriteByte(',')
			}
			v, err := dehydrateValue(e, put)
			if err != nil {
				return nil, err
			}
			buf.Write(v)
		}
		buf.WriteByte(']')
	}
	doc := buf.Bytes()
	if len(doc) < docThreshold {
		return doc, nil
	}
	sum := sha256.Sum256(doc)
	h := hex.EncodeToString(sum[:16])
	put(h, doc)
	return []byte(`{"` + docRefKey + `":"` + h + `"}`), nil
}

// rehydrate replaces the references in raw by their documents (recursively).
func rehydrate(raw []byte, get func(hash string) ([]byte, error)) ([]byte, error) {
	if !bytes.Contains(raw, docMarker) {
		return raw, nil
	}
	var buf bytes.Buffer
	if err := rehydrateValue(&buf, bytes.TrimSpace(raw), get); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func rehydrateValue(buf *bytes.Buffer, raw []byte, get func(string) ([]byte, error)) error {
	if len(raw) == 0 || (raw[0] != '{' && raw[0] != '[') || !bytes.Contains(raw, docMarker) {
		buf.Write(raw)
		return nil
	}
	if raw[0] == '[' {
		vals, err := splitArray(raw)
		if err != nil {
			return err
		}
		buf.WriteByte('[')
		for i, v := range vals {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := rehydrateValue(buf, v, get); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	}
	keys, vals, err := splitObject(raw)
	if err != nil {
		return err
	}
	if len(keys) == 1 && keys[0] == docRefKey && bytes.HasPrefix(raw, docRefPrefix) {
		var h string
		if err := json.Unmarshal(vals[0], &h); err != nil {
			return fmt.Errorf("document reference %s: %w", raw, err)
		}
		doc, err := get(h)
		if err != nil {
			return err
		}
		return rehydrateValue(buf, doc, get)
	}
	if len(keys) == 1 && keys[0] == docEscKey {
		buf.Write(vals[0])
		return nil
	}
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		writeKey(buf, k)
		if err := rehydrateValue(buf, vals[i], get); err != nil {
			return err
		}
	}
	buf.WriteByte('}')
	return nil
}

// writeKey writes "key": as encoding/json writes it, without HTML escaping (which
// would change the bytes of a key holding < > &).
func writeKey(buf *bytes.Buffer, k string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(k)
	buf.Truncate(buf.Len() - 1) // Encode's newline
	buf.WriteByte(':')
}

// splitObject returns an object's keys and raw values in their order.
func splitObject(raw []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("not an object")
	}
	var keys []string
	var vals []json.RawMessage
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, nil, fmt.Errorf("object key %v", t)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("trailing data after the object")
	}
	return keys, vals, nil
}

func splitArray(raw []byte) ([]json.RawMessage, error) {
	var vals []json.RawMessage
	if err := json.Unmarshal(raw, &vals); err != nil {
		return nil, err
	}
	return vals, nil
}

// docCache keeps rehydration from reading the same document once per event: documents
// never change, so any cached one is right. Bounded; cleared when full.
type docCache struct {
	mu   sync.Mutex
	docs map[string][]byte
	size int
}

const docCacheBytes = 16 << 20

func (c *docCache) get(h string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.docs[h]
	return d, ok
}

func (c *docCache) put(h string, d []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.docs == nil || c.size+len(d) > docCacheBytes {
		c.docs, c.size = map[string][]byte{}, 0
	}
	c.docs[h] = d
	c.size += len(d)
}

// document reads a stored document (through the cache).
func (e *Engine) document(ctx context.Context, h string) ([]byte, error) {
	if d, ok := e.docs.get(h); ok {
		return d, nil
	}
	var d []byte
	if err := e.queryRowDB(ctx, `SELECT json FROM documents WHERE hash = ?`, h).Scan(&d); err != nil {
		return nil, fmt.Errorf("read document %s: %w", h, err)
	}
	e.docs.put(h, d)
	return d, nil
}

// Pruned is what Prune removed.
type Pruned struct {
	Executions int `json:"executions"`
	Events     int `json:"events"`
	Documents  int `json:"documents"`
}

// pruneBatch bounds the executions one prune transaction removes, so a large prune
// never holds the writer (of every process sharing the file) for long.
const pruneBatch = 100

// Prune removes the executions that ended before `before`, with their history and the
// documents no other history uses. An execution whose rollback has not ended that long
// ago stays (with it). Running executions are never touched.
func (e *Engine) Prune(ctx context.Context, before time.Time) (Pruned, error) {
	var total Pruned
	if e.passive {
		return total, fmt.Errorf("prune: %w", ErrPassive)
	}
	for {
		var batch Pruned
		var ids []string
		var post []func()
		err := e.write(ctx, func(w *writer) error {
			var err error
			ids, err = scanIDs(w.tx.Query(`SELECT x.id FROM executions x
				WHERE x.status != ? AND x.stop_time > 0 AND x.stop_time < ?
				AND NOT EXISTS (SELECT 1 FROM executions r WHERE r.id = x.rollback_id AND x.rollback_id != ''
					AND (r.status = ? OR r.stop_time >= ?))
				LIMIT ?`, StatusRunning, nanos(before), StatusRunning, nanos(before), pruneBatch))
			if err != nil {
				return err
			}
			for _, id := range ids {
				res, err := w.exec(`DELETE FROM events WHERE exec_id = ?`, id)
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				batch.Events += int(n)
				if _, err := w.exec(`DELETE FROM event_documents WHERE exec_id = ?`, id); err != nil {
					return err
				}
				if _, err := w.exec(`DELETE FROM executions WHERE id = ?`, id); err != nil {
					return err
				}
			}
			batch.Executions = len(ids)
			if len(ids) == 0 {
				res, err := w.exec(`DELETE FROM documents WHERE NOT EXISTS (SELECT 1 FROM event_documents r WHERE r.hash = documents.hash)`)
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				batch.Documents = int(n)
			}
			return nil
		}, &post)
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		for _, id := range ids {
			_ = os.Remove(e.driverPath(id)) // left behind by a driver killed right after the end
		}
		total.Executions += batch.Executions
		total.Events += batch.Events
		total.Documents += batch.Documents
		if len(ids) == 0 {
			break
		}
	}
	// Give the space of the WAL back too.
	if _, err := e.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		e.log.Warn("engine: WAL checkpoint after prune", "err", err)
	}
	return total, nil
}
