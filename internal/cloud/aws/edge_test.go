package aws

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/recycler/recycler/internal/cloud"
)

// canned answers Query-protocol requests by Action from a script: each action's
// responses are used in order, the last one repeats.
type canned struct {
	mu     sync.Mutex
	script map[string][]reply
	seen   map[string]int
}

type reply struct {
	status int
	body   string
}

func (c *canned) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	action := r.Form.Get("Action")
	c.mu.Lock()
	replies := c.script[action]
	n := c.seen[action]
	c.seen[action]++
	c.mu.Unlock()
	if len(replies) == 0 {
		http.Error(w, "unscripted action "+action, http.StatusNotImplemented)
		return
	}
	rep := replies[min(n, len(replies)-1)]
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(rep.status)
	_, _ = w.Write([]byte(rep.body))
}

func asgError(code, msg string) string {
	return `<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>` + code + `</Code><Message>` + msg + `</Message></Error><RequestId>r</RequestId></ErrorResponse>`
}

func ec2Error(code, msg string) string {
	return `<Response><Errors><Error><Code>` + code + `</Code><Message>` + msg + `</Message></Error></Errors><RequestID>r</RequestID></Response>`
}

type noDelay struct{}

func (noDelay) BackoffDelay(int, error) (time.Duration, error) { return 0, nil }

func cannedProvider(t *testing.T, script map[string][]reply) (*Provider, *canned) {
	c := &canned{script: script, seen: map[string]int{}}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	cfg := sdkaws.Config{
		Region:       "ap-southeast-1",
		BaseEndpoint: sdkaws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	}
	p, err := NewFromConfig(cfg, Options{Backoff: noDelay{}, MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

const asgNS = `xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"`

// ResourceContention (HTTP 500) and ScalingActivityInProgress (HTTP 400) are retried
// by the SDK retryer; the caller sees one successful call.
func TestContentionIsRetried(t *testing.T) {
	p, c := cannedProvider(t, map[string][]reply{
		"CompleteLifecycleAction": {
			{500, asgError("ResourceContention", "You already have a pending update to an Auto Scaling resource.")},
			{400, asgError("ScalingActivityInProgress", "Scaling activity is in progress.")},
			{200, `<CompleteLifecycleActionResponse ` + asgNS + `><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>`},
		},
	})
	a := cloud.LifecycleAction{Group: "g", Hook: "drain", InstanceID: "i-0123456789abcdef0"}
	if err := p.CompleteLifecycleAction(context.Background(), a, cloud.LifecycleContinue); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if c.seen["CompleteLifecycleAction"] != 3 || p.Metrics().TotalCalls() != 1 || p.Metrics().TotalAttempts() != 3 {
		t.Errorf("server saw %d attempts, metrics calls/attempts %d/%d; want 3 attempts, 1 call",
			c.seen["CompleteLifecycleAction"], p.Metrics().TotalCalls(), p.Metrics().TotalAttempts())
	}
}

// A storm longer than the retryer's attempts ends in a typed, retryable error.
func TestThrottledAfterRetries(t *testing.T) {
	p, _ := cannedProvider(t, map[string][]reply{
		"DescribeAutoScalingGroups": {{400, asgError("Throttling", "Rate exceeded")}},
	})
	_, err := p.Group(context.Background(), "g")
	if !errors.Is(err, cloud.ErrThrottled) || !cloud.IsRetryable(err) {
		t.Errorf("group under a throttling storm: %v, want retryable ErrThrottled", err)
	}
}

// Completing an action that is already over is success; a heartbeat for it says gone.
func TestLifecycleActionAlreadyOver(t *testing.T) {
	over := reply{400, asgError("ValidationError", "No active Lifecycle Action found with instance ID i-0123456789abcdef0")}
	p, _ := cannedProvider(t, map[string][]reply{
		"CompleteLifecycleAction":        {over},
		"RecordLifecycleActionHeartbeat": {over},
	})
	a := cloud.LifecycleAction{Group: "g", Hook: "drain", InstanceID: "i-0123456789abcdef0"}
	if err := p.CompleteLifecycleAction(context.Background(), a, cloud.LifecycleAbandon); err != nil {
		t.Errorf("complete an action that is over: %v, want nil", err)
	}
	if err := p.RecordHeartbeat(context.Background(), a); !errors.Is(err, cloud.ErrNotFound) {
		t.Errorf("heartbeat of an action that is over: %v, want ErrNotFound", err)
	}
	if err := p.CompleteLifecycleAction(context.Background(), a, "MAYBE"); !errors.Is(err, cloud.ErrValidation) {
		t.Errorf("complete with result MAYBE: %v, want ErrValidation", err)
	}
}

// AWS fails DescribeInstances as a whole when one id is unknown; the provider drops
// the ids named in the message and asks once more.
func TestDescribeDropsUnknownIDs(t *testing.T) {
	p, c := cannedProvider(t, map[string][]reply{
		"DescribeInstances": {
			{400, ec2Error("InvalidInstanceID.NotFound", "The instance IDs 'i-0fedcba9876543210, i-0aaaaaaaaaaaaaaaa' do not exist")},
			{200, `<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item>
<instanceId>i-0123456789abcdef0</instanceId><imageId>ami-1</imageId><instanceState><code>16</code><name>running</name></instanceState>
<privateDnsName>ip-10-0-0-1.ap-southeast-1.compute.internal</privateDnsName><instanceType>m5.large</instanceType>
<launchTime>2026-01-01T00:00:00.000Z</launchTime><placement><availabilityZone>ap-southeast-1a</availabilityZone></placement>
<tagSet><item><key>aws:ec2launchtemplate:id</key><value>lt-1</value></item><item><key>aws:ec2launchtemplate:version</key><value>7</value></item></tagSet>
</item></instancesSet></item></reservationSet></DescribeInstancesResponse>`},
		},
		"DescribeAutoScalingInstances": {{200, `<DescribeAutoScalingInstancesResponse ` + asgNS + `><DescribeAutoScalingInstancesResult><AutoScalingInstances><member>
<InstanceId>i-0123456789abcdef0</InstanceId><AutoScalingGroupName>g</AutoScalingGroupName><AvailabilityZone>ap-southeast-1a</AvailabilityZone>
<LifecycleState>InService</LifecycleState><HealthStatus>HEALTHY</HealthStatus><ProtectedFromScaleIn>false</ProtectedFromScaleIn>
<LaunchTemplate><LaunchTemplateId>lt-1</LaunchTemplateId><LaunchTemplateName>workers</LaunchTemplateName><Version>$Latest</Version></LaunchTemplate>
</member></AutoScalingInstances></DescribeAutoScalingInstancesResult></DescribeAutoScalingInstancesResponse>`}},
	})
	got, err := p.Instances(context.Background(), "i-0fedcba9876543210", "i-0123456789abcdef0", "i-0aaaaaaaaaaaaaaaa")
	if err != nil {
		t.Fatalf("instances: %v", err)
	}
	if len(got) != 1 || got[0].ID != "i-0123456789abcdef0" || got[0].Group != "g" || got[0].AZ != "ap-southeast-1a" {
		t.Fatalf("instances = %+v, want only the existing one, in group g", got)
	}
	// The group said $Latest; the instance's own tag says which number it got.
	if lt := got[0].LaunchTemplate; lt == nil || lt.ResolvedVersion != 7 {
		t.Errorf("launch template %+v, want version resolved to 7 from the instance's tag", lt)
	}
	if c.seen["DescribeInstances"] != 2 || c.seen["DescribeAutoScalingInstances"] != 1 {
		t.Errorf("calls: %v, want 2 DescribeInstances and 1 DescribeAutoScalingInstances", c.seen)
	}
}

func TestCompareLaunch(t *testing.T) {
	lt := func(id string, v int64) *cloud.LaunchTemplate {
		return &cloud.LaunchTemplate{ID: id, Version: "$Latest", ResolvedVersion: v}
	}
	mixed := cloud.Group{Name: "g", MixedInstances: &cloud.MixedInstances{
		LaunchTemplate: *lt("lt-base", 4),
		Overrides: []cloud.Override{
			{InstanceType: "m5.large"},
			{InstanceType: "m6g.large", LaunchTemplate: lt("lt-arm", 2)},
		},
	}}
	for _, c := range []struct {
		name    string
		inst    cloud.Instance
		g       cloud.Group
		drifted bool
	}{
		{"same version", cloud.Instance{LaunchTemplate: lt("lt-a", 3)}, cloud.Group{LaunchTemplate: lt("lt-a", 3)}, false},
		{"older version", cloud.Instance{LaunchTemplate: lt("lt-a", 2)}, cloud.Group{LaunchTemplate: lt("lt-a", 3)}, true},
		{"other template", cloud.Instance{LaunchTemplate: lt("lt-b", 3)}, cloud.Group{LaunchTemplate: lt("lt-a", 3)}, true},
		{"launch configuration → template", cloud.Instance{LaunchConfiguration: "lc-1"}, cloud.Group{LaunchTemplate: lt("lt-a", 1)}, true},
		{"same launch configuration", cloud.Instance{LaunchConfiguration: "lc-1"}, cloud.Group{LaunchConfiguration: "lc-1"}, false},
		{"other launch configuration", cloud.Instance{LaunchConfiguration: "lc-1"}, cloud.Group{LaunchConfiguration: "lc-2"}, true},
		{"mixed: base template current", cloud.Instance{InstanceType: "m5.large", LaunchTemplate: lt("lt-base", 4)}, mixed, false},
		{"mixed: base template old", cloud.Instance{InstanceType: "m5.large", LaunchTemplate: lt("lt-base", 3)}, mixed, true},
		{"mixed: override template current", cloud.Instance{InstanceType: "m6g.large", LaunchTemplate: lt("lt-arm", 2)}, mixed, false},
		{"mixed: override type on base template", cloud.Instance{InstanceType: "m6g.large", LaunchTemplate: lt("lt-base", 4)}, mixed, true},
	} {
		d := compareLaunch(c.inst, c.g)
		if d.Drifted != c.drifted || (d.Drifted && !strings.Contains(d.Reason, "group uses")) {
			t.Errorf("%s: %+v, want drifted=%v with a reason", c.name, d, c.drifted)
		}
	}
}

func okReply(action string) reply {
	return reply{200, `<` + action + `Response ` + asgNS + `><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></` + action + `Response>`}
}

// A Surge that fails before any instance entered standby undoes its own MaxSize raise
// and AZRebalance suspension, so a repeated Surge does not mistake them for someone
// else's and leave them behind.
func TestFailedSurgeUndoesItsSetup(t *testing.T) {
	p, c := cannedProvider(t, map[string][]reply{
		"DescribeAutoScalingGroups": {{200, `<DescribeAutoScalingGroupsResponse ` + asgNS + `><DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
<AutoScalingGroupName>g</AutoScalingGroupName><MinSize>1</MinSize><MaxSize>1</MaxSize><DesiredCapacity>1</DesiredCapacity>
<Instances><member><InstanceId>i-0123456789abcdef0</InstanceId><AvailabilityZone>ap-southeast-1a</AvailabilityZone>
<LifecycleState>InService</LifecycleState><HealthStatus>Healthy</HealthStatus></member></Instances>
</member></AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>`}},
		"DescribeScalingActivities": {{200, `<DescribeScalingActivitiesResponse ` + asgNS + `><DescribeScalingActivitiesResult><Activities/></DescribeScalingActivitiesResult></DescribeScalingActivitiesResponse>`}},
		"UpdateAutoScalingGroup":    {okReply("UpdateAutoScalingGroup")},
		"SuspendProcesses":          {okReply("SuspendProcesses")},
		"ResumeProcesses":           {okReply("ResumeProcesses")},
		"EnterStandby":              {{400, asgError("ValidationError", "The instance i-0123456789abcdef0 is not in InService.")}},
		"CreateOrUpdateTags":        {okReply("CreateOrUpdateTags")},
		"DeleteTags":                {okReply("DeleteTags")},
		"CreateTags":                {{200, `<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>true</return></CreateTagsResponse>`}},
	})
	_, err := p.Surge(context.Background(), "g", []string{"i-0123456789abcdef0"}, cloud.SurgeOptions{ExecutionID: "exec-1", AllowRaiseMax: true})
	if !errors.Is(err, cloud.ErrValidation) {
		t.Fatalf("surge with a refused EnterStandby: %v, want ErrValidation", err)
	}
	if c.seen["UpdateAutoScalingGroup"] != 2 || c.seen["SuspendProcesses"] != 1 || c.seen["ResumeProcesses"] != 1 || c.seen["DeleteTags"] != 1 {
		t.Errorf("calls %v: want MaxSize raised and restored (2 updates), AZRebalance suspended and resumed, the group's records removed", c.seen)
	}
}
