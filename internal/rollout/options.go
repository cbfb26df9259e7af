// Package rollout replaces many nodes: it selects them (groups, tags, a node
// selector; drift, age, or all), plans the order (AZ-balanced, per-group
// concurrency, batches, an estimate), and runs the plan as one state machine — an ASL
// Map over the candidates whose every item is a child execution of the recycle
// state machine, gated before each start by maintenance windows, a health budget and
// a cap on surplus instances. See docs/rollout.md.
package rollout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/window"
)

// Amount is a count ("3") or a percentage of a group ("25%").
type Amount struct {
	N       int  `json:"n"`
	Percent bool `json:"percent,omitempty"`
}

// ParseAmount reads "N" or "P%" (P in 1..100, N ≥ 0 where zero allowed).
func ParseAmount(s string) (Amount, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 100 {
			return Amount{}, fmt.Errorf("%q: a percentage must be a whole number from 0%% to 100%%", s)
		}
		return Amount{N: n, Percent: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Amount{}, fmt.Errorf("%q: want a whole number (3) or a percentage (25%%)", s)
	}
	return Amount{N: n}, nil
}

func (a Amount) String() string {
	if a.Percent {
		return strconv.Itoa(a.N) + "%"
	}
	return strconv.Itoa(a.N)
}

// Of is the count for a group of size n, rounded up (like a surge: 10% of 5 is 1).
func (a Amount) Of(n int) int {
	if !a.Percent {
		return a.N
	}
	return int(math.Ceil(float64(a.N) * float64(n) / 100))
}

// Exceeded reports whether bad out of size is more than the amount allows ("more than
// 20 % of the group", "more than 2 nodes").
func (a Amount) Exceeded(bad, size int) bool {
	if a.Percent {
		return bad*100 > a.N*size
	}
	return bad > a.N
}

func (a Amount) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(a.String())), nil }

func (a *Amount) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("amount %s: want a string such as \"3\" or \"20%%\"", b)
	}
	v, err := ParseAmount(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// OnFailure says what a rollout does when one of its recycles fails.
type OnFailure string

const (
	OnFailurePause    OnFailure = "pause"    // start nothing new until `recycler resume ID` (or abort)
	OnFailureContinue OnFailure = "continue" // go on with the next nodes
	OnFailureAbort    OnFailure = "abort"    // abort the rollout: running recycles are rolled back
)

// Selection says which nodes a rollout is about.
type Selection struct {
	Groups    []string          `json:"groups,omitempty"`    // group names
	GroupTags map[string]string `json:"groupTags,omitempty"` // groups carrying all of these tags
	Nodes     string            `json:"nodes,omitempty"`     // node label selector
	Drifted   bool              `json:"drifted,omitempty"`   // launch template/configuration differs from the group's
	OlderThan Duration          `json:"olderThan,omitempty"` // instance launched longer ago than this
	All       bool              `json:"all,omitempty"`
}

// Settings are what the gate before each recycle needs: they travel in the rollout's
// execution input.
type Settings struct {
	MaxUnhealthy Amount    `json:"maxUnhealthy"`
	MaxSurge     int       `json:"maxSurge"` // surplus instances across all groups at once; 0 = no cap
	OnFailure    OnFailure `json:"onFailure"`
	Windows      []string  `json:"windows,omitempty"`
	FenceBatch   bool      `json:"fenceBatch,omitempty"`
	// PauseTimeout bounds every pause and every health hold: past it a pause aborts the
	// rollout, a hold becomes a pause (every wait ends by a deadline the user chose).
	PauseTimeout Duration `json:"pauseTimeout"`
	// CheckSeconds is how often a held gate looks again (health budget, surge cap).
	CheckSeconds int `json:"checkSeconds"`
}

// Options is one `recycler plan` / `recycler rollout` invocation.
type Options struct {
	Selection
	Settings
	MaxInFlight Amount // per group
	// BootEstimate and DrainEstimate replace the measured times in the estimate (0 = measure).
	BootEstimate, DrainEstimate time.Duration
	// Request is the recycle every node gets (its options pass through); no target.
	Request recycle.Request
}

// Defaults for the flags.
const (
	DefaultMaxUnhealthy = "20%"
	DefaultPauseTimeout = 24 * time.Hour
	DefaultCheckSeconds = 20
	// DefaultBoot and DefaultDrain stand in for the estimate when nothing was measured.
	DefaultBoot  = 2 * time.Minute
	DefaultDrain = 5 * time.Minute
)

// Validate checks the options and returns every problem at once. No side effects.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(o.Groups) == 0 && len(o.GroupTags) == 0 && o.Nodes == "" {
		bad("no target: name groups (--group NAME, --group-tag key=value) or nodes (--nodes app=x)")
	}
	seen := map[string]bool{}
	for _, g := range o.Groups {
		if err := cloud.ValidateGroupName(g); err != nil {
			bad("--group %q: %v", g, err)
		}
		if seen[g] {
			bad("--group %q given twice", g)
		}
		seen[g] = true
	}
	for k := range o.GroupTags {
		if k == "" {
			bad("--group-tag: empty key (want key=value)")
		}
	}
	if o.Nodes != "" {
		if _, err := labels.Parse(o.Nodes); err != nil {
			bad("--nodes %q is not a valid label selector: %v (example: node.kubernetes.io/instance-type=m5.large)", o.Nodes, err)
		}
	}
	policies := 0
	for _, on := range []bool{o.Drifted, o.OlderThan > 0, o.All} {
		if on {
			policies++
		}
	}
	switch {
	case policies == 0:
		bad("no policy: say which nodes to replace with --drifted, --older-than 30d, or --all")
	case o.All && policies > 1:
		bad("--all replaces every selected node: do not combine it with --drifted or --older-than")
	}
	if o.OlderThan < 0 {
		bad("--older-than must be positive, got %s", o.OlderThan)
	}
	if o.MaxInFlight.N < 1 {
		bad("--max-in-flight must be at least 1 (or a percentage of at least 1%%), got %s", o.MaxInFlight)
	}
	if o.MaxSurge < 0 {
		bad("--max-surge must be 0 (no cap) or positive, got %d", o.MaxSurge)
	}
	switch o.OnFailure {
	case OnFailurePause, OnFailureContinue, OnFailureAbort:
	default:
		bad("--on-failure %q is not one of pause, continue, abort", o.OnFailure)
	}
	if _, err := window.ParseAll(o.Windows); err != nil {
		bad("--window: %v", err)
	}
	if o.PauseTimeout < Duration(time.Second) {
		bad("--pause-timeout must be at least 1s, got %s", o.PauseTimeout)
	}
	if o.CheckSeconds < 1 || o.CheckSeconds > 3600 {
		bad("--check-seconds must be between 1 and 3600, got %d", o.CheckSeconds)
	}
	if o.BootEstimate < 0 || o.DrainEstimate < 0 {
		bad("--boot-estimate and --drain-estimate must not be negative")
	}
	req := o.Request
	req.SetTarget("i-00000000")
	if err := req.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration = recycle.Duration

// ParseAge reads an age such as "30d", "12h", "1d12h" or "90m": Go durations plus
// d (24 h) and w (7 d).
func ParseAge(s string) (time.Duration, error) {
	orig := s
	var total time.Duration
	for _, unit := range []struct {
		suffix string
		d      time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		if i := strings.Index(s, unit.suffix); i >= 0 {
			n, err := strconv.Atoi(s[:i])
			if err != nil || n < 0 {
				return 0, fmt.Errorf("age %q: want a number before %q, e.g. 30d, 2w, 1d12h", orig, unit.suffix)
			}
			total += time.Duration(n) * unit.d
			s = s[i+1:]
		}
	}
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("age %q: want e.g. 30d, 2w, 36h or 1d12h", orig)
		}
		total += d
	}
	if total <= 0 {
		return 0, fmt.Errorf("age %q: must be positive", orig)
	}
	return total, nil
}
