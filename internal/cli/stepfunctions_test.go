package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/stepfn"
	"github.com/recycler/recycler/internal/testenv"
)

// TestRecycleOnStepFunctions is the AWS path end to end, on the simulator: the
// state machines the Terraform module deploys, on the simulated Step Functions
// (the project's engine behind the AWS API), every Task invoking the real Lambda
// `bootstrap` under the Runtime Interface Emulator with the Lambda role's own
// credentials, EKS auth, and exactly the module's RBAC (kube.RBAC) for its Kubernetes group;
// driven by `recycler recycle --engine stepfunctions`, then read and aborted with
// `list`, `status`, `history` and `abort`.
func TestRecycleOnStepFunctions(t *testing.T) {
	if os.Getenv(testenv.SkipEnv) == "1" {
		t.Skip(testenv.SkipEnv + "=1")
	}
	ctx := t.Context()
	bootstrap := testenv.BuildBootstrap(t)
	const (
		account = "123456789012"
		group   = "prod:recycler" // the module's kubernetes_group for name_prefix "prod"
	)
	role := sim.AssumedRole(account, "prod-recycler-lambda", "prod-recycler", "ASIASIMULATEDLAMBDA", "lambda-secret", "lambda-session-token")
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: 3, BootDelay: 2 * time.Second, JobDuration: 6 * time.Second,
		EKS: &sim.EKSOptions{Mappings: []sim.Mapping{{ARN: "arn:aws:iam::" + account + ":role/prod-recycler-lambda", Username: "recycler:{{SessionName}}", Groups: []string{group}}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Down(context.Background()) })
	env.AWS.AddIdentity(role)
	// The module's ClusterRole for its access-entry group: kube.RBAC, which
	// deploy/terraform/modules/documents/rbac.json is (internal/deploy checks).
	if err := env.BindGroup(ctx, group, kube.PolicyRules(kube.RBAC())); err != nil {
		t.Fatal(err)
	}

	// The function's environment on AWS: its role's session keys, its cluster, no kubeconfig.
	vars := env.FunctionVars(role)
	fn := testenv.StartFunction(t, bootstrap, vars)
	env.AWS.SetLambda(fn)

	// The person at the terminal: admin credentials and a kubeconfig, the same
	// endpoints. (Not the EKS variables: an HTTPS proxy set now would not reach this
	// process's HTTP clients, which read the proxy environment once.)
	eksVars := map[string]bool{}
	for _, kv := range env.EKSVars() {
		eksVars[kv[0]] = true
	}
	for _, kv := range env.Vars() {
		if !eksVars[kv[0]] {
			t.Setenv(kv[0], kv[1])
		}
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) && name != "RECYCLER_SIM_ADMIN" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	functionARN := "arn:aws:lambda:" + env.Region + ":" + account + ":function:prod-recycler"
	recycleARN := createModuleStateMachines(t, functionARN)
	t.Setenv("RECYCLER_ENGINE", "stepfunctions")
	t.Setenv("RECYCLER_STATE_MACHINE", recycleARN)
	if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	node := longJobNodeOf(t, env)
	res := runCLIFor(t, 4*time.Minute, "recycle", node, "--selector", sim.LabelComponent+"="+sim.LongJobComponent,
		"--namespace", sim.WorkloadNamespace, "--max-wait", "5m", "--check-seconds", "5", "-o", "json")
	if res.code != ExitOK {
		t.Fatalf("recycle on Step Functions: exit %d\n%s\n%s\nfunction output:\n%.4000s", res.code, res.stdout, res.stderr, fn.Output())
	}
	var out result
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || out.Outcome != "succeeded" || out.NewInstance == "" {
		t.Fatalf("result %s: %v; want succeeded with a new instance", res.stdout, err)
	}
	if !strings.HasSuffix(out.ExecutionID, ":execution:prod-recycle:"+out.OldInstance) {
		t.Errorf("execution %s: want it named after the old instance %s", out.ExecutionID, out.OldInstance)
	}
	for _, want := range []string{"Drain:", "Retire:", "recycled: execution"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("progress view lacks %q:\n%s", want, res.stderr)
		}
	}
	if _, err := env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		t.Errorf("old node %s still exists", node)
	}

	// The execution commands read Step Functions.
	if r := runCLIFor(t, time.Minute, "list"); r.code != ExitOK || !strings.Contains(r.stdout, out.OldInstance) || !strings.Contains(r.stdout, "SUCCEEDED") {
		t.Errorf("list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLIFor(t, time.Minute, "status", out.OldInstance); r.code != ExitOK || !strings.Contains(r.stdout, "SUCCEEDED") || !strings.Contains(r.stdout, node) {
		t.Errorf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLIFor(t, time.Minute, "history", out.ExecutionID); r.code != ExitOK || !strings.Contains(r.stdout, "Surge:") || !strings.Contains(r.stdout, "done") {
		t.Errorf("history: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLIFor(t, time.Minute, "resume"); r.code != ExitBadInput {
		t.Errorf("resume on Step Functions: exit %d, want %d (AWS runs them)", r.code, ExitBadInput)
	}

	// Abort: StopExecution, then the rollback state machine undoes the recycle.
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stepfn.New(cfg, stepfn.Options{StateMachineARN: recycleARN, PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := env.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v", err)
	}
	victim := nodes.Items[0].Name
	req := recycle.NewRequest(victim)
	// The default loop period: a 1-hour wait in 5-second checks would outgrow the history budget.
	req.Selector, req.Namespaces, req.MaxWait = sim.LabelComponent+"=forever", []string{sim.WorkloadNamespace}, recycle.Duration(time.Hour)
	pinForever(t, env, victim)
	input, _ := json.Marshal(recycle.State{Request: req})
	ex, err := c.Start(ctx, engine.StartInput{Name: "abort-me", Input: input})
	if err != nil {
		t.Fatal(err)
	}
	waitForDrain(t, c, ex.ID)
	r := runCLIFor(t, 3*time.Minute, "abort", ex.ID)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "aborted and rolled back") {
		if rb, err := c.History(ctx, strings.Replace(recycleARN, ":stateMachine:prod-recycle", ":execution:prod-rollback:abort-me", 1)); err == nil {
			for _, ev := range rb {
				if ev.Type == "TaskFailed" {
					t.Logf("rollback: %s", ev.Details)
				}
			}
		}
		t.Fatalf("abort on Step Functions: exit %d (want %d)\n%s%s\nfunction output:\n%.4000s", r.code, ExitFailed, r.stdout, r.stderr, fn.Output())
	}
	n, err := env.Kube.Client.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable || n.Annotations[kube.AnnotationFenced] != "" {
		t.Errorf("node %s after the abort: unschedulable %v, annotations %v", victim, n.Spec.Unschedulable, n.Annotations)
	}
}

func runCLIFor(t *testing.T, d time.Duration, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Execute(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return cmdResult{code, stdout.String(), stderr.String()}
}

// createModuleStateMachines deploys what the module deploys: `recycler asl
// --function-arn` and `recycler asl --rollback --function-arn`.
func createModuleStateMachines(t *testing.T, functionARN string) string {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	api := sfn.NewFromConfig(cfg)
	var recycleARN string
	for _, m := range []struct{ name, flag string }{{"prod-recycle", ""}, {"prod-rollback", "--rollback"}} {
		args := []string{"asl", "--function-arn", functionARN}
		if m.flag != "" {
			args = append(args, m.flag)
		}
		r := runCLIFor(t, time.Minute, args...)
		if r.code != ExitOK {
			t.Fatalf("recycler %v: %s", args, r.stderr)
		}
		out, err := api.CreateStateMachine(t.Context(), &sfn.CreateStateMachineInput{Name: sdkaws.String(m.name), Definition: sdkaws.String(r.stdout),
			RoleArn: sdkaws.String("arn:aws:iam::123456789012:role/prod-recycler-states")})
		if err != nil {
			t.Fatal(err)
		}
		if m.flag == "" {
			recycleARN = *out.StateMachineArn
		}
	}
	return recycleARN
}

func longJobNodeOf(t *testing.T, env *sim.Environment) string {
	t.Helper()
	pods, err := env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(t.Context(), metav1.ListOptions{LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			if n, err := env.Kube.Client.CoreV1().Nodes().Get(t.Context(), p.Spec.NodeName, metav1.GetOptions{}); err == nil && !n.Spec.Unschedulable {
				return p.Spec.NodeName
			}
		}
	}
	t.Fatal("no long-job pod on a schedulable node")
	return ""
}

// waitForDrain returns once the execution loops in Drain.
func waitForDrain(t *testing.T, c *stepfn.Client, id string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		hist, err := c.History(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range hist {
			var d struct{ Name string }
			_ = json.Unmarshal(ev.Details, &d)
			if ev.Type == "TaskStateEntered" && d.Name == "Drain" {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("the execution never reached Drain")
}

// pinForever runs a selected pod on node that does not finish within the test.
func pinForever(t *testing.T, env *sim.Environment, node string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "forever", Namespace: sim.WorkloadNamespace,
			Labels: map[string]string{sim.LabelComponent: "forever"}, Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: "1h"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, TerminationGracePeriodSeconds: ptr.To[int64](1)},
	}
	if _, err := env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
