package sim

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

func adminDo(t *testing.T, h *harness, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, h.sim.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// TestAdminEndpoint: another process can seed groups, set faults and read the call counts.
func TestAdminEndpoint(t *testing.T) {
	h := newHarness(t, Options{})
	var st Status
	if code := adminDo(t, h, http.MethodPost, "/_sim/groups", `{"name":"ng","min":1,"max":4,"desired":2,"instanceType":"m6i.large"}`, &st); code != http.StatusCreated {
		t.Fatalf("seed group: HTTP %d", code)
	}
	if len(st.Groups) != 1 || len(st.Groups[0].Instances) != 2 || st.Groups[0].Instances[0].InstanceType != "m6i.large" {
		t.Fatalf("status after seeding: %+v", st)
	}
	var bad map[string]string
	if code := adminDo(t, h, http.MethodPut, "/_sim/faults", `{"throttleRate": 2}`, &bad); code != http.StatusBadRequest || !strings.Contains(bad["error"], "throttleRate") {
		t.Fatalf("invalid faults accepted: HTTP %d %v", code, bad)
	}
	if code := adminDo(t, h, http.MethodPut, "/_sim/faults", `{"throttle": 0.5}`, &bad); code != http.StatusBadRequest {
		t.Fatalf("misspelt field accepted: HTTP %d", code)
	}
	var f Faults
	if code := adminDo(t, h, http.MethodPut, "/_sim/faults", `{"throttleRate": 1, "bootDelay": "90s"}`, &f); code != http.StatusOK || f.ThrottleRate != 1 {
		t.Fatalf("set faults: HTTP %d %+v", code, f)
	}
	_, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"ng"}}, func(o *autoscaling.Options) { o.RetryMaxAttempts = 2 })
	wantAPIError(t, err, "Throttling", "Rate exceeded")
	adminDo(t, h, http.MethodPut, "/_sim/faults", `{}`, &f)
	if _, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"ng"}}); err != nil {
		t.Fatal(err)
	}
	var calls map[string]int
	adminDo(t, h, http.MethodGet, "/_sim/calls", "", &calls)
	if calls["autoscaling:DescribeAutoScalingGroups"] != 3 || calls["fault:throttled"] != 2 {
		t.Fatalf("calls: %v", calls)
	}
	adminDo(t, h, http.MethodDelete, "/_sim/calls", "", nil)
	if len(h.sim.Calls()) != 0 {
		t.Fatalf("calls not reset: %v", h.sim.Calls())
	}
	if code := adminDo(t, h, http.MethodPost, "/_sim/shutdown", "", &bad); code != http.StatusConflict {
		t.Fatalf("shutdown without sim up: HTTP %d", code)
	}
	if code := adminDo(t, h, http.MethodGet, "/_sim/nope", "", &bad); code != http.StatusNotFound {
		t.Fatalf("unknown admin path: HTTP %d", code)
	}
}
