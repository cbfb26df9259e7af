// Package window is maintenance windows with time zones: "Mon-Fri 01:00-05:00
// Europe/Berlin". A window is wall-clock time in its zone, so it follows daylight
// saving time: 01:00–05:00 stays 01:00–05:00 local on the day the clocks change (and
// lasts three or five real hours then). Every answer is a pure function of the
// instant it is asked about; callers pass the injected clock's now.
package window

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // the Go tz database, so zones resolve the same on every machine
)

// Window is one recurring window: on the given weekdays, from Start to End (local
// time of Loc). End ≤ Start means the window ends the next day (22:00-02:00); the
// weekday is the day it starts.
type Window struct {
	Days  [7]bool // indexed by time.Weekday
	Start Clock
	End   Clock
	Loc   *time.Location
	spec  string
}

// Clock is a time of day in minutes since midnight; 24:00 is 1440.
type Clock int

func (c Clock) String() string { return fmt.Sprintf("%02d:%02d", int(c)/60, int(c)%60) }

// Parse reads "DAYS HH:MM-HH:MM [ZONE]". DAYS is a day (Mon), a range (Mon-Fri,
// Fri-Mon wraps), a comma list of either (Mon,Wed,Fri-Sat), or "daily" / "*". ZONE
// is a tz database name (Europe/Berlin, America/New_York, UTC); without one, UTC.
func Parse(spec string) (Window, error) {
	fields := strings.Fields(spec)
	if len(fields) < 2 || len(fields) > 3 {
		return Window{}, fmt.Errorf("window %q: want \"DAYS HH:MM-HH:MM [ZONE]\", e.g. \"Mon-Fri 01:00-05:00 Europe/Berlin\"", spec)
	}
	w := Window{Loc: time.UTC, spec: strings.Join(fields, " ")}
	var err error
	if w.Days, err = parseDays(fields[0]); err != nil {
		return Window{}, fmt.Errorf("window %q: %w", spec, err)
	}
	start, end, ok := strings.Cut(fields[1], "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: times %q: want HH:MM-HH:MM, e.g. 01:00-05:00", spec, fields[1])
	}
	if w.Start, err = parseClock(start, false); err != nil {
		return Window{}, fmt.Errorf("window %q: start: %w", spec, err)
	}
	if w.End, err = parseClock(end, true); err != nil {
		return Window{}, fmt.Errorf("window %q: end: %w", spec, err)
	}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("window %q: start and end are both %s: for a whole day write 00:00-24:00", spec, w.Start)
	}
	if len(fields) == 3 {
		if w.Loc, err = time.LoadLocation(fields[2]); err != nil || fields[2] == "Local" || fields[2] == "" {
			return Window{}, fmt.Errorf("window %q: time zone %q is not in the tz database (examples: UTC, Europe/Berlin, America/New_York)", spec, fields[2])
		}
	}
	return w, nil
}

func parseDays(s string) ([7]bool, error) {
	var days [7]bool
	if s == "*" || strings.EqualFold(s, "daily") {
		for i := range days {
			days[i] = true
		}
		return days, nil
	}
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, err := parseDay(from)
		if err != nil {
			return days, err
		}
		b := a
		if isRange {
			if b, err = parseDay(to); err != nil {
				return days, err
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			days[d] = true
			if d == b {
				break
			}
		}
	}
	return days, nil
}

func parseDay(s string) (int, error) {
	l := strings.ToLower(s)
	for i := range 7 {
		if len(l) >= 3 && strings.HasPrefix(strings.ToLower(time.Weekday(i).String()), l) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("day %q: use Mon, Tue, Wed, Thu, Fri, Sat, Sun (or full names), ranges such as Mon-Fri, or daily", s)
}

func parseClock(s string, end bool) (Clock, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return 0, fmt.Errorf("%q: want HH:MM (24-hour clock)", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && (mm != 0 || !end)) {
		return 0, fmt.Errorf("%q: want HH:MM between 00:00 and 23:59 (24:00 only as an end)", s)
	}
	return Clock(hh*60 + mm), nil
}

// String is the window as it was written (normalised spacing), with its zone.
func (w Window) String() string {
	if strings.Count(w.spec, " ") == 1 {
		return w.spec + " UTC"
	}
	return w.spec
}

// at is the instant of clock c on the local date (y, m, d) in w's zone. A clock time
// that does not exist that day (skipped by a DST change) is read as Go's time.Date
// normalises it: the same wall-clock offset after the change (02:30 → 03:30).
func (w Window) at(y int, m time.Month, d int, c Clock) time.Time {
	return time.Date(y, m, d, int(c)/60, int(c)%60, 0, 0, w.Loc)
}

// occurrence returns the window that starts on the local date of day (in w's zone),
// and whether there is one that day.
func (w Window) occurrence(day time.Time) (start, end time.Time, ok bool) {
	y, m, d := day.Date()
	if !w.Days[time.Date(y, m, d, 12, 0, 0, 0, w.Loc).Weekday()] {
		return time.Time{}, time.Time{}, false
	}
	start = w.at(y, m, d, w.Start)
	if w.End > w.Start {
		end = w.at(y, m, d, w.End)
	} else {
		end = w.at(y, m, d+1, w.End)
	}
	return start, end, true
}

// scan calls fn for every occurrence whose start is on the local day before t's up
// to 8 days after it, in order, until fn returns true.
func (w Window) scan(t time.Time, fn func(start, end time.Time) bool) {
	local := t.In(w.Loc)
	y, m, d := local.Date()
	for i := -1; i <= 8; i++ {
		day := time.Date(y, m, d+i, 12, 0, 0, 0, w.Loc)
		if s, e, ok := w.occurrence(day); ok && e.After(s) && fn(s, e) {
			return
		}
	}
}

// Contains reports whether t is inside an occurrence of the window: start ≤ t < end.
func (w Window) Contains(t time.Time) bool {
	in := false
	w.scan(t, func(s, e time.Time) bool {
		in = !t.Before(s) && t.Before(e)
		return in
	})
	return in
}

// Next returns the occurrence that contains t, or else the next one to start after
// t: its start (never before t when t is outside) and end.
func (w Window) Next(t time.Time) (start, end time.Time) {
	w.scan(t, func(s, e time.Time) bool {
		if t.Before(e) {
			start, end = s, e
			return true
		}
		return false
	})
	return start, end
}

// Set is the windows a rollout may start recycles in; an empty Set is always open.
type Set []Window

// ParseAll parses every spec; the error lists every bad one.
func ParseAll(specs []string) (Set, error) {
	var set Set
	var errs []error
	for _, s := range specs {
		w, err := Parse(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		set = append(set, w)
	}
	return set, errors.Join(errs...)
}

// Open reports whether t is inside one of the windows (always true for no windows).
func (s Set) Open(t time.Time) bool {
	if len(s) == 0 {
		return true
	}
	for _, w := range s {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// NextOpen returns the earliest instant ≥ t at which the set is open: t itself when
// it is open now, else the start of the next window (always after t).
func (s Set) NextOpen(t time.Time) time.Time {
	if s.Open(t) {
		return t
	}
	var best time.Time
	for _, w := range s {
		if st, _ := w.Next(t); !st.IsZero() && (best.IsZero() || st.Before(best)) {
			best = st
		}
	}
	return best
}

// OpenUntil returns when the window that contains t closes (the latest end among
// the windows open at t), or the zero time when none is open or there are none.
func (s Set) OpenUntil(t time.Time) time.Time {
	var until time.Time
	for _, w := range s {
		if st, e := w.Next(t); !st.IsZero() && !t.Before(st) && e.After(until) {
			until = e
		}
	}
	return until
}

// Strings returns the windows as written.
func (s Set) Strings() []string {
	out := make([]string, len(s))
	for i, w := range s {
		out[i] = w.String()
	}
	return out
}
