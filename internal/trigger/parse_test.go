package trigger

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/recycle"
)

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSamples(t *testing.T) {
	for _, tc := range []struct {
		file      string
		kind      Kind
		id        string
		instances []string
		group     string
	}{
		{"terminate-eventbridge.json", KindLifecycleTerminate, "hook:42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09", []string{"i-0123456789abcdef0"}, ""},
		// The same action delivered by the hook's own notification deduplicates with the event.
		{"terminate-notification.json", KindLifecycleTerminate, "hook:42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09", []string{"i-0123456789abcdef0"}, ""},
		{"alarm-eventbridge.json", KindAlarm, "alarm:c4c1c1c9-6542-e61b-6ef0-8c4d36933a92", []string{"i-12345678901234567"}, ""},
		{"alarm-sns.json", KindAlarm, "alarm:22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", []string{"i-0123456789abcdef0"}, ""},
		{"alarm-group-raw.json", KindAlarm, "alarm:ng-1-cpu@2021-01-13T00:12:37.214+0000", nil, "ng-1"},
		{"health-eventbridge.json", KindScheduledChange, "health:7bf73129-1428-4cd3-a780-95db273d1602", []string{"i-0123456789abcdef0"}, ""},
		{"rebalance-eventbridge.json", KindRebalance, "rebalance:12345678-1234-1234-1234-123456789012", []string{"i-1234567890abcdef0"}, ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			ev, err := Parse(sample(t, tc.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if ev.Kind != tc.kind || ev.ID != tc.id || !slices.Equal(ev.InstanceIDs, tc.instances) || ev.Group != tc.group {
				t.Errorf("got kind %s id %s instances %v group %q; want %s %s %v %q", ev.Kind, ev.ID, ev.InstanceIDs, ev.Group, tc.kind, tc.id, tc.instances, tc.group)
			}
			if ev.Time.IsZero() {
				t.Errorf("event time not read")
			}
		})
	}
}

func TestLifecycleRequestIsDrainOnlyWithTheAction(t *testing.T) {
	ev, err := Parse(sample(t, "terminate-eventbridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	def := recycle.NewRequest("x")
	def.AllowRaiseMax = true
	r := ev.Request(def, ev.InstanceIDs[0])
	if err := r.Validate(); err != nil {
		t.Fatalf("request does not validate: %v", err)
	}
	want := recycle.LifecycleHook{Group: "my-asg", Name: "my-lifecycle-hook", Token: "42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09",
		StartedAt: time.Date(2021, 1, 13, 0, 12, 37, 214e6, time.UTC)}
	if r.LifecycleHook == nil || *r.LifecycleHook != want {
		t.Errorf("hook = %+v, want %+v", r.LifecycleHook, want)
	}
	if !r.NoSurge || r.AllowRaiseMax {
		t.Errorf("NoSurge=%v AllowRaiseMax=%v: a hook recycle must not surge (the group replaces the instance)", r.NoSurge, r.AllowRaiseMax)
	}
	if r.InstanceID != "i-0123456789abcdef0" || r.Trigger == nil || r.Trigger.Kind != string(KindLifecycleTerminate) {
		t.Errorf("target %q trigger %+v", r.InstanceID, r.Trigger)
	}
}

func TestParseIgnored(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"launch hook", string(sample(t, "launch-eventbridge.json")), "launch lifecycle action"},
		{"test notification", string(sample(t, "test-notification.json")), "test notification"},
		{"alarm back to OK", string(sample(t, "alarm-ok-eventbridge.json")), "went to OK"},
		{"other event type", `{"version":"0","id":"a","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","time":"2020-10-26T14:14:14Z","detail":{"instance-id":"i-1234567890abcdef0","state":"running"}}`, "not a trigger"},
		{"unknown shape", `{"hello":"world"}`, "unknown message shape"},
		{"alarm without dimensions", `{"AlarmName":"x","NewStateValue":"ALARM","Trigger":{"Dimensions":[]}}`, "names neither"},
		{"health, not EC2", `{"version":"0","id":"h","detail-type":"AWS Health Event","source":"aws.health","time":"2023-01-27T01:43:21Z","detail":{"service":"RDS","eventTypeCategory":"scheduledChange"}}`, "only EC2 scheduled changes"},
		{"SNS subscription confirmation", `{"Type":"SubscriptionConfirmation","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"You have chosen to subscribe"}`, "SubscriptionConfirmation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			if !IsIgnored(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ignored containing %q", err, tc.want)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	term := string(sample(t, "terminate-eventbridge.json"))
	for _, tc := range []struct{ name, body, want string }{
		{"not JSON", `hello`, "not a JSON object"},
		{"JSON array", `[1,2]`, "not a JSON object"},
		{"wrong type of id", `{"version":"0","id":7,"detail-type":"x","source":"y","detail":{}}`, "field id: want string"},
		{"wrong type in detail", strings.Replace(term, `"EC2InstanceId": "i-0123456789abcdef0"`, `"EC2InstanceId": 12`, 1), "EC2InstanceId"},
		{"bad time", strings.Replace(term, `"2021-01-13T00:12:37.214Z"`, `"yesterday"`, 1), "time"},
		{"token missing", strings.Replace(term, `"LifecycleActionToken": "42c5f9b4-6e1d-4aa0-a6a5-ba2de67c7b09",`, ``, 1), "missing LifecycleActionToken"},
		{"bad instance id", strings.Replace(term, `i-0123456789abcdef0`, `i-xyz`, 1), "instance id"},
		{"unknown transition", strings.Replace(term, `autoscaling:EC2_INSTANCE_TERMINATING`, `autoscaling:EC2_INSTANCE_EXPLODING`, 1), "LifecycleTransition"},
		{"no detail", `{"version":"0","id":"a","detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling","time":"2020-10-26T14:14:14Z"}`, "detail is missing"},
		{"SNS message not JSON", `{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"oops"}`, "Message is not a JSON object"},
		{"SNS in SNS", `{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"{\"Type\":\"Notification\",\"MessageId\":\"n\",\"TopicArn\":\"t\",\"Message\":\"{}\"}"}`, "inside an SNS envelope"},
		{"trailing data", term + `{}`, "not a JSON object"},
		{"alarm dimension type", `{"AlarmName":"x","NewStateValue":"ALARM","Trigger":{"Dimensions":[{"name":"InstanceId","value":5}]}}`, "want string"},
		{"too large", `{"a":"` + strings.Repeat("x", MaxMessageBytes) + `"}`, "256 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			if !IsMalformed(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want malformed containing %q", err, tc.want)
			}
		})
	}
}

func TestDedupEventsAndCooldown(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	d := NewDedup(clk, time.Hour, 30*time.Minute)
	if d.SeenEvent("e1") {
		t.Fatal("unseen event reported seen")
	}
	d.MarkEvent("e1")
	if !d.SeenEvent("e1") {
		t.Fatal("marked event not seen")
	}
	clk.Step(time.Hour)
	if d.SeenEvent("e1") {
		t.Fatal("event still remembered after its TTL")
	}
	d.MarkNode("n1", clk.Now())
	clk.Step(29 * time.Minute)
	if on, until := d.CoolingDown("n1"); !on || !until.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("cooling down = %v until %v, want true until +1m", on, until)
	}
	clk.Step(time.Minute)
	if on, _ := d.CoolingDown("n1"); on {
		t.Fatal("cool-down did not end")
	}
}

// Every parser is reached from Parse; the fuzz target checks that no input panics,
// that every answer is exactly one of event/ignored/malformed, and that an event is
// usable (a kind, an id, a target).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, file := range files {
		f.Add(sample(f, filepath.Base(file)))
	}
	f.Add([]byte(`{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"{\"detail-type\":\"x\",\"source\":\"y\"}"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Parse(body)
		switch {
		case err == nil:
			if ev.Kind == "" || ev.ID == "" || (len(ev.InstanceIDs) == 0 && ev.Group == "") {
				t.Fatalf("event without kind, id or target: %+v", ev)
			}
			if ev.Kind == KindLifecycleTerminate && (ev.Hook == nil || ev.Hook.Token == "" || len(ev.InstanceIDs) != 1) {
				t.Fatalf("lifecycle event without its action: %+v", ev)
			}
			r := ev.Request(recycle.NewRequest("x"), firstOr(ev.InstanceIDs, "i-0123456789abcdef0"))
			if err := r.Validate(); err != nil {
				t.Fatalf("event %+v gives an invalid request: %v", ev, err)
			}
		case IsIgnored(err) == IsMalformed(err):
			t.Fatalf("error is neither (or both) ignored and malformed: %v", err)
		}
	})
}

func firstOr(l []string, def string) string {
	if len(l) > 0 {
		return l[0]
	}
	return def
}
