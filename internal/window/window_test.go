package window

import (
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, spec string) Window {
	t.Helper()
	w, err := Parse(spec)
	if err != nil {
		t.Fatalf("Parse(%q): %v", spec, err)
	}
	return w
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseRefusesBadSpecsWithAHint(t *testing.T) {
	for spec, want := range map[string]string{
		"":                                 "want \"DAYS HH:MM-HH:MM [ZONE]\"",
		"Mon-Fri":                          "want \"DAYS HH:MM-HH:MM [ZONE]\"",
		"Funday 01:00-02:00":               "day \"Funday\"",
		"Mo 01:00-02:00":                   "day \"Mo\"",
		"Mon 01:00":                        "want HH:MM-HH:MM",
		"Mon 1:00-25:00":                   "end: \"25:00\"",
		"Mon 24:00-02:00":                  "start: \"24:00\"",
		"Mon 01:60-02:00":                  "start: \"01:60\"",
		"Mon 03:00-03:00":                  "for a whole day write 00:00-24:00",
		"Mon 01:00-02:00 Mars/Olympus":     "time zone \"Mars/Olympus\" is not in the tz database",
		"Mon 01:00-02:00 Local":            "time zone \"Local\"",
		"Mon 01:00-02:00 Europe/Berlin x":  "want \"DAYS HH:MM-HH:MM [ZONE]\"",
		"Mon,Xyz 01:00-02:00 Europe/Paris": "day \"Xyz\"",
	} {
		_, err := Parse(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", spec, err, want)
		}
	}
	if _, err := ParseAll([]string{"Mon 01:00-02:00", "bad", "Tue 25:00-26:00"}); err == nil || strings.Count(err.Error(), "window") != 2 {
		t.Errorf("ParseAll did not report both bad windows: %v", err)
	}
}

func TestParseDays(t *testing.T) {
	for spec, want := range map[string]string{
		"Mon-Fri 01:00-02:00":          "-MTWTF-",
		"Fri-Mon 01:00-02:00":          "SM---FS",
		"mon,wednesday,Fri 1:00-02:00": "-M-W-F-",
		"daily 01:00-02:00":            "SMTWTFS",
		"* 00:00-24:00":                "SMTWTFS",
		"Sat-Sun 01:00-02:00":          "S-----S",
		"Thurs 01:00-02:00":            "----T--",
	} {
		w := mustParse(t, spec)
		var got []byte
		for d, on := range w.Days {
			if on {
				got = append(got, "SMTWTFS"[d])
			} else {
				got = append(got, '-')
			}
		}
		if string(got) != want {
			t.Errorf("%q: days %s, want %s", spec, got, want)
		}
	}
	if s := mustParse(t, "Mon-Fri  01:00-05:00").String(); s != "Mon-Fri 01:00-05:00 UTC" {
		t.Errorf("String() = %q", s)
	}
}

func TestContainsAndNextAcrossMidnight(t *testing.T) {
	w := mustParse(t, "Fri 22:00-02:00 UTC")
	// 2026-11-27 is a Friday.
	for at, want := range map[string]bool{
		"2026-11-27T21:59:59Z": false,
		"2026-11-27T22:00:00Z": true,
		"2026-11-28T01:59:59Z": true, // Saturday, still Friday's window
		"2026-11-28T02:00:00Z": false,
		"2026-11-28T22:30:00Z": false, // Saturday evening: no window
	} {
		if got := w.Contains(utc(at)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", at, got, want)
		}
	}
	start, end := w.Next(utc("2026-11-28T02:00:00Z"))
	if !start.Equal(utc("2026-12-04T22:00:00Z")) || !end.Equal(utc("2026-12-05T02:00:00Z")) {
		t.Errorf("Next after the window = %s–%s, want the next Friday 22:00–02:00", start, end)
	}
	start, _ = w.Next(utc("2026-11-28T01:00:00Z"))
	if !start.Equal(utc("2026-11-27T22:00:00Z")) {
		t.Errorf("Next inside the window = %s, want the window it is in", start)
	}
}

// The clocks in Berlin go forward on 2026-03-29 (02:00 CET → 03:00 CEST) and back on
// 2026-10-25 (03:00 CEST → 02:00 CET). A window is local wall-clock time: it opens at
// 01:00 local on both sides of the change, whatever the UTC offset.
func TestWindowsFollowDaylightSavingTime(t *testing.T) {
	weekdays := mustParse(t, "Mon-Fri 01:00-05:00 Europe/Berlin")
	// From Saturday 2026-03-28 (CET, UTC+1) the next window is Monday 01:00 CEST (UTC+2).
	if got := (Set{weekdays}).NextOpen(utc("2026-03-28T10:00:00Z")); !got.Equal(utc("2026-03-29T23:00:00Z")) {
		t.Errorf("next open after the spring change = %s, want 2026-03-29T23:00:00Z (01:00 CEST)", got.UTC())
	}
	// The Friday before, it opened at 01:00 CET = 00:00Z.
	if got := (Set{weekdays}).NextOpen(utc("2026-03-26T23:30:00Z")); !got.Equal(utc("2026-03-27T00:00:00Z")) {
		t.Errorf("next open before the change = %s, want 2026-03-27T00:00:00Z (01:00 CET)", got.UTC())
	}
	sunday := mustParse(t, "Sun 01:00-05:00 Europe/Berlin")
	// Spring: 01:00 CET (00:00Z) to 05:00 CEST (03:00Z): three real hours.
	s, e := sunday.Next(utc("2026-03-28T12:00:00Z"))
	if !s.Equal(utc("2026-03-29T00:00:00Z")) || !e.Equal(utc("2026-03-29T03:00:00Z")) {
		t.Errorf("spring Sunday window %s–%s, want 00:00Z–03:00Z", s.UTC(), e.UTC())
	}
	if !sunday.Contains(utc("2026-03-29T02:59:00Z")) || sunday.Contains(utc("2026-03-29T03:00:00Z")) {
		t.Error("spring Sunday window does not end at 05:00 CEST")
	}
	// Autumn: 01:00 CEST (23:00Z Saturday) to 05:00 CET (04:00Z): five real hours,
	// the repeated hour 02:00–03:00 inside it both times.
	s, e = sunday.Next(utc("2026-10-24T12:00:00Z"))
	if !s.Equal(utc("2026-10-24T23:00:00Z")) || !e.Equal(utc("2026-10-25T04:00:00Z")) {
		t.Errorf("autumn Sunday window %s–%s, want 23:00Z–04:00Z", s.UTC(), e.UTC())
	}
	for _, at := range []string{"2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"} { // 02:30 CEST, 02:30 CET
		if !sunday.Contains(utc(at)) {
			t.Errorf("the repeated hour at %s is outside the window", at)
		}
	}
	// An end inside the repeated hour is its first occurrence (the clock first reads
	// 01:30 EDT, 05:30Z): the window does not reopen for the second pass through 01:xx.
	fold := mustParse(t, "Sun 00:00-01:30 America/New_York")
	if _, e := fold.Next(utc("2026-11-01T04:30:00Z")); !e.Equal(utc("2026-11-01T05:30:00Z")) || fold.Contains(utc("2026-11-01T06:15:00Z")) {
		t.Errorf("window ending in the repeated hour ends at %s (want 05:30Z) or reopens at 01:15 EST", e.UTC())
	}
	// A start inside the skipped hour (02:30 does not exist on 2026-03-29) opens at
	// the first instant after the gap that Go's time.Date gives for it: 03:30 CEST.
	gap := mustParse(t, "Sun 02:30-04:00 Europe/Berlin")
	if s, _ := gap.Next(utc("2026-03-28T12:00:00Z")); !s.Equal(utc("2026-03-29T01:30:00Z")) {
		t.Errorf("window starting in the skipped hour opens at %s, want 01:30Z (03:30 CEST)", s.UTC())
	}
}

// Against a brute-force definition (weekday and HH:MM read off the local clock),
// minute by minute over the two weeks around each change, in two zones. (The
// boundaries avoid the skipped and repeated hours, where "the local clock reads
// HH:MM" is not one instant; TestWindowsFollowDaylightSavingTime pins those.)
func TestOpenAndNextOpenMatchTheLocalClockMinuteByMinute(t *testing.T) {
	for _, tc := range []struct {
		spec string
		from string
	}{
		{"Mon-Fri 01:00-05:00 Europe/Berlin", "2026-03-22T00:00:00Z"},
		{"Sat,Sun 00:30-03:30 Europe/Berlin", "2026-10-18T00:00:00Z"},
		{"Sun 01:00-04:00 America/New_York", "2026-03-01T00:00:00Z"},
		{"Fri-Sun 23:00-03:30 America/New_York", "2026-10-25T00:00:00Z"},
	} {
		w := mustParse(t, tc.spec)
		set := Set{w}
		from := utc(tc.from)
		const minutes = 14 * 24 * 60
		open := make([]bool, minutes+1)
		for i := range open {
			open[i] = localClockOpen(w, from.Add(time.Duration(i)*time.Minute))
		}
		next := -1 // index of the next open minute at or after i
		for i := minutes; i >= 0; i-- {
			at := from.Add(time.Duration(i) * time.Minute)
			if open[i] {
				next = i
			}
			if got := set.Open(at); got != open[i] {
				t.Fatalf("%s: Open(%s) = %v, local clock says %v", tc.spec, at.In(w.Loc), got, open[i])
			}
			if next < 0 {
				continue
			}
			want := from.Add(time.Duration(next) * time.Minute)
			if got := set.NextOpen(at); !got.Equal(want) {
				t.Fatalf("%s: NextOpen(%s) = %s, want %s", tc.spec, at.In(w.Loc), got.In(w.Loc), want.In(w.Loc))
			}
		}
	}
}

// localClockOpen is the definition a person reads off a wall clock.
func localClockOpen(w Window, t time.Time) bool {
	l := t.In(w.Loc)
	c := Clock(l.Hour()*60 + l.Minute())
	if w.End > w.Start {
		return w.Days[l.Weekday()] && c >= w.Start && c < w.End
	}
	yesterday := (l.Weekday() + 6) % 7
	return (w.Days[l.Weekday()] && c >= w.Start) || (w.Days[yesterday] && c < w.End)
}

func TestSet(t *testing.T) {
	set, err := ParseAll([]string{"Mon-Fri 01:00-05:00 Europe/Berlin", "Sat 10:00-12:00 America/New_York"})
	if err != nil {
		t.Fatal(err)
	}
	// Saturday 2026-11-28 08:00Z: Berlin's next is Monday, New York's is today 15:00Z.
	if got := set.NextOpen(utc("2026-11-28T08:00:00Z")); !got.Equal(utc("2026-11-28T15:00:00Z")) {
		t.Errorf("NextOpen = %s, want the earlier window (15:00Z)", got.UTC())
	}
	at := utc("2026-11-28T16:00:00Z")
	if !set.Open(at) || !set.NextOpen(at).Equal(at) {
		t.Errorf("open set: Open=%v NextOpen=%s, want open now", set.Open(at), set.NextOpen(at))
	}
	if got := set.OpenUntil(at); !got.Equal(utc("2026-11-28T17:00:00Z")) {
		t.Errorf("OpenUntil = %s, want 17:00Z", got.UTC())
	}
	var none Set
	if !none.Open(at) || !none.NextOpen(at).Equal(at) || !none.OpenUntil(at).IsZero() {
		t.Error("an empty set must be always open with no end")
	}
	if got := set.Strings(); got[1] != "Sat 10:00-12:00 America/New_York" {
		t.Errorf("Strings() = %v", got)
	}
}
