package recycle

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Waiting says what a polling task's last output waits for, "" when its step is
// done or does not poll. The progress view, `recycler status` and serve's
// "blocked" notification say it in the same words.
func Waiting(task string, out json.RawMessage, now time.Time) string {
	switch task {
	case TaskCheckReplacement:
		var r ReplacementStatus
		if json.Unmarshal(out, &r) != nil || r.Done {
			return ""
		}
		if r.Reason == "" {
			return "waiting for the group to launch a replacement"
		}
		return r.Reason
	case TaskDrain:
		var s DrainStatus
		if json.Unmarshal(out, &s) != nil || s.Done {
			return ""
		}
		return s.Line(now)
	case TaskCheckWorkloads:
		var s WorkloadsStatus
		if json.Unmarshal(out, &s) != nil || s.Done {
			return ""
		}
		return strings.Join(s.NotReady, "; ")
	}
	return ""
}

// Line says what a drain waits for, what blocks it and what its next deadline
// does (at now), with clock times.
func (st DrainStatus) Line(now time.Time) string {
	var parts []string
	if len(st.Selected) > 0 {
		parts = append(parts, fmt.Sprintf("waiting for %d selected pod(s) %s", len(st.Selected), strings.Join(FirstFew(st.Selected, 3), ", ")))
	}
	parts = append(parts, fmt.Sprintf("%d pod(s) left, %d evicted", st.Remaining, len(st.Evicted)))
	parts = append(parts, FirstFew(st.BlockedBy(), 2)...)
	if at, what := st.NextDeadline(now); !at.IsZero() {
		parts = append(parts, fmt.Sprintf("at %s: %s", at.Local().Format(time.TimeOnly), what))
	}
	return strings.Join(parts, "; ")
}

// BlockedBy names each pod a budget refuses, the budget and the next try, sorted.
func (st DrainStatus) BlockedBy() []string {
	var blocked []string
	for _, b := range st.Blocked {
		blocked = append(blocked, fmt.Sprintf("%s blocked by PDB %s (retry %s)", b.Pod, strings.Join(b.PDBs, ","), b.NotBefore.Local().Format(time.TimeOnly)))
	}
	sort.Strings(blocked)
	return blocked
}

// FirstFew keeps the first n of s and says how many more there are.
func FirstFew(s []string, n int) []string {
	if len(s) > n {
		return append(append([]string(nil), s[:n]...), fmt.Sprintf("+%d more", len(s)-n))
	}
	return s
}
