package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

func TestPruneRemovesWhatEndedLongAgo(t *testing.T) {
	state := filepath.Join(t.TempDir(), "recycler.db")
	// Two recycles that ended 40 days ago and 1 day ago (a trivial definition, same name space).
	fc := clocktesting.NewFakeClock(time.Now().Add(-40 * 24 * time.Hour))
	eng, err := engine.Open(context.Background(), engine.Options{Path: state, Clock: fc})
	if err != nil {
		t.Fatal(err)
	}
	def := []byte(`{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}`)
	for _, name := range []string{"i-0000000000000000a", "i-0000000000000000b"} {
		ex, err := eng.Start(context.Background(), engine.StartInput{StateMachine: recycle.StateMachineName, Name: name, Definition: def,
			Input: json.RawMessage(`{"request":{"instanceId":"` + name + `"}}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Wait(context.Background(), ex.ID); err != nil {
			t.Fatal(err)
		}
		fc.Step(39 * 24 * time.Hour)
	}
	eng.Close()

	for _, bad := range [][]string{{}, {"--older-than", "abc"}, {"--older-than", "-5d"}, {"--older-than", "0"}} {
		res := runCLI(t, append([]string{"prune", "--state", state}, bad...)...)
		if res.code != ExitBadInput || !strings.Contains(res.stderr, "--older-than") {
			t.Errorf("prune %v: exit %d, want %d naming --older-than\n%s", bad, res.code, ExitBadInput, res.stderr)
		}
	}
	if n := len(viewCmd[[]execView](t, "list", "--state", state)); n != 2 {
		t.Fatalf("bad input pruned something: %d executions left", n)
	}
	res := runCLI(t, "prune", "--older-than", "30d", "--state", state)
	if res.code != ExitOK || !strings.Contains(res.stdout, "pruned 1 execution(s)") {
		t.Fatalf("prune: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	left := viewCmd[[]execView](t, "list", "--state", state)
	if len(left) != 1 || left[0].Name != "i-0000000000000000b" {
		t.Fatalf("left after prune: %+v, want only the recent one", left)
	}
}
