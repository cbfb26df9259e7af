package aws

import (
	"context"
	"sort"
	"sync"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Metrics counts API calls per operation ("AutoScaling/EnterStandby"): Calls counts
// operations the code made, Attempts counts HTTP requests sent (retries included),
// which is what AWS rate limits see. Safe for concurrent use. Each exposes the
// counts to a metrics exporter.
type Metrics struct {
	mu       sync.Mutex
	calls    map[string]int64
	attempts map[string]int64
}

// NewMetrics returns an empty counter.
func NewMetrics() *Metrics {
	return &Metrics{calls: map[string]int64{}, attempts: map[string]int64{}}
}

func (m *Metrics) add(into map[string]int64, op string) {
	m.mu.Lock()
	into[op]++
	m.mu.Unlock()
}

// Calls returns a copy of the per-operation call counts.
func (m *Metrics) Calls() map[string]int64 { return m.copy(m.calls) }

// Attempts returns a copy of the per-operation attempt counts (retries included).
func (m *Metrics) Attempts() map[string]int64 { return m.copy(m.attempts) }

func (m *Metrics) copy(from map[string]int64) map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(from))
	for k, v := range from {
		out[k] = v
	}
	return out
}

// TotalCalls is the sum of Calls.
func (m *Metrics) TotalCalls() int64 { return sum(m.Calls()) }

// TotalAttempts is the sum of Attempts.
func (m *Metrics) TotalAttempts() int64 { return sum(m.Attempts()) }

// Reset sets every count to zero.
func (m *Metrics) Reset() {
	m.mu.Lock()
	m.calls = map[string]int64{}
	m.attempts = map[string]int64{}
	m.mu.Unlock()
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Operations lists the operations seen, sorted.
func (m *Metrics) Operations() []string {
	c := m.Calls()
	ops := make([]string, 0, len(c))
	for op := range c {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// Each calls fn for every operation seen, sorted, with its call and attempt counts;
// a Prometheus collector (later) reads the counter through it.
func (m *Metrics) Each(fn func(operation string, calls, attempts int64)) {
	calls, attempts := m.Calls(), m.Attempts()
	for _, op := range m.Operations() {
		fn(op, calls[op], attempts[op])
	}
}

func operation(ctx context.Context) string {
	return awsmiddleware.GetServiceID(ctx) + "/" + awsmiddleware.GetOperationName(ctx)
}

// install adds the two counting middlewares to an SDK client's stack: one in
// Initialize (once per operation), one in Finalize after the retry loop's start
// (once per attempt).
func (m *Metrics) install(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("recycler/count-calls",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			m.add(m.calls, operation(ctx))
			return next.HandleInitialize(ctx, in)
		}), middleware.After); err != nil {
		return err
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("recycler/count-attempts",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			m.add(m.attempts, operation(ctx))
			return next.HandleFinalize(ctx, in)
		}), "Retry", middleware.After)
}
