package aws_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/recycler/recycler/internal/cloud"
	awscloud "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/cloud/cloudtest"
	"github.com/recycler/recycler/internal/testenv"
)

// motoSkips are the contract cases moto cannot answer as AWS documents; each is
// recorded with its source in docs/aws-semantics.md ("moto").
var motoSkips = map[string]string{
	"LaunchFailureReported":               "moto cannot fail a launch (no fault injection) and DescribeScalingActivities always answers an empty list",
	"SurgeIsIdempotent":                   "moto launches an instance InService at once (AWS: Pending while it boots), so a repeated Surge sees the replacement as an old instance; the workflow passes Resolve's snapshot instead (recycle.Tasks.surge)",
	"LifecycleHookPath":                   "moto keeps no lifecycle actions: a terminate hook does not hold the instance in Terminating:Wait, and RecordLifecycleActionHeartbeat/CompleteLifecycleAction are not implemented",
	"LostAnswersAreNotRepeated":           "moto puts a Standby instance in Standby again (AWS refuses: not InService), so the SDK's retry of an EnterStandby whose answer was lost launches a second replacement",
	"AutoscalerLaunchIsNotTheReplacement": "DescribeScalingActivities always answers an empty list, so the replacement can only be found by elimination, which an autoscaler's launch makes ambiguous (the recycle then waits and rolls back rather than guess)",
}

// TestContractMoto runs the cloud contract suite against moto, an AWS
// implementation nobody here wrote, through the same unmodified SDK clients.
func TestContractMoto(t *testing.T) {
	m := testenv.MotoFor(t)
	t.Logf("moto %s at %s", m.Version, m.URL)
	proxy := newThrottlingProxy(t, m.URL)
	var seq atomic.Int64
	cloudtest.Run(t, func(tb testing.TB) (cloud.Provider, cloudtest.Harness) {
		for name, why := range motoSkips {
			if strings.HasSuffix(tb.Name(), "/"+name) {
				tb.Skipf("moto: %s", why)
			}
		}
		return newMotoEnv(tb, proxy, &seq)
	})
}

// motoEnv is the cloudtest.Harness over moto. moto has no clock: instances are
// InService the moment they launch, so Advance only lets real time pass a little.
type motoEnv struct {
	prov  *awscloud.Provider
	asg   *autoscaling.Client
	ec2   *ec2.Client
	proxy *throttlingProxy
	seq   *atomic.Int64
}

func newMotoEnv(tb testing.TB, proxy *throttlingProxy, seq *atomic.Int64) (*awscloud.Provider, *motoEnv) {
	tb.Helper()
	ctx := context.Background()
	opts := []func(*config.LoadOptions) error{
		config.WithRegion("eu-central-1"),
		config.WithBaseEndpoint(proxy.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDMOTO", "moto", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	}
	prov, err := awscloud.New(ctx, awscloud.Options{Backoff: fastBackoff{}, MaxAttempts: 12}, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	// The harness's own clients skip the throttling proxy.
	cfg.BaseEndpoint = sdkaws.String(proxy.target.String())
	cfg.Retryer = func() sdkaws.Retryer { return retry.AddWithMaxAttempts(retry.NewStandard(), 5) }
	tb.Cleanup(func() { proxy.SetRate(0) })
	return prov, &motoEnv{prov: prov, asg: autoscaling.NewFromConfig(cfg), ec2: ec2.NewFromConfig(cfg), proxy: proxy, seq: seq}
}

func (e *motoEnv) CreateGroup(tb testing.TB, spec cloudtest.GroupSpec) string {
	tb.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("moto-workers-%d", e.seq.Add(1))
	lt := name + "-lt"
	if _, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: &lt,
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: sdkaws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM5Large},
	}); err != nil {
		tb.Fatalf("create launch template: %v", err)
	}
	ltSpec := &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &lt, Version: sdkaws.String("$Latest")}
	in := &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &name,
		MinSize:              sdkaws.Int32(int32(spec.Min)), MaxSize: sdkaws.Int32(int32(spec.Max)), DesiredCapacity: sdkaws.Int32(int32(spec.Desired)),
		AvailabilityZones: []string{"eu-central-1a", "eu-central-1b", "eu-central-1c"},
	}
	if len(spec.InstanceTypes) > 0 {
		var overrides []asgtypes.LaunchTemplateOverrides
		for _, it := range spec.InstanceTypes {
			overrides = append(overrides, asgtypes.LaunchTemplateOverrides{InstanceType: sdkaws.String(it)})
		}
		in.MixedInstancesPolicy = &asgtypes.MixedInstancesPolicy{LaunchTemplate: &asgtypes.LaunchTemplate{
			LaunchTemplateSpecification: ltSpec, Overrides: overrides,
		}}
	} else {
		in.LaunchTemplate = ltSpec
	}
	if _, err := e.asg.CreateAutoScalingGroup(ctx, in); err != nil {
		tb.Fatalf("create group: %v", err)
	}
	if spec.TerminateHook {
		if _, err := e.asg.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
			AutoScalingGroupName: &name, LifecycleHookName: sdkaws.String("drain"),
			LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			HeartbeatTimeout:    sdkaws.Int32(300), DefaultResult: sdkaws.String("CONTINUE"),
		}); err != nil {
			tb.Fatalf("put lifecycle hook: %v", err)
		}
	}
	return name
}

func (e *motoEnv) Advance(testing.TB, time.Duration) {}

func (e *motoEnv) FailLaunches(tb testing.TB, n int) {
	if n > 0 {
		tb.Skip("moto cannot fail a launch")
	}
}

func (e *motoEnv) Throttle(_ testing.TB, rate float64) { e.proxy.SetRate(rate) }

func (e *motoEnv) Detach(tb testing.TB, group, id string) { detach(tb, e.asg, group, id) }

func (e *motoEnv) StartHookedTermination(tb testing.TB, _, _ string) {
	tb.Skip("moto keeps no lifecycle actions")
}

func (e *motoEnv) NewTemplateVersion(tb testing.TB, group string) {
	newTemplateVersion(tb, e.ec2, group)
}

func (e *motoEnv) Suspend(tb testing.TB, group, process string) { suspend(tb, e.asg, group, process) }

func (e *motoEnv) SetDesired(tb testing.TB, group string, desired int) {
	if _, err := e.asg.SetDesiredCapacity(context.Background(), &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: &group, DesiredCapacity: sdkaws.Int32(int32(desired)),
	}); err != nil {
		tb.Fatal(err)
	}
}

func (e *motoEnv) TransitionDelay(tb testing.TB, state string, _ time.Duration) {
	tb.Skipf("moto: instances never pass through %s (every move completes at once)", state)
}

func (e *motoEnv) LoseAnswers(_ testing.TB, operation string, n int) { e.proxy.Lose(operation, n) }

func (e *motoEnv) Calls() int64 { return e.prov.Metrics().TotalCalls() }

// throttlingProxy forwards to moto and refuses a share of the calls with the
// service's own throttling error, as AWS does under a request-rate limit (moto has
// no fault injection of its own).
type throttlingProxy struct {
	target *url.URL
	srv    *httptest.Server
	mu     sync.Mutex
	rate   float64
	rnd    *rand.Rand
	lose   map[string]int // Action → answers still to lose
}

func newThrottlingProxy(tb testing.TB, target string) *throttlingProxy {
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	p := &throttlingProxy{target: u, rnd: rand.New(rand.NewPCG(7, 11))}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.throttled() {
			writeThrottle(w, r)
			return
		}
		if p.losing(r) {
			// The call reaches moto and takes effect; its answer is lost.
			rp.ServeHTTP(httptest.NewRecorder(), r)
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>answer lost</Message></Error><RequestId>r</RequestId></ErrorResponse>`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *throttlingProxy) URL() string { return p.srv.URL }

func (p *throttlingProxy) SetRate(rate float64) {
	p.mu.Lock()
	p.rate = rate
	p.mu.Unlock()
}

// Lose makes the next n calls of action take effect with their answer lost.
func (p *throttlingProxy) Lose(action string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lose == nil {
		p.lose = map[string]int{}
	}
	p.lose[action] = n
}

// losing reads the Query-protocol action from the body (and puts the body back).
func (p *throttlingProxy) losing(r *http.Request) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lose) == 0 {
		return false
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	if a := form.Get("Action"); p.lose[a] > 0 {
		p.lose[a]--
		return true
	}
	return false
}

func (p *throttlingProxy) throttled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate > 0 && p.rnd.Float64() < p.rate
}

// writeThrottle answers with the throttling error of the service named in the
// request's SigV4 credential scope: EC2's RequestLimitExceeded, else Query's Throttling.
func writeThrottle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/xml")
	if strings.Contains(r.Header.Get("Authorization"), "/ec2/aws4_request") {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>`))
		return
	}
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>`))
}
