package serve_test

// The triggers end to end, through `recycler serve` (cli.Execute in this process,
// or the built binary where processes must die), on the real control plane and the
// simulated AWS with its SQS queue.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/recycler/recycler/internal/cli"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/serve"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.RunMain(m) }

// world is the package's simulated AWS on the shared control plane; each test
// makes its own group and queue.
var world struct {
	once sync.Once
	env  *sim.Environment
	err  error
}

type fixture struct {
	t    *testing.T
	env  *sim.Environment
	kube *testenv.Env
	sqs  *sqs.Client
	asg  *autoscaling.Client
	ctx  context.Context
}

func setup(t *testing.T) *fixture {
	t.Helper()
	kube := testenv.Shared(t)
	world.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		world.env, world.err = sim.Up(ctx, sim.UpOptions{Kube: kube, Groups: 1, Nodes: 1, BootDelay: 2 * time.Second, Workloads: "none"})
	})
	if world.err != nil {
		t.Fatalf("simulated AWS: %v", world.err)
	}
	for _, kv := range world.env.Vars() {
		t.Setenv(kv[0], kv[1])
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "RECYCLER_") && name != "RECYCLER_SIM_ADMIN" && name != "RECYCLER_CACHE" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(world.env.Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithBaseEndpoint(world.env.AWS.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, env: world.env, kube: kube, sqs: sqs.NewFromConfig(cfg), asg: autoscaling.NewFromConfig(cfg), ctx: ctx}
}

// group creates a group of n Ready nodes and returns its instances and node names.
func (f *fixture) group(name string, n int) (instances, nodes []string) {
	f.t.Helper()
	if err := f.env.AWS.CreateGroup(sim.GroupSpec{Name: name, Min: 0, Max: 2 * n, Desired: n}); err != nil {
		f.t.Fatal(err)
	}
	f.eventually(2*time.Minute, "group "+name+" InService with Ready nodes", func() bool {
		instances, nodes = nil, nil
		for _, g := range f.env.AWS.Status().Groups {
			if g.Name != name {
				continue
			}
			for _, in := range g.Instances {
				if in.Lifecycle != "InService" || !f.nodeReady(in.NodeName) {
					return false
				}
				instances, nodes = append(instances, in.ID), append(nodes, in.NodeName)
			}
		}
		return len(instances) == n
	})
	return instances, nodes
}

func (f *fixture) nodeReady(name string) bool {
	n, err := f.kube.Client.CoreV1().Nodes().Get(f.ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// queue creates a work queue with a dead-letter queue (maxReceiveCount 3) and
// routes the group's terminate lifecycle actions to it, as an EventBridge rule would.
func (f *fixture) queue(name string) string {
	f.t.Helper()
	d, err := f.sqs.CreateQueue(f.ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		f.t.Fatal(err)
	}
	a, err := f.sqs.GetQueueAttributes(f.ctx, &sqs.GetQueueAttributesInput{QueueUrl: d.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		f.t.Fatal(err)
	}
	w, err := f.sqs.CreateQueue(f.ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{
		"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":3}`, a.Attributes["QueueArn"])}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.env.AWS.PutEventRule(sim.EventRule{Name: name, DetailTypes: []string{"EC2 Instance-terminate Lifecycle Action"}, Queue: name}); err != nil {
		f.t.Fatal(err)
	}
	return *w.QueueUrl
}

func (f *fixture) send(url, body string) {
	f.t.Helper()
	if _, err := f.sqs.SendMessage(f.ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) eventually(limit time.Duration, what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// served is one `recycler serve` running in this process.
type served struct {
	cancel  context.CancelFunc
	done    chan int
	log     *testenv.SyncBuffer
	metrics string
	state   string
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs `recycler serve` with a fresh lease and state file plus args.
func (f *fixture) startServe(lease string, args ...string) *served {
	f.t.Helper()
	s := &served{done: make(chan int, 1), log: &testenv.SyncBuffer{}, metrics: freeAddr(f.t), state: filepath.Join(f.t.TempDir(), "recycler.db")}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	all := append([]string{"serve", "--state", s.state, "--metrics-addr", s.metrics, "--lease-namespace", "default", "--lease-name", lease,
		"--identity", "test-" + lease, "--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "1s"}, args...)
	go func() { s.done <- cli.Execute(ctx, all, strings.NewReader(""), io.Discard, s.log) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			f.t.Errorf("serve did not stop within 30s of SIGTERM-equivalent cancel")
		}
		if f.t.Failed() {
			f.t.Logf("serve log:\n%s", s.log.String())
		}
	})
	f.eventually(time.Minute, "serve leading (recycler_leader 1)", func() bool { return metric(s.metrics, "recycler_leader") == "1" })
	return s
}

// metric reads one unlabelled (or fully labelled) sample from /metrics.
func metric(addr, name string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return rest
		}
	}
	return ""
}

// executions reads the state file passively (serve keeps running).
func (s *served) executions(t *testing.T) []engine.Execution { return executionsIn(t, s.state) }

// executionsIn lists the recycles in a state file, read passively.
func executionsIn(t *testing.T, state string) []engine.Execution {
	t.Helper()
	eng, err := engine.Open(context.Background(), engine.Options{Path: state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	exs, err := eng.List(context.Background(), engine.ListFilter{StateMachine: recycle.StateMachineName})
	if err != nil {
		t.Fatal(err)
	}
	return exs
}

func (s *served) waitEnded(t *testing.T, f *fixture, limit time.Duration) []engine.Execution {
	t.Helper()
	var exs []engine.Execution
	f.eventually(limit, "the execution ended", func() bool {
		exs = s.executions(t)
		done := 0
		for _, ex := range exs {
			if ex.Status.Done() {
				done++
			}
		}
		return len(exs) >= 1 && done == len(exs)
	})
	return exs
}

func (f *fixture) instanceState(id string) string {
	st := f.env.AWS.Status()
	for _, g := range st.Groups {
		for _, in := range g.Instances {
			if in.ID == id {
				return in.State
			}
		}
	}
	for _, in := range st.Standalone {
		if in.ID == id {
			return in.State
		}
	}
	return "gone"
}

func TestServeLifecycleHookDrainsHeartbeatsAndCompletes(t *testing.T) {
	f := setup(t)
	instances, nodes := f.group("hook", 2)
	victim, node := instances[0], nodes[0]
	url := f.queue("hook-events")
	// The minimum timeout (30 s): heartbeats due every ≤ 15 s, so a 25 s drain shows them.
	f.terminateHook("hook", 30)
	ns := f.kube.Namespace(t)
	const jobRuns = 25 * time.Second
	f.job(ns, "job", "longjob", node, jobRuns)
	s := f.startServe("hook", "--sqs-queue-url", url, "--selector", "app=longjob", "--namespace", ns, "--max-wait", "10m")
	f.env.AWS.ResetCalls()

	// Scale in: the group terminates the victim through its terminate hook.
	if extended := f.scaleInUntilTerminated(victim, ns, "job"); extended < 10*time.Second {
		t.Errorf("hook deadline extended by %s only: heartbeats did not keep it alive", extended)
	}
	if n := f.env.AWS.Calls()["autoscaling:RecordLifecycleActionHeartbeat"]; n < 2 {
		t.Errorf("%d heartbeats, want at least 2 over a %s drain", n, jobRuns)
	}
	if n := f.env.AWS.Calls()["autoscaling:CompleteLifecycleAction"]; n != 1 {
		t.Errorf("%d CompleteLifecycleAction calls, want exactly 1 (CONTINUE)", n)
	}
	exs := s.waitEnded(t, f, time.Minute)
	if len(exs) != 1 || exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("executions %+v, want one Succeeded", exs)
	}
	if calls := f.env.AWS.Calls(); calls["autoscaling:EnterStandby"]+calls["autoscaling:SetDesiredCapacity"] != 0 {
		t.Errorf("a lifecycle-hook recycle surged: %v", calls)
	}
	f.eventually(30*time.Second, "queue and dead-letter queue empty", func() bool {
		return len(f.env.AWS.QueueMessages("hook-events")) == 0 && len(f.env.AWS.QueueMessages("hook-events-dlq")) == 0
	})
}

// scaleInUntilTerminated has the group terminate instance (with decrement), as a
// scale-in does, through its "drain" terminate hook, and waits until it shut down:
// never while pod (selected) still runs. It returns how far the lifecycle action's
// deadline moved past its first value (heartbeats).
func (f *fixture) scaleInUntilTerminated(instance, ns, pod string) time.Duration {
	f.t.Helper()
	if _, err := f.asg.TerminateInstanceInAutoScalingGroup(f.ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &instance, ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		f.t.Fatal(err)
	}
	first := f.env.AWS.HookDeadline(instance, "drain")
	if first.IsZero() {
		f.t.Fatalf("no lifecycle action for %s", instance)
	}
	latest, violation := f.untilTerminated(instance, ns, pod)
	if violation != "" {
		f.t.Fatal(violation)
	}
	return latest.Sub(first)
}

// untilTerminated waits for the instance to shut down, sampling meanwhile the
// latest deadline of its "drain" lifecycle action and whether it stopped running
// while pod still ran.
func (f *fixture) untilTerminated(instance, ns, pod string) (latest time.Time, violation string) {
	f.t.Helper()
	f.eventually(3*time.Minute, instance+" terminated", func() bool {
		if d := f.env.AWS.HookDeadline(instance, "drain"); d.After(latest) {
			latest = d
		}
		state := f.instanceState(instance)
		p, err := f.kube.Client.CoreV1().Pods(ns).Get(f.ctx, pod, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && state != "running" && violation == "" {
			violation = fmt.Sprintf("instance %s is %s while the selected pod still runs", instance, state)
		}
		return state == "shutting-down" || state == "terminated" || state == "gone"
	})
	return latest, violation
}

// alarmEvent is a CloudWatch alarm state change as EventBridge delivers it.
func alarmEvent(id, instance, state string) string {
	return fmt.Sprintf(`{"version":"0","id":%q,"detail-type":"CloudWatch Alarm State Change","source":"aws.cloudwatch","account":"123456789012",
"time":"2026-01-01T03:00:00Z","region":"us-east-1","resources":["arn:aws:cloudwatch:us-east-1:123456789012:alarm:cpu"],
"detail":{"alarmName":"cpu","configuration":{"metrics":[{"id":"m1","metricStat":{"metric":{"dimensions":{"InstanceId":%q},"name":"CPUUtilization","namespace":"AWS/EC2"},"period":300,"stat":"Average"},"returnData":true}]},
"previousState":{"value":"OK"},"state":{"value":%q,"reason":"Threshold Crossed"}}}`, id, instance, state)
}

func TestServeAlarmDeliveredThreeTimesRecyclesTheNodeOnce(t *testing.T) {
	f := setup(t)
	instances, nodes := f.group("alarm", 2)
	url := f.queue("alarm-events")
	s := f.startServe("alarm", "--sqs-queue-url", url, "--cooldown", "1h")
	ev := alarmEvent("5a2b1f0e-0000-4000-8000-000000000001", instances[1], "ALARM")
	for range 3 {
		f.send(url, ev) // SQS and EventBridge are at-least-once
	}
	// The alarm flaps: OK, then ALARM again with a new event id, within the cool-down.
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-000000000002", instances[1], "OK"))
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-000000000003", instances[1], "ALARM"))
	s.waitEnded(t, f, 3*time.Minute)
	f.eventually(30*time.Second, "every message acknowledged", func() bool { return len(f.env.AWS.QueueMessages("alarm-events")) == 0 })
	exs := s.executions(t)
	if len(exs) != 1 || exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("executions %+v, want exactly one Succeeded", exs)
	}
	var st recycle.State
	_ = json.Unmarshal(exs[0].Input, &st)
	if st.Request.InstanceID != instances[1] || st.Request.Trigger == nil || st.Request.Trigger.Kind != "alarm" {
		t.Fatalf("recycled %+v, want instance %s by an alarm", st.Request, instances[1])
	}
	if state := f.instanceState(instances[0]); state != "running" {
		t.Errorf("the other node's instance is %s: only the alarmed node may be recycled", state)
	}
	if _, err := f.kube.Client.CoreV1().Nodes().Get(f.ctx, nodes[1], metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("recycled node %s still exists (err %v)", nodes[1], err)
	}
}

func TestServeMalformedDuplicateUnknownAndPoisonChangeNothing(t *testing.T) {
	f := setup(t)
	instances, _ := f.group("junk", 1)
	url := f.queue("junk-events")
	s := f.startServe("junk", "--sqs-queue-url", url)
	before := f.env.AWS.Status()
	f.send(url, "this is not JSON")                                                     // malformed: poison
	f.send(url, `{"version":"0","id":7,"detail-type":"x","source":"y"}`)                // wrong type: poison
	f.send(url, `{"greeting":"hello"}`)                                                 // unknown shape: ignored
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000aa", instances[0], "OK")) // not ALARM: ignored
	f.send(url, `{"version":"0","id":"l1","detail-type":"EC2 Instance-launch Lifecycle Action","source":"aws.autoscaling","time":"2026-01-01T03:00:00Z",
"detail":{"LifecycleActionToken":"t","AutoScalingGroupName":"junk","LifecycleHookName":"h","EC2InstanceId":"`+instances[0]+`","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING"}}`) // not ours: ignored
	// An alarm for an instance this cluster has no Node for: ignored.
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000bb", "i-0123456789abcdef0", "ALARM"))
	f.eventually(2*time.Minute, "poison in the dead-letter queue, the rest acknowledged", func() bool {
		return len(f.env.AWS.QueueMessages("junk-events")) == 0 && len(f.env.AWS.QueueMessages("junk-events-dlq")) == 2
	})
	if exs := s.executions(t); len(exs) != 0 {
		t.Fatalf("executions started: %+v", exs)
	}
	after := f.env.AWS.Status()
	for i, g := range before.Groups {
		if g.Name == "junk" && (after.Groups[i].Desired != g.Desired || len(after.Groups[i].Instances) != len(g.Instances)) {
			t.Errorf("group changed: %+v → %+v", g, after.Groups[i])
		}
	}
	log := s.log.String()
	for _, want := range []string{"poison message left for the dead-letter queue", "not a JSON object", "outcome=ignored"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if got := metric(s.metrics, `recycler_sqs_messages_total{outcome="ignored"}`); got != "4" {
		t.Errorf("ignored messages metric = %q, want 4", got)
	}
}

func TestServeAnnotationStartsARecycleAndIsRemovedAtTheEnd(t *testing.T) {
	f := setup(t)
	_, nodes := f.group("annot", 1)
	s := f.startServe("annot")
	// Options as JSON: a replacement timeout too short for the 2 s boot makes it roll
	// back, so the Node stays and the annotation's removal can be seen.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, serve.AnnotationRecycle, `{"replacementTimeout":"1s"}`)
	if _, err := f.kube.Client.CoreV1().Nodes().Patch(f.ctx, nodes[0], types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var execID string
	f.eventually(time.Minute, "annotation replaced by the execution id", func() bool {
		n, err := f.kube.Client.CoreV1().Nodes().Get(f.ctx, nodes[0], metav1.GetOptions{})
		if err != nil {
			return false
		}
		v := n.Annotations[serve.AnnotationRecycle]
		if v != "" && !strings.HasPrefix(v, "{") {
			execID = v
			return true
		}
		return false
	})
	exs := s.waitEnded(t, f, 2*time.Minute)
	if len(exs) != 1 || exs[0].ID != execID {
		t.Fatalf("executions %+v, want one with id %s", exs, execID)
	}
	var st recycle.State
	_ = json.Unmarshal(exs[0].Input, &st)
	if time.Duration(st.Request.ReplacementTimeout) != time.Second || st.Request.Node != nodes[0] {
		t.Errorf("request %+v did not take the annotation's options", st.Request)
	}
	f.eventually(time.Minute, "annotation removed at the end", func() bool {
		n, err := f.kube.Client.CoreV1().Nodes().Get(f.ctx, nodes[0], metav1.GetOptions{})
		_, has := n.Annotations[serve.AnnotationRecycle]
		return err == nil && !has
	})
	// A bad value is refused with an Event and changes nothing.
	patch = fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, serve.AnnotationRecycle, `{"maxWait":"forever"}`)
	if _, err := f.kube.Client.CoreV1().Nodes().Patch(f.ctx, nodes[0], types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually(time.Minute, "refusal Event", func() bool {
		evs, err := f.kube.Client.EventsV1().Events("default").List(f.ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + nodes[0]})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == serve.ReasonRefused && strings.Contains(e.Note, "duration") {
				return true
			}
		}
		return false
	})
	if exs := s.executions(t); len(exs) != 1 {
		t.Errorf("a refused annotation started an execution: %+v", exs)
	}
}

var binary struct {
	once sync.Once
	path string
	err  error
}

// recyclerBinary builds cmd/recycler once per test binary.
func recyclerBinary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "recycler-serve-test-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "recycler")
		out, err := exec.Command("go", "build", "-o", binary.path, "../../cmd/recycler").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

type process struct {
	cmd     *exec.Cmd
	log     *testenv.SyncBuffer
	metrics string
	id      string
}

func (f *fixture) serveProcess(bin, id, state string, args ...string) *process {
	f.t.Helper()
	p := &process{log: &testenv.SyncBuffer{}, metrics: freeAddr(f.t), id: id}
	all := append([]string{"serve", "--state", state, "--metrics-addr", p.metrics, "--lease-namespace", "default", "--lease-name", "ha",
		"--identity", id, "--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "1s"}, args...)
	p.cmd = exec.Command(bin, all...)
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			f.t.Errorf("serve %s did not stop within 30s of SIGTERM", id)
		}
		if f.t.Failed() {
			f.t.Logf("serve %s log:\n%s", id, p.log.String())
		}
	})
	return p
}

func TestServeTwoReplicasOnlyOneActsAndTheStandbyTakesOverAfterSIGKILL(t *testing.T) {
	f := setup(t)
	bin := recyclerBinary(t)
	instances, nodes := f.group("ha", 2)
	url := f.queue("ha-events")
	ns := f.kube.Namespace(t)
	job := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: ns, Labels: map[string]string{"app": "longha"},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: "20s"}},
		Spec: corev1.PodSpec{NodeName: nodes[0], RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := f.kube.Client.CoreV1().Pods(ns).Create(f.ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "recycler.db") // the shared volume
	args := []string{"--sqs-queue-url", url, "--selector", "app=longha", "--namespace", ns, "--max-wait", "10m"}
	a := f.serveProcess(bin, "replica-a", state, args...)
	b := f.serveProcess(bin, "replica-b", state, args...)
	var leader, standby *process
	f.eventually(time.Minute, "one replica leading", func() bool {
		la, lb := metric(a.metrics, "recycler_leader"), metric(b.metrics, "recycler_leader")
		switch {
		case la == "1" && lb == "0":
			leader, standby = a, b
		case lb == "1" && la == "0":
			leader, standby = b, a
		}
		return leader != nil
	})
	f.env.AWS.ResetCalls()
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000dd", instances[0], "ALARM"))
	f.eventually(2*time.Minute, "the leader draining", func() bool {
		return metric(leader.metrics, `recycler_executions_running{step="Drain"}`) == "1"
	})
	if metric(standby.metrics, "recycler_leader") != "0" || strings.Contains(standby.log.String(), "recycle started") {
		t.Fatalf("the standby acts too")
	}
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	f.eventually(time.Minute, "the standby leading", func() bool { return metric(standby.metrics, "recycler_leader") == "1" })
	took := time.Since(killed)
	t.Logf("takeover %.1fs after SIGKILL (lease duration 4s, retry period 1s)", took.Seconds())
	// The lease expires 4 s after the last renewal (≤ 1 s before the kill); the standby
	// tries every 1 s; a loaded machine may add a few seconds of process scheduling.
	if took > 4*time.Second+2*time.Second+5*time.Second {
		t.Errorf("takeover took %s, want within the lease duration (4s) plus a retry period", took)
	}
	var exs []engine.Execution
	f.eventually(3*time.Minute, "the recycle Succeeded", func() bool {
		eng, err := engine.Open(f.ctx, engine.Options{Path: state, Passive: true})
		if err != nil {
			return false
		}
		defer eng.Close()
		exs, _ = eng.List(f.ctx, engine.ListFilter{StateMachine: recycle.StateMachineName})
		return len(exs) == 1 && exs[0].Status.Done()
	})
	if exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("recycle ended %s (%s: %s)", exs[0].Status, exs[0].Error, exs[0].Cause)
	}
	if n := f.env.AWS.Calls()["autoscaling:EnterStandby"]; n != 1 {
		t.Errorf("EnterStandby called %d times, want 1 (one surge, resumed, not repeated)", n)
	}
	if !strings.Contains(standby.log.String(), "leading: opening the engine") {
		t.Errorf("the standby never led")
	}
}

func TestServeScheduledRolloutReplacesTheGroup(t *testing.T) {
	f := setup(t)
	instances, _ := f.group("sched", 1)
	// Every minute: the first fire comes within 60 s; one rollout per fire, one at a time.
	s := f.startServe("sched", "--schedule", "* * * * *", "--group", "sched", "--all", "--max-in-flight", "1")
	var rollouts []engine.Execution
	f.eventually(3*time.Minute, "a scheduled rollout ended", func() bool {
		eng, err := engine.Open(f.ctx, engine.Options{Path: s.state, Passive: true})
		if err != nil {
			return false
		}
		defer eng.Close()
		exs, _ := eng.List(f.ctx, engine.ListFilter{})
		rollouts = nil
		for _, ex := range exs {
			if strings.HasPrefix(ex.Name, serve.ScheduledPrefix) {
				rollouts = append(rollouts, ex)
			}
		}
		return len(rollouts) >= 1 && rollouts[len(rollouts)-1].Status.Done()
	})
	first := rollouts[len(rollouts)-1]
	if first.Status != engine.StatusSucceeded {
		t.Fatalf("scheduled rollout %s ended %s (%s: %s)", first.Name, first.Status, first.Error, first.Cause)
	}
	if state := f.instanceState(instances[0]); state == "running" {
		t.Errorf("the group's old instance %s still runs after the rollout", instances[0])
	}
	if !strings.Contains(s.log.String(), "scheduled rollout started") {
		t.Errorf("log lacks the start")
	}
}

func TestServeSIGTERMReleasesTheLeaseAndTheStandbyTakesOverAtOnce(t *testing.T) {
	f := setup(t)
	bin := recyclerBinary(t)
	state := filepath.Join(t.TempDir(), "recycler.db")
	a := f.serveProcess(bin, "term-a", state, "--lease-name", "term")
	f.eventually(time.Minute, "replica a leading", func() bool { return metric(a.metrics, "recycler_leader") == "1" })
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + a.metrics + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	b := f.serveProcess(bin, "term-b", state, "--lease-name", "term")
	f.eventually(time.Minute, "replica b standing by and ready", func() bool {
		resp, err := http.Get("http://" + b.metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && metric(b.metrics, "recycler_leader") == "0"
	})
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("replica a exited with %v after SIGTERM, want 0\n%s", err, a.log.String())
	}
	// Released, not expired: b leads well before the 4 s lease would have run out.
	f.eventually(time.Minute, "replica b leading", func() bool { return metric(b.metrics, "recycler_leader") == "1" })
	if took := time.Since(stopped); took > 4*time.Second {
		t.Logf("takeover after SIGTERM took %s (the lease was not released?)", took)
		t.Errorf("takeover after SIGTERM took %s, want less than the lease duration (released lease)", took)
	}
	if !strings.Contains(a.log.String(), "stopped: lease released, executions left durable") {
		t.Errorf("replica a's log does not say it released the lease:\n%s", a.log.String())
	}
}
