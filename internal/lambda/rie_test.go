package lambda_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

const account = "123456789012"

// The Lambda's role session, as the Lambda service hands it to the function.
var lambdaRole = sim.AssumedRole(account, "recycler-lambda", "recycler-fn", "ASIASIMULATEDLAMBDA", "lambda-secret", "lambda-session-token")

// invoke posts a payload to the Runtime API's invoke endpoint, as the Lambda
// service does for Step Functions.
func invoke(t *testing.T, f *testenv.Function, payload string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b, err := f.Post(ctx, []byte(payload))
	if err != nil {
		t.Fatalf("invoke: %v\nemulator output:\n%s", err, f.Output())
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("invoke answered %q: not a JSON object\nemulator output:\n%s", b, f.Output())
	}
	return out
}

func payload(t *testing.T, task, execution string, st recycle.State) string {
	t.Helper()
	b, err := json.Marshal(recycle.Payload{Task: task, Execution: execution, State: st})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBootstrapUnderTheRuntimeInterfaceEmulator(t *testing.T) {
	if os.Getenv(testenv.SkipEnv) == "1" {
		t.Skip(testenv.SkipEnv + "=1")
	}
	ctx := t.Context()
	bootstrap := testenv.BuildBootstrap(t)
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: 2, BootDelay: time.Second, Workloads: "none", EKS: &sim.EKSOptions{Mappings: []sim.Mapping{{
		ARN: "arn:aws:iam::" + account + ":role/recycler-lambda", Username: "recycler:{{SessionName}}", Groups: []string{"recycler"},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Down(context.Background()) })
	env.AWS.AddIdentity(lambdaRole)
	if err := env.BindGroup(ctx, "recycler", kube.PolicyRules(kube.RBAC())); err != nil {
		t.Fatal(err)
	}

	// The function's environment on AWS: its role's session keys, its cluster,
	// no kubeconfig.
	vars := env.FunctionVars(lambdaRole)
	emu := testenv.StartFunction(t, bootstrap, vars)

	insts := env.AWS.Status().Groups[0].Instances
	node, fenced := insts[0], insts[1]
	env.AWS.ResetCalls()

	// Resolve, for real: the node by providerID, its instance and group.
	out := invoke(t, emu, payload(t, recycle.TaskResolve, "exec-resolve", recycle.State{Request: recycle.NewRequest(node.NodeName)}))
	if out["errorType"] != nil || out["node"] != node.NodeName || out["instanceId"] != node.ID || out["group"] != env.Groups[0] {
		t.Fatalf("Resolve %s: %v, want its instance %s in %s\nemulator output:\n%s", node.NodeName, out, node.ID, env.Groups[0], emu.Output())
	}

	// A typed task error keeps its ASL name (not the Go type's, "Error").
	admin := env.Kube.Client
	n, err := admin.CoreV1().Nodes().Get(ctx, fenced.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: kube.TaintKey, Value: "someone-else", Effect: corev1.TaintEffectNoSchedule})
	if _, err := admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := mutations(env.AWS.Calls())
	for _, tc := range []struct {
		name, payload, errorType, message string
	}{
		{"node being recycled", payload(t, recycle.TaskResolve, "exec-2", recycle.State{Request: recycle.NewRequest(fenced.NodeName)}),
			recycle.ErrPrecondition, "already being recycled by execution someone-else"},
		{"malformed payload", `{"task": "Resolve", "execution": `, recycle.ErrBadInput, "payload is not a task invocation"},
		{"not an invocation", `[1, 2, 3]`, recycle.ErrBadInput, "payload is not a task invocation"},
		{"no execution", `{"task": "Resolve", "state": {}}`, recycle.ErrBadInput, "no task or no execution"},
		{"unknown task", payload(t, "Reboot", "exec-3", recycle.State{Request: recycle.NewRequest(node.NodeName)}), recycle.ErrBadInput, `unknown task "Reboot"`},
		{"invalid request", payload(t, recycle.TaskFence, "exec-4", recycle.State{Request: recycle.Request{Node: node.NodeName}}), recycle.ErrBadInput, "must be a positive duration"},
	} {
		out := invoke(t, emu, tc.payload)
		if out["errorType"] != tc.errorType || !strings.Contains(fmt.Sprint(out["errorMessage"]), tc.message) {
			t.Errorf("%s: errorType %v, errorMessage %q; want %s with %q", tc.name, out["errorType"], out["errorMessage"], tc.errorType, tc.message)
		}
	}
	if after := mutations(env.AWS.Calls()); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("refused invocations changed AWS: %v → %v", before, after)
	}
	if n, _ := admin.CoreV1().Nodes().Get(ctx, node.NodeName, metav1.GetOptions{}); n.Spec.Unschedulable || len(n.Spec.Taints) != 0 {
		t.Errorf("refused invocations changed node %s: %+v", node.NodeName, n.Spec)
	}

	// Every line the function logs is JSON with the execution, task and node.
	lines := functionLogLines(emu.Output())
	if len(lines) < 7 {
		t.Fatalf("want a log line per invocation, got %d:\n%s", len(lines), emu.Output())
	}
	for _, l := range lines {
		for _, k := range []string{"execution", "task", "node"} {
			if _, ok := l[k]; !ok {
				t.Errorf("log line lacks %q: %v", k, l)
			}
		}
	}
	if l := lines[0]; l["execution"] != "exec-resolve" || l["task"] != "Resolve" || l["node"] != node.NodeName || l["msg"] != "task done" {
		t.Errorf("first line = %v, want Resolve's success with its execution and node", l)
	}
}

// mutations are the AWS calls that change something.
func mutations(calls map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range calls {
		_, op, _ := strings.Cut(k, ":")
		if !strings.HasPrefix(k, "fault:") && !strings.HasPrefix(op, "Describe") && !strings.HasPrefix(op, "Get") {
			out[k] = v
		}
	}
	return out
}

// functionLogLines are the function's JSON log lines (the emulator's own lines are text).
func functionLogLines(out string) []map[string]any {
	var lines []map[string]any
	s := bufio.NewScanner(strings.NewReader(out))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var m map[string]any
		if json.Unmarshal(s.Bytes(), &m) == nil && m["function"] == "recycler" && m["msg"] != nil {
			lines = append(lines, m)
		}
	}
	return lines
}

func TestBootstrapRefusesToStartWithoutItsCluster(t *testing.T) {
	bootstrap := testenv.BuildBootstrap(t)
	for _, tc := range []struct{ cluster, want string }{
		{"", "RECYCLER_CLUSTER is not set"},
		{"prod/eu", "not an EKS cluster name"},
	} {
		cmd := exec.CommandContext(t.Context(), bootstrap)
		cmd.Env = []string{"RECYCLER_CLUSTER=" + tc.cluster, "AWS_LAMBDA_FUNCTION_NAME=recycler", "AWS_REGION=us-east-1"}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) {
			t.Errorf("cluster %q: %v\n%s\nwant exit 1 saying %q", tc.cluster, err, out, tc.want)
		}
	}
}
