package trigger

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Dedup remembers which events were acted on and when each node last had a recycle
// started, so an event delivered twice (SQS is at-least-once, EventBridge too) and
// an alarm that flaps start one recycle, not ten. It is memory only: after a
// restart or a takeover, the executions' inputs (each carries the event id that
// started it) restore what matters: serve seeds it from the recent executions, and
// looks up an instance's own recycles before it starts another.
type Dedup struct {
	clock    clock.PassiveClock
	eventTTL time.Duration
	cooldown time.Duration

	mu     sync.Mutex
	events map[string]time.Time // event id → when first seen
	nodes  map[string]time.Time // node → when its last recycle was started by an event
}

// NewDedup keeps event ids for eventTTL and applies cooldown per node.
func NewDedup(clk clock.PassiveClock, eventTTL, cooldown time.Duration) *Dedup {
	return &Dedup{clock: clk, eventTTL: eventTTL, cooldown: cooldown, events: map[string]time.Time{}, nodes: map[string]time.Time{}}
}

// SeenEvent reports whether id was marked within the TTL; it forgets expired ids.
func (d *Dedup) SeenEvent(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now()
	for k, at := range d.events {
		if now.Sub(at) >= d.eventTTL {
			delete(d.events, k)
		}
	}
	_, ok := d.events[id]
	return ok
}

// MarkEvent records id as acted on.
func (d *Dedup) MarkEvent(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.events[id]; !ok {
		d.events[id] = d.clock.Now()
	}
}

// CoolingDown reports whether node had a recycle started less than the cool-down
// ago, and until when.
func (d *Dedup) CoolingDown(node string) (bool, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.nodes[node]
	if !ok {
		return false, time.Time{}
	}
	until := at.Add(d.cooldown)
	if !d.clock.Now().Before(until) {
		delete(d.nodes, node)
		return false, time.Time{}
	}
	return true, until
}

// MarkNode records that a recycle of node was started at at (the execution's start
// time when seeding from the engine).
func (d *Dedup) MarkNode(node string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if prev, ok := d.nodes[node]; !ok || at.After(prev) {
		d.nodes[node] = at
	}
}
