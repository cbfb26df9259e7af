package aws_test

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/cloud"
	awscloud "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/cloud/cloudtest"
	"github.com/recycler/recycler/internal/sim"
)

// fastBackoff keeps throttling storms short in tests; production keeps the SDK's.
type fastBackoff struct{}

func (fastBackoff) BackoffDelay(attempt int, _ error) (time.Duration, error) {
	return time.Duration(attempt) * 5 * time.Millisecond, nil
}

// simEnv is one simulator on loopback, with a fake clock the tests step.
type simEnv struct {
	srv   *sim.Server
	clock *clocktesting.FakeClock
	cfg   sdkaws.Config // configuration the provider loaded from the environment
	asg   *autoscaling.Client
	ec2   *ec2.Client
	prov  *awscloud.Provider
	seq   atomic.Int64
}

// startSim starts a simulator and points the SDK's standard environment variables at
// it, exactly as a user of `recycler sim up` would.
func startSim(tb testing.TB) *simEnv {
	tb.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := sim.New(sim.Options{Clock: clk, Region: "eu-central-1", BootDelay: 30 * time.Second, Seed: 7})
	if err := srv.Start(""); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	tb.Setenv("AWS_ENDPOINT_URL", srv.URL())
	tb.Setenv("AWS_REGION", "eu-central-1")
	tb.Setenv("AWS_ACCESS_KEY_ID", "AKIDSIMULATED")
	tb.Setenv("AWS_SECRET_ACCESS_KEY", "simulated")
	tb.Setenv("AWS_SESSION_TOKEN", "")
	tb.Setenv("AWS_PROFILE", "")
	tb.Setenv("AWS_CONFIG_FILE", filepath.Join(tb.TempDir(), "none"))
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(tb.TempDir(), "none"))
	tb.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	prov, err := awscloud.New(ctx, awscloud.Options{Clock: clk, Backoff: fastBackoff{}, MaxAttempts: 12})
	if err != nil {
		tb.Fatal(err)
	}
	// The harness's own clients: separate, so their calls are not counted, and
	// patient, so fault injection does not break test setup.
	hcfg := cfg.Copy()
	hcfg.Retryer = func() sdkaws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts, o.Backoff = 30, fastBackoff{}
			o.RateLimiter = noLimit{}
		})
	}
	return &simEnv{srv: srv, clock: clk, cfg: cfg, prov: prov,
		asg: autoscaling.NewFromConfig(hcfg), ec2: ec2.NewFromConfig(hcfg)}
}

type noLimit struct{}

func (noLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noLimit) AddTokens(uint) error { return nil }

func (e *simEnv) CreateGroup(tb testing.TB, spec cloudtest.GroupSpec) string {
	tb.Helper()
	name := fmt.Sprintf("workers-%d", e.seq.Add(1))
	if err := e.srv.CreateGroup(sim.GroupSpec{Name: name, Min: spec.Min, Max: spec.Max, Desired: spec.Desired, Overrides: spec.InstanceTypes}); err != nil {
		tb.Fatal(err)
	}
	if spec.TerminateHook {
		_, err := e.asg.PutLifecycleHook(context.Background(), &autoscaling.PutLifecycleHookInput{
			AutoScalingGroupName: &name, LifecycleHookName: sdkaws.String("drain"),
			LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			HeartbeatTimeout:    sdkaws.Int32(300), DefaultResult: sdkaws.String("CONTINUE"),
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	for range 20 {
		if e.inService(name) >= spec.Desired {
			return name
		}
		e.Advance(tb, cloudtest.Step)
	}
	tb.Fatalf("group %s: %d instances never became InService", name, spec.Desired)
	return ""
}

func (e *simEnv) inService(name string) int {
	for _, g := range e.srv.Status().Groups {
		if g.Name == name {
			return g.InService
		}
	}
	return 0
}

func (e *simEnv) Advance(_ testing.TB, d time.Duration) {
	e.clock.Step(d)
	e.srv.Sync(context.Background())
}

func (e *simEnv) faults(tb testing.TB, change func(*sim.Faults)) {
	f := e.srv.Faults()
	change(&f)
	if err := e.srv.SetFaults(f); err != nil {
		tb.Fatal(err)
	}
}

func (e *simEnv) FailLaunches(tb testing.TB, n int) {
	e.faults(tb, func(f *sim.Faults) { f.FailLaunches = n })
}

func (e *simEnv) Throttle(tb testing.TB, rate float64) {
	e.faults(tb, func(f *sim.Faults) { f.ThrottleRate = rate })
}

func (e *simEnv) Detach(tb testing.TB, group, id string) { detach(tb, e.asg, group, id) }

// detach, newTemplateVersion and suspend are the harness actions both AWS
// implementations (simulator, moto) take through their raw SDK clients.
func detach(tb testing.TB, asg *autoscaling.Client, group, id string) {
	if _, err := asg.DetachInstances(context.Background(), &autoscaling.DetachInstancesInput{
		AutoScalingGroupName: &group, InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
	}); err != nil {
		tb.Fatal(err)
	}
}

func (e *simEnv) StartHookedTermination(tb testing.TB, _, id string) {
	if _, err := e.asg.TerminateInstanceInAutoScalingGroup(context.Background(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &id, ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
	}); err != nil {
		tb.Fatal(err)
	}
	e.Advance(tb, time.Second)
}

func (e *simEnv) NewTemplateVersion(tb testing.TB, group string) {
	newTemplateVersion(tb, e.ec2, group)
}

func newTemplateVersion(tb testing.TB, ec2c *ec2.Client, group string) {
	if _, err := ec2c.CreateLaunchTemplateVersion(context.Background(), &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateName: sdkaws.String(group + "-lt"), SourceVersion: sdkaws.String("$Latest"),
		VersionDescription: sdkaws.String("new AMI"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: sdkaws.String("ami-0fedcba9876543210")},
	}); err != nil {
		tb.Fatal(err)
	}
}

func (e *simEnv) Suspend(tb testing.TB, group, process string) { suspend(tb, e.asg, group, process) }

func suspend(tb testing.TB, asg *autoscaling.Client, group, process string) {
	if _, err := asg.SuspendProcesses(context.Background(), &autoscaling.SuspendProcessesInput{
		AutoScalingGroupName: &group, ScalingProcesses: []string{process},
	}); err != nil {
		tb.Fatal(err)
	}
}

func (e *simEnv) SetDesired(tb testing.TB, group string, desired int) {
	if _, err := e.asg.SetDesiredCapacity(context.Background(), &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: &group, DesiredCapacity: sdkaws.Int32(int32(desired)),
	}); err != nil {
		tb.Fatal(err)
	}
}

func (e *simEnv) TransitionDelay(tb testing.TB, state string, d time.Duration) {
	e.faults(tb, func(f *sim.Faults) {
		if f.TransitionDelays == nil {
			f.TransitionDelays = map[string]sim.Duration{}
		}
		f.TransitionDelays[state] = sim.Duration(d)
	})
}

func (e *simEnv) LoseAnswers(tb testing.TB, operation string, n int) {
	e.faults(tb, func(f *sim.Faults) {
		if f.LostAnswers == nil {
			f.LostAnswers = map[string]int{}
		}
		f.LostAnswers[operation] = n
	})
}

func (e *simEnv) Calls() int64 { return e.prov.Metrics().TotalCalls() }

func TestContract(t *testing.T) {
	var mu sync.Mutex
	called := map[string]bool{} // every operation the provider made, over the whole suite
	cloudtest.Run(t, func(tb testing.TB) (cloud.Provider, cloudtest.Harness) {
		e := startSim(tb)
		tb.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, op := range e.prov.Metrics().Operations() {
				called[op] = true
			}
		})
		return e.prov, e
	})
	// The suite is a full recycle, a rollback before and after the replacement, the
	// lifecycle-hook path, stop-retire, a raised MaxSize and drift: what the code
	// calls is what the Lambda's IAM policy must allow, no more.
	t.Run("LambdaPolicyAllowsExactlyTheseCalls", func(t *testing.T) {
		checkLambdaPolicy(t, slices.Sorted(maps.Keys(called)))
	})
}

// TestEndpointFromEnvironment: the SDK itself picks up AWS_ENDPOINT_URL and the
// region from the environment; the provider adds nothing of its own.
func TestEndpointFromEnvironment(t *testing.T) {
	e := startSim(t)
	if e.cfg.Region != "eu-central-1" {
		t.Errorf("region %q from the environment, want eu-central-1", e.cfg.Region)
	}
	if e.cfg.BaseEndpoint == nil || *e.cfg.BaseEndpoint != e.srv.URL() {
		t.Errorf("base endpoint %v, want %s from AWS_ENDPOINT_URL", e.cfg.BaseEndpoint, e.srv.URL())
	}
	name := e.CreateGroup(t, cloudtest.GroupSpec{Min: 1, Max: 2, Desired: 1})
	g, err := e.prov.Group(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	// The simulator is the only place this group exists: reaching it proves the endpoint.
	if len(g.Instances) != 1 || g.Instances[0].AZ[:len("eu-central-1")] != "eu-central-1" {
		t.Errorf("group %+v: want one instance in eu-central-1", g)
	}
	calls := e.srv.Status().Calls
	if calls["autoscaling:DescribeAutoScalingGroups"] == 0 {
		t.Errorf("simulator saw no DescribeAutoScalingGroups: %v", calls)
	}
}

func TestNoRegion(t *testing.T) {
	_, err := awscloud.NewFromConfig(sdkaws.Config{}, awscloud.Options{})
	if err == nil || cloud.ErrorName(err) != "Validation" {
		t.Errorf("provider without region: %v, want a validation error", err)
	}
}

// TestServiceEndpointsFromEnvironment: per-service variables win over AWS_ENDPOINT_URL
// (here a dead address), so Auto Scaling and EC2 can live at different endpoints.
func TestServiceEndpointsFromEnvironment(t *testing.T) {
	e := startSim(t)
	name := e.CreateGroup(t, cloudtest.GroupSpec{Min: 1, Max: 2, Desired: 1})
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL_AUTO_SCALING", e.srv.URL())
	t.Setenv("AWS_ENDPOINT_URL_EC2", e.srv.URL())
	p, err := awscloud.New(context.Background(), awscloud.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.Group(context.Background(), name)
	if err != nil {
		t.Fatalf("group through per-service endpoints: %v", err)
	}
	if _, err := p.Instances(context.Background(), g.Instances[0].ID); err != nil {
		t.Fatalf("instances through per-service endpoints: %v", err)
	}
}
