package recycle

import (
	"fmt"
	"time"
)

// HistoryBudget is the most history events one recycle may write. Step Functions
// fails an execution outright at 25,000 (no Catch runs, so nothing rolls back);
// the embedded engine stores every event. A fifth of the hard limit leaves room
// for retries the worst case below does not count.
const HistoryBudget = 5000

// History events per state, as both engines write them: a Task state is
// Entered, Scheduled, Started, Succeeded, Exited; a Choice and a Wait are
// Entered and Exited; a retry (ASL's MaxAttempts counts retries) adds Failed,
// Scheduled, Started.
const (
	eventsTask  = 5
	eventsPass  = eventsTask + 2 + 2 // one round of a wait loop: check, Choice, Wait
	eventsRetry = 3
	// taskRetries and rollbackRetries are the Retry MaxAttempts of the definition
	// (TestBudgetFollowsTheDefinition keeps them in step).
	taskRetries     = 25
	rollbackRetries = 25 + 3
	// The states outside the loops, worst path: ExecutionStarted, Resolve,
	// HookOnly?, Fence, SurgeOrNot, Surge, Retire failing into Rollback, the end
	// state, the execution's end; each of those Tasks retried as often as its Retry
	// allows. (A lifecycle action that is only answered loops in AnswerHook instead
	// of Drain, for at most as long.)
	eventsFixed = 1 + 5*eventsTask + 2 + 2 + 2 + 1 + (4*taskRetries+rollbackRetries)*eventsRetry
)

// LoopPasses is the most rounds a wait loop makes when it lasts wait and each
// check blocks for CheckPeriod: the rounds until wait is covered, plus the one
// that sees the deadline.
func LoopPasses(wait time.Duration, checkSeconds int) int {
	n := 1
	for waited := time.Duration(0); waited < wait; n++ {
		waited += CheckPeriod(waited, checkSeconds) + loopPause
	}
	return n
}

// HistoryEvents is the worst-case number of history events one execution of r
// writes: every wait lasting to its deadline, each round of a wait loop 9
// events. The drain's loop lasts to its End (--max-wait + --force-grace) after a
// recording round without the pause.
func (r Request) HistoryEvents() int {
	n := eventsFixed
	if !r.NoSurge {
		n += LoopPasses(time.Duration(r.ReplacementTimeout), r.CheckSeconds) * eventsPass
	}
	n += eventsTask + 2 + LoopPasses(time.Duration(r.MaxWait+r.ForceGrace), r.CheckSeconds)*eventsPass
	n += LoopPasses(time.Duration(r.WorkloadTimeout), r.CheckSeconds) * eventsPass
	return n
}

// checkHistoryBudget refuses a request whose waits could outgrow HistoryBudget,
// saying what would fit.
func (r Request) checkHistoryBudget() error {
	n := r.HistoryEvents()
	if n <= HistoryBudget {
		return nil
	}
	fix := ""
	for cs := r.CheckSeconds + 1; cs <= maxCheckSeconds; cs++ {
		c := r
		c.CheckSeconds = cs
		if c.HistoryEvents() <= HistoryBudget {
			fix = fmt.Sprintf("raise --check-seconds to %d or more (a check returns as soon as its condition holds, so this delays nothing), or ", cs)
			break
		}
	}
	// The longest --max-wait that fits, to the minute.
	lo, hi := time.Duration(0), time.Duration(r.MaxWait)
	for hi-lo > time.Minute {
		mid := (lo + hi) / 2
		c := r
		c.MaxWait = Duration(mid)
		if c.HistoryEvents() <= HistoryBudget {
			lo = mid
		} else {
			hi = mid
		}
	}
	fix += fmt.Sprintf("lower --max-wait to %s or less", lo.Truncate(time.Minute))
	return fmt.Errorf("--max-wait %s with --check-seconds %d could write %d history events, more than the %d a recycle may (Step Functions fails an execution outright at 25,000): %s",
		time.Duration(r.MaxWait), r.CheckSeconds, n, HistoryBudget, fix)
}

// maxCheckSeconds keeps one check within a Lambda's 15 minutes (the Task's
// TimeoutSeconds is 900) with room for its API calls.
const maxCheckSeconds = 600
