package engine

import (
	"container/heap"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// work is one unit for a worker: drive a frame, or fire an execution's timeout.
type work struct {
	frame   int64
	timeout bool // frame is the top frame whose execution's TimeoutSeconds is due
	resumed bool // the frame was found with a task in flight on Open
}

func (w work) key() int64 {
	if w.timeout {
		return -w.frame
	}
	return w.frame
}

// queue is a FIFO of ready work that never hands the same key to two workers at once:
// a push for a key being processed is remembered and re-queued when it finishes.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []work
	queued map[int64]bool
	busy   map[int64]bool
	again  map[int64]work
	closed bool
}

func newQueue() *queue {
	q := &queue{queued: map[int64]bool{}, busy: map[int64]bool{}, again: map[int64]work{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(w work) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pushLocked(w)
}

func (q *queue) pushLocked(w work) {
	k := w.key()
	switch {
	case q.closed, q.queued[k]:
	case q.busy[k]:
		if prev, ok := q.again[k]; ok {
			w.resumed = w.resumed || prev.resumed
		}
		q.again[k] = w
	default:
		q.queued[k] = true
		q.items = append(q.items, w)
		q.cond.Signal()
	}
}

func (q *queue) pop() (work, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return work{}, false
	}
	w := q.items[0]
	q.items[0] = work{}
	q.items = q.items[1:]
	k := w.key()
	delete(q.queued, k)
	q.busy[k] = true
	return w, true
}

func (q *queue) done(w work) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := w.key()
	delete(q.busy, k)
	if again, ok := q.again[k]; ok {
		delete(q.again, k)
		q.pushLocked(again)
	}
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

func (e *Engine) worker() {
	defer e.wg.Done()
	for {
		w, ok := e.q.pop()
		if !ok {
			return
		}
		if w.timeout {
			e.fireTimeout(w.frame)
		} else {
			e.runFrame(w)
		}
		e.q.done(w)
	}
}

// timerEntry mirrors a timers row. Entries are never removed when a frame moves on:
// a stale entry only wakes a worker that finds nothing due and returns.
type timerEntry struct {
	id    int64
	frame int64
	kind  string
	due   time.Time
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// timerSet is the in-memory index of the timers table, earliest first.
type timerSet struct {
	mu   sync.Mutex
	h    timerHeap
	wake chan struct{} // a new earliest timer was added
}

func newTimerSet() *timerSet { return &timerSet{wake: make(chan struct{}, 1)} }

func (s *timerSet) add(t timerEntry) {
	s.mu.Lock()
	earliest := len(s.h) == 0 || t.due.Before(s.h[0].due)
	heap.Push(&s.h, t)
	s.mu.Unlock()
	if earliest {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// popDue removes and returns the entries due at now, and the next due time.
func (s *timerSet) popDue(now time.Time) ([]timerEntry, time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []timerEntry
	for len(s.h) > 0 && !s.h[0].due.After(now) {
		due = append(due, heap.Pop(&s.h).(timerEntry))
	}
	if len(s.h) == 0 {
		return due, time.Time{}, false
	}
	return due, s.h[0].due, true
}

// timerLoop sleeps exactly until the earliest timer (or until an earlier one is
// added), then hands the due frames to the workers.
func (e *Engine) timerLoop() {
	defer e.wg.Done()
	for {
		now := e.clock.Now()
		due, next, ok := e.timers.popDue(now)
		for _, t := range due {
			e.q.push(work{frame: t.frame, timeout: t.kind == timerTimeout})
		}
		var tc <-chan time.Time
		var tm clock.Timer
		if ok {
			tm = e.clock.NewTimer(next.Sub(now))
			tc = tm.C()
			// If the clock jumped between reading now and arming the timer (an injected
			// clock stepped by a test, or a long preemption), the timer may be armed past
			// next: re-arm from the new now.
			if e.clock.Now().Sub(now) > time.Millisecond {
				tm.Stop()
				continue
			}
		}
		select {
		case <-tc:
		case <-e.timers.wake:
		case <-e.ctx.Done():
			if tm != nil {
				tm.Stop()
			}
			return
		}
		if tm != nil {
			tm.Stop()
		}
	}
}
