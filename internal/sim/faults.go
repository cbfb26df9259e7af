package sim

import (
	"encoding/json"
	"fmt"
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
	for name, r := range map[string]float64{"throttleRate": f.ThrottleRate, "serverErrorRate": f.ServerErrorRate, "launchFailureRate": f.LaunchFailureRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s %v: must be between 0 and 1", name, r)
		}
	}
	if f.FailLaunches < 0 || f.NeverReadyNext < 0 || f.BootDelay < 0 {
		return fmt.Errorf("failLaunches, neverReadyNext and bootDelay must not be negative")
	}
	return nil
}

// SetFaults replaces the fault settings.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
	s.poke()
	return nil
}

// Faults returns the current fault settings (counters decrease as they are used).
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

func (s *Server) bootDelayLocked() time.Duration {
	if s.faults.BootDelay > 0 {
		return time.Duration(s.faults.BootDelay)
	}
	return s.opts.BootDelay
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
