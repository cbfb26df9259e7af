package recycle

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The worst case counts every retry the definition allows: it must not allow more.
func TestBudgetFollowsTheDefinition(t *testing.T) {
	var def struct {
		States map[string]struct {
			Type  string `json:"Type"`
			Retry []struct {
				MaxAttempts int `json:"MaxAttempts"`
			} `json:"Retry"`
		} `json:"States"`
	}
	if err := json.Unmarshal(mustDef(t), &def); err != nil {
		t.Fatal(err)
	}
	for name, st := range def.States {
		n := 0
		for _, r := range st.Retry {
			n += r.MaxAttempts
		}
		want := taskRetries
		if name == "Rollback" {
			want = rollbackRetries
		}
		if st.Type == "Task" && n > want {
			t.Errorf("state %s retries up to %d times; HistoryEvents counts %d", name, n, want)
		}
	}
}

// A 24-hour drain fits the history budget at the default loop period, while the
// early checks stay short; the period never exceeds --check-seconds.
func TestLoopPeriodGrowsWithTheWait(t *testing.T) {
	for _, tc := range []struct {
		waited time.Duration
		cs     int
		want   time.Duration
	}{
		{0, 300, 5 * time.Second},
		{time.Minute, 300, 15 * time.Second},
		{10 * time.Minute, 300, 150 * time.Second},
		{3 * time.Hour, 300, 300 * time.Second},
		{3 * time.Hour, 600, 600 * time.Second},
		{0, 2, 2 * time.Second}, // a ceiling below the floor wins
	} {
		if got := CheckPeriod(tc.waited, tc.cs); got != tc.want {
			t.Errorf("CheckPeriod(%s, %d) = %s, want %s", tc.waited, tc.cs, got, tc.want)
		}
	}
	r := NewRequest("n")
	if n := r.HistoryEvents(); n > HistoryBudget {
		t.Errorf("defaults (--max-wait %s, --check-seconds %d): %d history events worst case, over %d", r.MaxWait, r.CheckSeconds, n, HistoryBudget)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	// Today's loop of 20-second checks is refused for 24 hours, saying what fits.
	r.CheckSeconds = 20
	err := r.Validate()
	for _, want := range []string{"--max-wait 24h0m0s with --check-seconds 20 could write 38", "more than the 5000", "raise --check-seconds to 191 or more", "lower --max-wait to 2h"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--check-seconds 20 for 24h: %v; want it to say %q", err, want)
		}
	}
	// Past what even the longest check fits: only a shorter wait helps.
	r.CheckSeconds, r.MaxWait = 600, Duration(30*24*time.Hour)
	if err := r.Validate(); err == nil || strings.Contains(err.Error(), "raise --check-seconds") || !strings.Contains(err.Error(), "lower --max-wait to ") {
		t.Errorf("30 days: %v; want only a shorter --max-wait suggested", err)
	}
}

func TestDrainDeadlineFlagsAreValidated(t *testing.T) {
	base := NewRequest("n")
	base.MaxWait = Duration(time.Hour)
	for _, tc := range []struct {
		name string
		edit func(*Request)
		want string // "" = valid
	}{
		{"evict-timeout none", func(*Request) {}, ""},
		{"evict-timeout shorter with force", func(r *Request) { r.EvictTimeout, r.OnTimeout = Duration(10*time.Minute), OnTimeoutForce }, ""},
		{"evict-timeout equal to max-wait", func(r *Request) { r.EvictTimeout = r.MaxWait }, ""},
		{"evict-timeout longer", func(r *Request) { r.EvictTimeout = Duration(2 * time.Hour) }, "--evict-timeout 2h0m0s is longer than --max-wait 1h0m0s"},
		{"evict-timeout negative", func(r *Request) { r.EvictTimeout = Duration(-time.Second) }, "--evict-timeout must be 0 (none"},
		{"evict-timeout with evict", func(r *Request) { r.EvictTimeout, r.OnTimeout = Duration(time.Minute), OnTimeoutEvict }, "would change nothing"},
		{"evict-timeout without evicting", func(r *Request) { r.EvictTimeout, r.EvictOthers = Duration(time.Minute), false }, "--evict-others=false would change nothing"},
		{"max-wait zero", func(r *Request) { r.MaxWait = 0 }, `there is no "wait forever"`},
	} {
		r := base
		tc.edit(&r)
		err := r.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
}
