package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Storing event details as documents and reading them back gives the same bytes.
func TestDocumentsRoundTripByteForByte(t *testing.T) {
	big := strings.Repeat("x", 300)
	cases := []string{
		`{"name":"Drain","input":{"z":1,"a":[1,2,3],"big":"` + big + `"}}`,
		`{"b":1,"a":2,"n":1e400,"m":-0.0000000000000001,"u":"é\u00e9\n","<&>":"` + big + `"}`,
		`{"input":{"$doc":"0123456789abcdef0123456789abcdef"},"pad":"` + big + `"}`,
		`{"input":{"$doc-literal":{"$doc":"x"}},"pad":"` + big + `"}`,
		`[{"k":"` + big + `"},{"k":"` + big + `"},["` + big + `"]]`,
		`{"small":true}`,
		`"` + big + `"`,
		`{"nested":{"a":{"b":{"c":"` + big + `","d":"` + big + `"}}},"same":{"c":"` + big + `","d":"` + big + `"}}`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		cases = append(cases, string(randomJSON(rng, 0)))
	}
	for i, c := range cases {
		if !json.Valid([]byte(c)) {
			t.Fatalf("case %d is not JSON: %s", i, c)
		}
		store := map[string][]byte{}
		stored := dehydrate(json.RawMessage(c), func(h string, doc []byte) {
			if prev, ok := store[h]; ok && !bytes.Equal(prev, doc) {
				t.Fatalf("case %d: hash %s for two documents", i, h)
			}
			store[h] = doc
		})
		back, err := rehydrate(stored, func(h string) ([]byte, error) {
			d, ok := store[h]
			if !ok {
				return nil, fmt.Errorf("no document %s", h)
			}
			return d, nil
		})
		if err != nil {
			t.Fatalf("case %d: rehydrate: %v\n%s", i, err, stored)
		}
		if !bytes.Equal(back, []byte(c)) {
			t.Fatalf("case %d: round trip differs:\nin  %s\nout %s\nstored %s", i, c, back, stored)
		}
		if len(c) > 2*docThreshold && strings.Count(c, "x") > docThreshold && len(stored) >= len(c) {
			t.Errorf("case %d: stored %d bytes for %d", i, len(stored), len(c))
		}
	}
}

func randomJSON(rng *rand.Rand, depth int) []byte {
	switch k := rng.IntN(7); {
	case depth > 4 || k == 0:
		return []byte(fmt.Sprint(rng.IntN(1000)))
	case k == 1:
		b, _ := json.Marshal(strings.Repeat("ab<", rng.IntN(120)))
		return b
	case k <= 4:
		var buf bytes.Buffer
		buf.WriteByte('{')
		n := rng.IntN(5)
		for i := range n {
			if i > 0 {
				buf.WriteByte(',')
			}
			key := []string{"$doc", "$doc-literal", "a", "z", "k" + fmt.Sprint(i)}[rng.IntN(5)]
			fmt.Fprintf(&buf, "%q:", key+fmt.Sprint(i))
			if rng.IntN(4) == 0 {
				fmt.Fprintf(&buf, "%q:", "") // not JSON: rebuilt below
			}
			buf.Write(randomJSON(rng, depth+1))
		}
		buf.WriteByte('}')
		b := buf.Bytes()
		if !json.Valid(b) {
			return []byte(`{"` + docRefKey + `":"` + strings.Repeat("0", 32) + `"}`)
		}
		if rng.IntN(3) == 0 {
			return []byte(`{"` + docRefKey + `":` + string(randomJSON(rng, depth+1)) + `}`)
		}
		return b
	default:
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i := range rng.IntN(5) {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(randomJSON(rng, depth+1))
		}
		buf.WriteByte(']')
		return buf.Bytes()
	}
}

// A loop that carries a large state through many events stores the state once per
// change, not once per event, and History gives every event back as it was recorded.
func TestHistoryStoresALargeStateOncePerChange(t *testing.T) {
	te := openTest(t, nil, "", nil)
	// A counter loop of 50 rounds: every state's input and output carry the large list.
	def := `{"StartAt":"Init","States":{
		"Init":{"Type":"Pass","Result":0,"ResultPath":"$.n","Next":"Inc"},
		"Inc":{"Type":"Pass","Parameters":{"v.$":"States.MathAdd($.n, 1)"},"ResultPath":"$.inc","Next":"Copy"},
		"Copy":{"Type":"Pass","InputPath":"$.inc.v","ResultPath":"$.n","Next":"Check"},
		"Check":{"Type":"Choice","Choices":[{"Variable":"$.n","NumericLessThan":50,"Next":"Inc"}],"Default":"Done"},
		"Done":{"Type":"Succeed"}}}`
	big := map[string]any{"instances": strings.Split(strings.Repeat("i-0123456789abcdef0,", 400), ",")}
	in, _ := json.Marshal(big)
	ex := te.start(t, def, string(in))
	if got := te.wait(t, ex.ID); got.Status != StatusSucceeded {
		t.Fatalf("%s %s %s", got.Status, got.Error, got.Cause)
	}
	hist := te.history(t, ex.ID)
	te.rec.mu.Lock()
	recorded := map[int64][]byte{}
	for _, ev := range te.rec.evs {
		if ev.ExecutionID == ex.ID {
			recorded[ev.ID] = ev.Details
		}
	}
	te.rec.mu.Unlock()
	var logical int
	for _, ev := range hist {
		if !bytes.Equal(ev.Details, recorded[ev.ID]) {
			t.Fatalf("event %d %s read back differs:\nrecorded %.200s\nread     %.200s", ev.ID, ev.Type, recorded[ev.ID], ev.Details)
		}
		logical += len(ev.Details)
	}
	var stored, docs int
	if err := te.db.QueryRow(`SELECT (SELECT SUM(length(details)) FROM events WHERE exec_id = ?), (SELECT SUM(length(d.json)) FROM documents d JOIN event_documents r ON r.hash = d.hash WHERE r.exec_id = ?)`,
		ex.ID, ex.ID).Scan(&stored, &docs); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, %d bytes of details; stored: %d bytes in events + %d in documents", len(hist), logical, stored, docs)
	if stored+docs > logical/20 {
		t.Fatalf("stored %d bytes for %d bytes of history: the state is not stored once", stored+docs, logical)
	}
}

// Prune removes ended executions older than the cut-off with their events and the
// documents nobody else uses; running ones, recent ones, and an old one whose rollback
// is recent stay, and their histories read back whole.
func TestPruneRemovesOldEndedExecutionsAndTheirDocuments(t *testing.T) {
	te := openTest(t, nil, "", nil)
	ctx := context.Background()
	shared := `{"shared":"` + strings.Repeat("s", 400) + `"}`
	own := func(n int) string { return `{"own":"` + strings.Repeat(fmt.Sprint(n), 400) + `"}` }
	old := te.start(t, passChain, own(1))
	te.wait(t, old.ID)
	oldShared := te.start(t, passChain, shared)
	te.wait(t, oldShared.ID)
	aborted, err := te.Start(ctx, StartInput{StateMachine: "m", Name: "rb", Definition: []byte(waitDef), Input: json.RawMessage(own(2)),
		OnAbort: &Rollback{Definition: []byte(waitDef)}})
	if err != nil {
		t.Fatal(err)
	}
	te.waitEvent(t, aborted.ID, "WaitStateEntered")
	aborted, err = te.Stop(ctx, aborted.ID, "User.Abort", "")
	if err != nil {
		t.Fatal(err)
	}
	te.waitEvent(t, aborted.RollbackID, "WaitStateEntered")
	running := te.start(t, waitDef, own(3))
	te.waitEvent(t, running.ID, "WaitStateEntered")

	te.clock.Step(31 * 24 * time.Hour) // the rollback's and the running execution's Waits end too, but…
	te.wait(t, aborted.RollbackID)     // …the rollback ends now: recent
	recent := te.start(t, passChain, shared)
	te.wait(t, recent.ID)
	rerun := te.start(t, waitDef, own(4)) // started now, still running
	te.waitEvent(t, rerun.ID, "WaitStateEntered")

	var docsBefore int
	_ = te.db.QueryRow(`SELECT COUNT(*) FROM documents`).Scan(&docsBefore)
	got, err := te.Prune(ctx, te.clock.Now().Add(-30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got.Executions != 2 || got.Events == 0 || got.Documents == 0 {
		t.Fatalf("pruned %+v, want the two old ended executions, their events and own documents", got)
	}
	for _, id := range []string{old.ID, oldShared.ID} {
		if _, err := te.Describe(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("pruned %s still there: %v", id, err)
		}
	}
	for _, id := range []string{aborted.ID, aborted.RollbackID, recent.ID, running.ID, rerun.ID} {
		h, err := te.History(ctx, id)
		if err != nil || len(h) == 0 {
			t.Errorf("kept %s: history %d events, %v", id, len(h), err)
		}
	}
	h, _ := te.History(ctx, recent.ID)
	if !sameJSON(h[0].Details, json.RawMessage(`{"input":`+shared+`,"name":"`+recent.Name+`","stateMachine":"m"}`)) {
		t.Errorf("a document shared with a pruned history is gone: %s", h[0].Details)
	}
	var docsAfter, refs int
	_ = te.db.QueryRow(`SELECT COUNT(*) FROM documents`).Scan(&docsAfter)
	_ = te.db.QueryRow(`SELECT COUNT(*) FROM event_documents WHERE exec_id IN (?, ?)`, old.ID, oldShared.ID).Scan(&refs)
	if docsAfter != docsBefore-got.Documents || refs != 0 {
		t.Errorf("documents %d → %d (pruned %d), references of pruned executions left: %d", docsBefore, docsAfter, got.Documents, refs)
	}
	if again, err := te.Prune(ctx, te.clock.Now().Add(-30*24*time.Hour)); err != nil || again != (Pruned{}) {
		t.Errorf("second prune: %+v %v, want nothing", again, err)
	}
}
