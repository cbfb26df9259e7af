package cloud_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/cloud"
)

func TestValidateInstanceID(t *testing.T) {
	for id, ok := range map[string]bool{
		"i-0123abcd":                   true,
		"i-0123456789abcdef0":          true,
		"i-0123456789abcdef":           false, // 16 digits
		"i-0123abc":                    false,
		"i-0123ABCD":                   false,
		"I-0123abcd":                   false,
		"i-0123abcg":                   false,
		"":                             false,
		" i-0123abcd":                  false,
		"aws:///eu-west-1a/i-0123abcd": false,
	} {
		err := cloud.ValidateInstanceID(id)
		if (err == nil) != ok {
			t.Errorf("ValidateInstanceID(%q) = %v, want ok=%v", id, err, ok)
		}
		if err != nil && !errors.Is(err, cloud.ErrValidation) {
			t.Errorf("ValidateInstanceID(%q) = %v, not ErrValidation", id, err)
		}
	}
	if err := cloud.ValidateInstanceIDs([]string{"i-0123abcd", "i-0123abcd"}); !errors.Is(err, cloud.ErrValidation) {
		t.Errorf("duplicate ids: %v, want ErrValidation", err)
	}
	if err := cloud.ValidateInstanceIDs(nil); !errors.Is(err, cloud.ErrValidation) {
		t.Errorf("no ids: %v, want ErrValidation", err)
	}
}

func TestErrorClasses(t *testing.T) {
	lf := &cloud.LaunchFailedError{Group: "g", Activity: cloud.ScalingActivity{ID: "a", Status: "Failed", StatusMessage: "no capacity"}}
	for _, c := range []struct {
		err       error
		name      string
		retryable bool
	}{
		{fmt.Errorf("x: %w", cloud.ErrNotFound), "NotFound", false},
		{fmt.Errorf("x: %w", cloud.ErrValidation), "Validation", false},
		{fmt.Errorf("x: %w", cloud.ErrNoHeadroom), "NoHeadroom", false},
		{fmt.Errorf("x: %w", cloud.ErrNotInGroup), "NotInGroup", false},
		{fmt.Errorf("x: %w", lf), "LaunchFailed", false},
		{fmt.Errorf("x: %w", cloud.ErrThrottled), "Throttled", true},
		{fmt.Errorf("x: %w", &cloud.NotYetError{InstanceID: "i-0123abcd", State: "EnteringStandby", Waiting: "wait for Standby"}), "NotYet", true},
		{fmt.Errorf("x: %w", &cloud.RetryableError{Err: errors.New("503")}), "Retryable", true},
		{errors.New("boom"), "Unknown", false},
	} {
		if got := cloud.ErrorName(c.err); got != c.name {
			t.Errorf("ErrorName(%v) = %q, want %q", c.err, got, c.name)
		}
		if got := cloud.IsRetryable(c.err); got != c.retryable {
			t.Errorf("IsRetryable(%v) = %v, want %v", c.err, got, c.retryable)
		}
	}
	if !errors.Is(lf, cloud.ErrLaunchFailed) {
		t.Errorf("LaunchFailedError is not ErrLaunchFailed")
	}
}

// A SurgeRecord crosses workflow steps as JSON (ASL state data): it must survive the trip.
func TestSurgeRecordJSON(t *testing.T) {
	in := cloud.SurgeRecord{
		Group: "g", Instances: []cloud.SurgedInstance{{ID: "i-0123abcd", Method: cloud.SurgeStandby}},
		Snapshot: []string{"i-0123abcd", "i-4567abcd"}, DesiredBefore: 2, MaxRaised: true, MaxBefore: 2, MaxAfter: 3,
		SuspendedAZRebalance: true, ActivitiesBefore: "a-1", StartedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out cloud.SurgeRecord
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
	if !strings.Contains(string(b), `"snapshot":["i-0123abcd","i-4567abcd"]`) {
		t.Errorf("JSON %s: want lowerCamel field names", b)
	}
}

// The one instance-id pattern, unanchored, finds whole ids in a message (17 digits
// before 8: not the first 8 digits of a long id).
func TestInstanceIDPatternFindsWholeIDs(t *testing.T) {
	re := regexp.MustCompile(cloud.InstanceIDPattern)
	if got := re.FindAllString("instances i-0123456789abcdef0 and i-89abcdef are not InService", -1); len(got) != 2 || got[0] != "i-0123456789abcdef0" || got[1] != "i-89abcdef" {
		t.Errorf("found %q", got)
	}
}
