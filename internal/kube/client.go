package kube

import (
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Client performs the node operations of a recycle against a cluster.
// It is safe for concurrent use.
type Client struct {
	cs       kubernetes.Interface
	clock    clock.PassiveClock
	jitter   func() float64 // in [0,1)
	recorder Recorder
	backoff  Backoff

	mu       sync.Mutex
	byID     map[string]string              // instance ID -> node name, a hint verified on use
	nodeUIDs map[string]types.UID           // node name -> UID, for Event references
	lookup   func(instanceID string) string // set by a NodeCache: its index, "" = unknown
}

// Option configures a Client.
type Option func(*Client)

// WithClock sets the clock used for annotation timestamps and retry times.
func WithClock(c clock.PassiveClock) Option { return func(k *Client) { k.clock = c } }

// WithRand sets the source of eviction back-off jitter (a float in [0,1)).
func WithRand(f func() float64) Option { return func(k *Client) { k.jitter = f } }

// WithRecorder replaces the Event recorder (default: events.k8s.io/v1 Events on the Node).
func WithRecorder(r Recorder) Option { return func(k *Client) { k.recorder = r } }

// WithBackoff sets the eviction back-off (default DefaultBackoff()).
func WithBackoff(b Backoff) Option { return func(k *Client) { k.backoff = b } }

// New returns a Client for cs.
func New(cs kubernetes.Interface, opts ...Option) *Client {
	c := &Client{
		cs:       cs,
		clock:    clock.RealClock{},
		jitter:   rand.Float64,
		backoff:  DefaultBackoff(),
		byID:     map[string]string{},
		nodeUIDs: map[string]types.UID{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.recorder == nil {
		c.recorder = NewEventRecorder(cs, "recycler", "", c.clock)
	}
	return c
}

// Backoff is the eviction retry schedule after a PodDisruptionBudget refusal:
// the n-th refusal (from 0) waits a random duration in [d/2, d), where
// d = min(Max, Initial·2ⁿ), and never less than the server's Retry-After.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// DefaultBackoff is 5 s, 10 s, 20 s, … up to 5 min (each shortened by jitter by at most half).
func DefaultBackoff() Backoff { return Backoff{Initial: 5 * time.Second, Max: 5 * time.Minute} }

// Delay returns the wait before retrying after the attempt-th refusal; u in [0,1) is the jitter.
func (b Backoff) Delay(attempt int, u float64) time.Duration {
	initial, limit := b.Initial, b.Max
	if initial <= 0 {
		initial = time.Second
	}
	if limit < initial {
		limit = initial
	}
	d := initial
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	if u < 0 || u >= 1 {
		u = 0
	}
	return d/2 + time.Duration(u*float64(d/2))
}

func (c *Client) rememberNode(name string, uid types.UID) {
	c.mu.Lock()
	c.nodeUIDs[name] = uid
	c.mu.Unlock()
}
