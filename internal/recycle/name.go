package recycle

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/recycler/recycler/internal/engine"
)

// A recycle's execution name is the old instance's id, so that a second recycle of
// the same node is a duplicate name, which every engine refuses (the embedded one and
// Step Functions alike) — whoever starts it, from wherever. A name is used once: the
// n-th attempt after earlier ones ended (rolled back, refused) is "<instance>-<n>",
// e.g. i-0123456789abcdef0-2. See docs/operations.md.

// ExecutionName is the name of attempt n (1 = the first) at recycling instanceID.
func ExecutionName(instanceID string, attempt int) string {
	if attempt <= 1 {
		return instanceID
	}
	return instanceID + "-" + strconv.Itoa(attempt)
}

// AttemptOf returns which attempt at recycling instanceID the execution name is, or
// false when the name belongs to another instance.
func AttemptOf(name, instanceID string) (int, bool) {
	if name == instanceID {
		return 1, true
	}
	rest, ok := strings.CutPrefix(name, instanceID+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 2 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// Attempts reads the recycles of instanceID among exs (what an engine lists under the
// name prefix instanceID): the highest attempt number (0 when none), and a running
// one, if any. A running execution whose name starts with "<instanceID>-" counts
// whatever follows (an execution named by an older scheme recycles it all the same).
func Attempts(instanceID string, exs []engine.Execution) (last int, running *engine.Execution) {
	for i, ex := range exs {
		n, ok := AttemptOf(ex.Name, instanceID)
		if ok {
			last = max(last, n)
		}
		if (ok || strings.HasPrefix(ex.Name, instanceID+"-")) && !ex.Status.Done() && running == nil {
			running = &exs[i]
		}
	}
	return last, running
}

// HookExecutionName names an execution that only answers a terminate lifecycle
// action (token) for instanceID while another recycle of it runs (Resolve finds the
// holder's fence; AnswerHook heartbeats and answers): "<instance>-hook-" and a
// hash of the token, so each action has one and it never counts as an attempt
// (AttemptOf), while Attempts still sees it running.
func HookExecutionName(instanceID, token string) string {
	sum := sha256.Sum256([]byte(token))
	return instanceID + "-hook-" + hex.EncodeToString(sum[:4])
}
