package trigger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed five-field schedule ("minute hour day-of-month month
// day-of-week", the crontab(5) syntax: *, lists, ranges, steps, names of months and
// days), optionally prefixed by a time zone ("CRON_TZ=Europe/Berlin 0 2 * * Sat").
// Next is a pure function of the time it is given.
type Cron struct {
	spec                       string
	loc                        *time.Location
	min, hour, dom, month, dow uint64 // bit sets
	domStar, dowStar           bool
}

var (
	monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
	dayNames   = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
)

// ParseCron parses spec; the error says which field is wrong and how to write it.
func ParseCron(spec string) (*Cron, error) {
	c := &Cron{spec: spec, loc: time.UTC}
	fields := strings.Fields(spec)
	if len(fields) > 0 && (strings.HasPrefix(fields[0], "CRON_TZ=") || strings.HasPrefix(fields[0], "TZ=")) {
		_, name, _ := strings.Cut(fields[0], "=")
		loc, err := time.LoadLocation(name)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: time zone %q: %w (use a tz database name such as Europe/Berlin)", spec, name, err)
		}
		c.loc, fields = loc, fields[1:]
	}
	if len(fields) != 5 {
		return nil, fmt.Errorf("schedule %q: want 5 fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * Sat\"), got %d", spec, len(fields))
	}
	var err error
	parts := []struct {
		name     string
		lo, hi   int
		names    map[string]int
		into     *uint64
		wildcard *bool
	}{
		{"minute", 0, 59, nil, &c.min, nil},
		{"hour", 0, 23, nil, &c.hour, nil},
		{"day-of-month", 1, 31, nil, &c.dom, &c.domStar},
		{"month", 1, 12, monthNames, &c.month, nil},
		{"day-of-week", 0, 7, dayNames, &c.dow, &c.dowStar},
	}
	for i, p := range parts {
		if *p.into, err = parseField(fields[i], p.lo, p.hi, p.names); err != nil {
			return nil, fmt.Errorf("schedule %q: %s field %q: %w", spec, p.name, fields[i], err)
		}
		if p.wildcard != nil {
			*p.wildcard = strings.HasPrefix(fields[i], "*")
		}
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow |= 1
	}
	return c, nil
}

func parseField(f string, lo, hi int, names map[string]int) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(f, ",") {
		rng, stepS, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a positive number", stepS)
			}
			step = n
		}
		from, to := lo, hi
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if from, err = value(a, lo, hi, names); err != nil {
				return 0, err
			}
			to = from
			if isRange {
				if to, err = value(b, lo, hi, names); err != nil {
					return 0, err
				}
			} else if hasStep {
				to = hi
			}
			if to < from {
				return 0, fmt.Errorf("range %s runs backwards", rng)
			}
		}
		for v := from; v <= to; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

func value(s string, lo, hi int, names map[string]int) (int, error) {
	if n, ok := names[strings.ToLower(s)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not a value from %d to %d", s, lo, hi)
	}
	return n, nil
}

// String is the schedule as given.
func (c *Cron) String() string { return c.spec }

// Next is the first minute strictly after t that the schedule names, in its time
// zone. A wall time that a DST change skips never fires; one it repeats fires
// twice (as cron does). Zero if none within 5 years (e.g. "0 0 31 2 *").
func (c *Cron) Next(t time.Time) time.Time {
	t = t.In(c.loc).Truncate(time.Minute).Add(time.Minute)
	end := t.AddDate(5, 0, 0)
	for t.Before(end) {
		switch {
		case c.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, c.loc)
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, c.loc)
		case c.hour&(1<<uint(t.Hour())) == 0:
			t = t.Add(time.Duration(60-t.Minute()) * time.Minute) // the next local hour, whatever the offset
		case c.min&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

// dayMatches follows cron: when both day fields are restricted, either may match.
func (c *Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	switch {
	case c.domStar || c.dowStar:
		return dom && dow
	default:
		return dom || dow
	}
}
