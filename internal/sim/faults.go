package sim

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Faults are injected per run; change them with SetFaults or POST /_sim/faults.
type Faults struct {
	// ThrottleRate in [0,1]: share of API calls answered with Throttling
	// (Auto Scaling, STS) or RequestLimitExceeded (EC2), HTTP 400.
	ThrottleRate float64 `json:"throttleRate"`
	// ServerErrorRate in [0,1]: share answered with InternalFailure (EC2: InternalError), HTTP 500.
	ServerErrorRate float64 `json:"serverErrorRate"`
	// FailLaunches: the next N launches fail (activity StatusCode Failed).
	FailLaunches int `json:"failLaunches"`
	// LaunchFailureRate in [0,1]: share of launches that fail.
	LaunchFailureRate float64 `json:"launchFailureRate"`
	// BootDelay overrides Options.BootDelay for instances launched from now on.
	BootDelay Duration `json:"bootDelay"`
	// NeverReadyNext: the Nodes of the next N launched instances never become Ready.
	NeverReadyNext int `json:"neverReadyNext"`
	// ContentionRate in [0,1]: share of mutating Auto Scaling calls answered
	// ResourceContention (HTTP 500) — "you already have a pending update".
	ContentionRate float64 `json:"contentionRate"`
	// LostAnswers: the next N calls of an operation ("DetachInstances") take
	// effect, but their answer is lost on the way back: the client sees a 500
	// InternalFailure and (the SDK) asks again. Counts decrease as they are used.
	LostAnswers map[string]int `json:"lostAnswers,omitempty"`
	// TransitionDelays override Options.TransitionDelay per transient state:
	// "EnteringStandby", "Pending" (after ExitStandby), "Detaching".
	TransitionDelays map[string]Duration `json:"transitionDelays,omitempty"`
	// RateLimits: token buckets per service ("autoscaling", "ec2"), like AWS's
	// per-account request limits; calls over the limit are throttled. Refill uses the
	// injected clock.
	RateLimits map[string]RateLimit `json:"rateLimits,omitempty"`
}

// RateLimit is a token bucket: Burst tokens, refilled at PerSecond.
type RateLimit struct {
	Burst     float64 `json:"burst"`
	PerSecond float64 `json:"perSecond"`
}

type bucket struct {
	tokens float64
	at     time.Time
}

// overLimitLocked takes a token from the service's bucket; true when there was none.
func (s *Server) overLimitLocked(service string) bool {
	limit, ok := s.faults.RateLimits[service]
	if !ok {
		return false
	}
	now := s.clock.Now()
	b := s.buckets[service]
	if b == nil {
		b = &bucket{tokens: limit.Burst, at: now}
		s.buckets[service] = b
	}
	b.tokens = min(limit.Burst, b.tokens+now.Sub(b.at).Seconds()*limit.PerSecond)
	b.at = now
	if b.tokens < 1 {
		return true
	}
	b.tokens--
	return false
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration must be a string like \"30s\" or seconds: %w", err)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

func (f Faults) validate() error {
	for name, r := range map[string]float64{"throttleRate": f.ThrottleRate, "serverErrorRate": f.ServerErrorRate, "launchFailureRate": f.LaunchFailureRate, "contentionRate": f.ContentionRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s %v: must be between 0 and 1", name, r)
		}
	}
	if f.FailLaunches < 0 || f.NeverReadyNext < 0 || f.BootDelay < 0 {
		return fmt.Errorf("failLaunches, neverReadyNext and bootDelay must not be negative")
	}
	for op, n := range f.LostAnswers {
		if n < 0 {
			return fmt.Errorf("lostAnswers[%s] must not be negative", op)
		}
	}
	for state, d := range f.TransitionDelays {
		if !slices.Contains(transientStates, state) || d < 0 {
			return fmt.Errorf("transitionDelays[%s]: want one of %v with a duration ≥ 0", state, transientStates)
		}
	}
	for svc, l := range f.RateLimits {
		if svc != "autoscaling" && svc != "ec2" && svc != "sts" {
			return fmt.Errorf("rateLimits: unknown service %q (use autoscaling, ec2 or sts)", svc)
		}
		if l.Burst < 1 || l.PerSecond <= 0 {
			return fmt.Errorf("rateLimits[%s]: burst must be ≥ 1 and perSecond > 0", svc)
		}
	}
	return nil
}

// SetFaults replaces the fault settings.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	f.RateLimits = maps.Clone(f.RateLimits)
	f.TransitionDelays = maps.Clone(f.TransitionDelays)
	f.LostAnswers = maps.Clone(f.LostAnswers)
	s.mu.Lock()
	s.faults = f
	s.buckets = map[string]*bucket{}
	s.mu.Unlock()
	s.poke()
	return nil
}

// Faults returns the current fault settings (counters decrease as they are used).
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	f.RateLimits = maps.Clone(f.RateLimits)
	f.TransitionDelays = maps.Clone(f.TransitionDelays)
	f.LostAnswers = maps.Clone(f.LostAnswers)
	return f
}

func (s *Server) bootDelayLocked() time.Duration {
	if s.faults.BootDelay > 0 {
		return time.Duration(s.faults.BootDelay)
	}
	return s.opts.BootDelay
}

// defaultTransitionDelay is how long a transient state lasts by default: long
// enough for a test to meet it, short enough not to slow a demo.
const defaultTransitionDelay = 300 * time.Millisecond

// transientStates are the lifecycle states a user request passes through.
var transientStates = []string{lcEnteringStandby, lcPending, lcDetaching}

// transitionDelayLocked is how long the transient state lasts from now.
func (s *Server) transitionDelayLocked(state string) time.Duration {
	if d, ok := s.faults.TransitionDelays[state]; ok {
		return time.Duration(d)
	}
	return s.opts.TransitionDelay
}

// launchFailsLocked draws whether the next launch fails.
func (s *Server) launchFailsLocked() bool {
	if s.faults.FailLaunches > 0 {
		s.faults.FailLaunches--
		return true
	}
	return s.faults.LaunchFailureRate > 0 && s.rnd.Float64() < s.faults.LaunchFailureRate
}

func (s *Server) neverReadyLocked() bool {
	if s.faults.NeverReadyNext > 0 {
		s.faults.NeverReadyNext--
		return true
	}
	return false
}
