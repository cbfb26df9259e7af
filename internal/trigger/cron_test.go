package trigger

import (
	"strings"
	"testing"
	"time"
)

func TestCronNext(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	utc := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, tc := range []struct{ spec, after, want string }{
		{"0 2 * * Sat", "2026-01-02T10:00:00Z", "2026-01-03T02:00:00Z"}, // a Friday → Saturday
		{"*/15 * * * *", "2026-01-02T10:07:30Z", "2026-01-02T10:15:00Z"},
		{"*/15 * * * *", "2026-01-02T10:15:00Z", "2026-01-02T10:30:00Z"}, // strictly after
		{"0 9 1 * Mon", "2026-01-02T10:00:00Z", "2026-01-05T09:00:00Z"},  // day-of-month OR day-of-week
		{"0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"0 1-3/2 * jan-mar sun", "2026-01-01T00:00:00Z", "2026-01-04T01:00:00Z"},
		{"0 0 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"}, // 7 = Sunday
		// Berlin: 02:30 does not exist on 2026-03-29 (clocks jump 02:00 → 03:00).
		{"CRON_TZ=Europe/Berlin 30 2 * * *", "2026-03-28T12:00:00Z", "2026-03-30T00:30:00Z"},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"}, // 03:00 CEST = 01:00 UTC
		{"CRON_TZ=Europe/Berlin 0 3 * * *", "2026-10-24T12:00:00Z", "2026-10-25T02:00:00Z"}, // 03:00 CET = 02:00 UTC
	} {
		c, err := ParseCron(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if got := c.Next(utc(tc.after)); !got.Equal(utc(tc.want)) {
			t.Errorf("%s after %s = %s, want %s", tc.spec, tc.after, got.UTC().Format(time.RFC3339), tc.want)
		}
	}
	// Fall back: 02:30 happens twice in Berlin on 2026-10-25 and fires twice.
	c, _ := ParseCron("CRON_TZ=Europe/Berlin 30 2 * * *")
	first := c.Next(utc("2026-10-24T23:00:00Z"))
	second := c.Next(first)
	if first.In(berlin).Hour() != 2 || second.Sub(first) != time.Hour {
		t.Errorf("fall back: %s then %s, want 02:30 CEST then 02:30 CET", first, second)
	}
	if c, _ := ParseCron("0 0 31 2 *"); !c.Next(utc("2026-01-01T00:00:00Z")).IsZero() {
		t.Error("31 February fired")
	}
}

func TestCronRefusesBadSpecs(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"0 2 * *", "want 5 fields"},
		{"61 * * * *", "minute field"},
		{"0 2 * * Funday", "day-of-week field"},
		{"0 5-2 * * *", "backwards"},
		{"*/0 * * * *", "step"},
		{"CRON_TZ=Mars/Olympus 0 2 * * *", "time zone"},
	} {
		if _, err := ParseCron(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func FuzzCron(f *testing.F) {
	for _, s := range []string{"0 2 * * Sat", "*/15 * * * *", "CRON_TZ=Europe/Berlin 30 2 * * *", "0 0 31 2 *", "1-5/2,7 * 1 jan mon-fri"} {
		f.Add(s)
	}
	at := time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, spec string) {
		c, err := ParseCron(spec)
		if err != nil {
			return
		}
		if n := c.Next(at); !n.IsZero() && !n.After(at) {
			t.Fatalf("%q: Next(%s) = %s is not after it", spec, at, n)
		}
	})
}
