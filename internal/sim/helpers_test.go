package sim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	clocktesting "k8s.io/utils/clock/testing"
)

var epoch = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type harness struct {
	t     testing.TB
	ctx   context.Context
	sim   *Server
	clock *clocktesting.FakeClock
	asg   *autoscaling.Client
	ec2   *ec2.Client
	sts   *sts.Client
	nodes *recordingRegistry
}

// recordingRegistry records Node registrations (the real one is in testenv_test.go).
type recordingRegistry struct {
	mu    sync.Mutex
	nodes map[string]Instance
}

func (r *recordingRegistry) Register(_ context.Context, inst Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[inst.Name] = inst
	return nil
}

func (r *recordingRegistry) Deregister(_ context.Context, inst Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.nodes, inst.Name)
	return nil
}

func (r *recordingRegistry) snapshot() map[string]Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]Instance{}
	for k, v := range r.nodes {
		out[k] = v
	}
	return out
}

// newHarness starts a simulator on loopback with a fake clock and real SDK clients.
func newHarness(t testing.TB, opts Options) *harness {
	t.Helper()
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(epoch)
	opts.Clock = fc
	if opts.Seed == 0 {
		opts.Seed = 42
	}
	if opts.BootDelay == 0 {
		opts.BootDelay = 40 * time.Second
	}
	reg := &recordingRegistry{nodes: map[string]Instance{}}
	if opts.Nodes == nil {
		opts.Nodes = reg
	}
	s := New(opts)
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(s.Region()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "secret", "")),
		config.WithBaseEndpoint(s.URL()),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 10
				o.MaxBackoff = 20 * time.Millisecond
			})
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, ctx: ctx, sim: s, clock: fc, asg: autoscaling.NewFromConfig(cfg), ec2: ec2.NewFromConfig(cfg), sts: sts.NewFromConfig(cfg), nodes: reg}
}

// step advances the fake clock and lets the simulator catch up.
func (h *harness) step(d time.Duration) {
	h.clock.Step(d)
	h.sim.Sync(h.ctx)
}

func (h *harness) group(name string) astypes.AutoScalingGroup {
	h.t.Helper()
	out, err := h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		h.t.Fatalf("describe group %s: %v", name, err)
	}
	if len(out.AutoScalingGroups) != 1 {
		h.t.Fatalf("describe group %s: got %d groups", name, len(out.AutoScalingGroups))
	}
	return out.AutoScalingGroups[0]
}

func byState(g astypes.AutoScalingGroup, state astypes.LifecycleState) []string {
	var ids []string
	for _, i := range g.Instances {
		if i.LifecycleState == state {
			ids = append(ids, *i.InstanceId)
		}
	}
	return ids
}

// seed creates group "ng" (the group these tests use) with desired InService
// instances (through the Go API) and boots them.
func (h *harness) seed(minSize, maxSize, desired int) astypes.AutoScalingGroup {
	h.t.Helper()
	if err := h.sim.CreateGroup(GroupSpec{Name: "ng", Min: minSize, Max: maxSize, Desired: desired}); err != nil {
		h.t.Fatal(err)
	}
	h.step(h.sim.opts.BootDelay)
	g := h.group("ng")
	if got := len(byState(g, astypes.LifecycleStateInService)); got != desired {
		h.t.Fatalf("seeded group ng: %d InService, want %d", got, desired)
	}
	return g
}

// wantAPIError asserts the SDK returned AWS error code and a message containing msg.
func wantAPIError(t testing.TB, err error, code, msg string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %v", code, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want error code %s, got %s: %s", code, ae.ErrorCode(), ae.ErrorMessage())
	}
	if msg != "" && !containsStr(ae.ErrorMessage(), msg) {
		t.Fatalf("error %s message %q does not contain %q", code, ae.ErrorMessage(), msg)
	}
}

func containsStr(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
