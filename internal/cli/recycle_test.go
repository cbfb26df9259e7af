package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// simulated is the one environment (control plane + simulated AWS) every test of
// this file shares: started by the first test that needs it, stopped by TestMain.
// The cases that change it for good (a detached instance, a real recycle) come last,
// each on its own node; so one environment serves one pass (-count=1).
// A package variable because TestMain and the tests have nothing else in common.
var simulated struct {
	once sync.Once
	env  *sim.Environment
	err  error
	fix  fixture
}

func TestMain(m *testing.M) {
	code := m.Run()
	if simulated.env != nil {
		if err := simulated.env.Down(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "sim down: %v\n", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// fixture names what the tests act on, as it was right after the environment started.
type fixture struct {
	group     string
	nodes     []string // one per instance, in instance order
	instances []string
	asg       *autoscaling.Client
	kube      *kube.Client
	env       *sim.Environment
}

// simEnv returns the shared environment and points KUBECONFIG and the AWS SDK at it
// for the calling test.
func simEnv(t *testing.T) fixture {
	t.Helper()
	if os.Getenv(testenv.SkipEnv) == "1" {
		t.Skip(testenv.SkipEnv + "=1")
	}
	simulated.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// No workloads: bad input must be refused before any pod would matter.
		env, err := sim.Up(ctx, sim.UpOptions{Nodes: 3, BootDelay: 2 * time.Second, Workloads: "none"})
		if err != nil {
			simulated.err = err
			return
		}
		simulated.env = env
		simulated.fix, simulated.err = newFixture(ctx, env)
	})
	if simulated.err != nil {
		t.Fatalf("simulated environment: %v", simulated.err)
	}
	for _, kv := range simulated.env.Vars() {
		t.Setenv(kv[0], kv[1])
	}
	// A developer's shell may carry recycler defaults; these tests choose every flag.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) && name != "RECYCLER_SIM_ADMIN" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	return simulated.fix
}

func newFixture(ctx context.Context, env *sim.Environment) (fixture, error) {
	f := fixture{env: env, group: env.Groups[0], kube: kube.New(env.Kube.Client)}
	for _, inst := range env.AWS.Status().Groups[0].Instances {
		f.nodes = append(f.nodes, inst.NodeName)
		f.instances = append(f.instances, inst.ID)
	}
	if len(f.nodes) != 3 {
		return f, fmt.Errorf("want 3 instances in %s, got %d", f.group, len(f.nodes))
	}
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(env.Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithBaseEndpoint(env.AWS.URL()),
	)
	if err != nil {
		return f, err
	}
	f.asg = autoscaling.NewFromConfig(cfg)
	return f, nil
}

// world is what a user could observe of the cluster and the account: every Node's
// spec, labels and annotations, every group and instance, and the count of AWS calls
// that change something.
type world struct {
	nodes      map[string]nodeView
	groups     []sim.GroupStatus
	standalone []sim.InstanceStatus
	mutations  map[string]int
}

type nodeView struct {
	Spec        corev1.NodeSpec
	Labels      map[string]string
	Annotations map[string]string
}

func observe(t *testing.T, f fixture) world {
	t.Helper()
	list, err := f.env.Kube.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	w := world{nodes: map[string]nodeView{}, mutations: map[string]int{}}
	for _, n := range list.Items {
		w.nodes[n.Name] = nodeView{Spec: n.Spec, Labels: n.Labels, Annotations: n.Annotations}
	}
	st := f.env.AWS.Status()
	w.groups, w.standalone = st.Groups, st.Standalone
	for call, n := range f.env.AWS.Calls() {
		_, op, _ := strings.Cut(call, ":")
		if !strings.HasPrefix(call, "fault:") && !strings.HasPrefix(op, "Describe") && !strings.HasPrefix(op, "Get") {
			w.mutations[call] = n
		}
	}
	return w
}

func assertUnchanged(t *testing.T, before, after world) {
	t.Helper()
	for name, b := range before.nodes {
		a, ok := after.nodes[name]
		switch {
		case !ok:
			t.Errorf("node %s was deleted", name)
		case !reflect.DeepEqual(a, b):
			t.Errorf("node %s changed:\nbefore %+v\nafter  %+v", name, b, a)
		}
	}
	for name := range after.nodes {
		if _, ok := before.nodes[name]; !ok {
			t.Errorf("node %s appeared", name)
		}
	}
	if !reflect.DeepEqual(before.groups, after.groups) {
		t.Errorf("groups changed:\nbefore %+v\nafter  %+v", before.groups, after.groups)
	}
	if !reflect.DeepEqual(before.standalone, after.standalone) {
		t.Errorf("standalone instances changed:\nbefore %+v\nafter  %+v", before.standalone, after.standalone)
	}
	if !reflect.DeepEqual(before.mutations, after.mutations) {
		t.Errorf("AWS calls that change something were made:\nbefore %v\nafter  %v", before.mutations, after.mutations)
	}
}

// assertNoExecution checks the state file holds no execution, or only refused ones.
func assertNoExecution(t *testing.T, statePath string) {
	t.Helper()
	if _, err := os.Stat(statePath); errors.Is(err, os.ErrNotExist) {
		return
	}
	eng, err := engine.Open(context.Background(), engine.Options{Path: statePath, Passive: true})
	if err != nil {
		t.Fatalf("open state: %v", err)
	}
	defer eng.Close()
	exs, err := eng.List(context.Background(), engine.ListFilter{})
	if err != nil {
		t.Fatalf("list executions: %v", err)
	}
	for _, ex := range exs {
		if ex.Status != engine.StatusFailed || (ex.Error != recycle.ErrBadInput && ex.Error != recycle.ErrPrecondition) {
			t.Errorf("execution %s in the state file: %s %s %s", ex.ID, ex.Status, ex.Error, ex.Cause)
		}
	}
}

type cmdResult struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Execute(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return cmdResult{code, stdout.String(), stderr.String()}
}

func TestRecycleRefusesBadInput(t *testing.T) {
	f := simEnv(t)
	n0, n1, n2 := f.nodes[0], f.nodes[1], f.nodes[2]
	const otherExecution = "other-execution-42"
	cases := []struct {
		name  string
		setup func(t *testing.T) // makes the precondition; runs before the "before" snapshot
		env   map[string]string
		args  []string // after "recycle"
		want  []string // substrings of stderr
	}{
		// Every flag's invalid values.
		{name: "max-wait zero", args: []string{n0, "--max-wait", "0"},
			want: []string{n0, "--max-wait must be a positive duration such as 90m or 24h, got 0s"}},
		{name: "max-wait negative", args: []string{n0, "--max-wait", "-5m"},
			want: []string{"--max-wait must be a positive duration", "got -5m0s"}},
		{name: "max-wait not a duration", args: []string{n0, "--max-wait", "abc"},
			want: []string{`invalid argument "abc" for "--max-wait" flag`, "recycler recycle --help"}},
		{name: "replacement-timeout zero", args: []string{n0, "--replacement-timeout", "0"},
			want: []string{"--replacement-timeout must be a positive duration", "got 0s"}},
		{name: "workload-timeout negative", args: []string{n0, "--workload-timeout", "-1s"},
			want: []string{"--workload-timeout must be a positive duration", "got -1s"}},
		{name: "force-grace below a second", args: []string{n0, "--force-grace", "500ms"},
			want: []string{"--force-grace must be at least 1s", "got 500ms"}},
		{name: "on-timeout unknown", args: []string{n0, "--on-timeout", "maybe"},
			want: []string{`--on-timeout "maybe" is not one of fail, evict, force`}},
		{name: "retire unknown", args: []string{n0, "--retire", "delete"},
			want: []string{`--retire "delete" is not one of terminate, stop`}},
		{name: "selector unparsable", args: []string{n0, "--selector", "a in ("},
			want: []string{`--selector "a in (" is not a valid label selector`, "example: app=airflow-worker"}},
		{name: "namespace invalid", args: []string{n0, "--namespace", "Bad_NS"},
			want: []string{`--namespace "Bad_NS" is not a valid namespace name`, "lower case"}},
		{name: "namespace twice", args: []string{n0, "--namespace", "jobs", "--namespace", "jobs"},
			want: []string{`--namespace "jobs" given twice`}},
		{name: "ready-label key invalid", args: []string{n0, "--ready-label", "bad key=v"},
			want: []string{`--ready-label key "bad key" is invalid`}},
		{name: "ready-label not key=value", args: []string{n0, "--ready-label", "novalue"},
			want: []string{`"--ready-label" flag`, "recycler recycle --help"}},
		{name: "check-seconds zero", args: []string{n0, "--check-seconds", "0"},
			want: []string{"--check-seconds must be between 1 and 600", "got 0"}},
		{name: "check-seconds too large", args: []string{n0, "--check-seconds", "601"},
			want: []string{"--check-seconds must be between 1 and 600", "got 601"}},
		{name: "evict-timeout longer than max-wait", args: []string{n0, "--max-wait", "1h", "--evict-timeout", "2h"},
			want: []string{"--evict-timeout 2h0m0s is longer than --max-wait 1h0m0s"}},
		{name: "evict-timeout with on-timeout evict", args: []string{n0, "--evict-timeout", "10m", "--on-timeout", "evict"},
			want: []string{"--evict-timeout with --on-timeout evict would change nothing", "fail or force"}},
		{name: "waits that outgrow the history budget", args: []string{n0, "--max-wait", "24h", "--check-seconds", "20"},
			want: []string{"could write", "history events", "25,000", "raise --check-seconds to 191 or more", "lower --max-wait to"}},
		{name: "rollback-timeout zero", args: []string{n0, "--rollback-timeout", "0"},
			want: []string{"--rollback-timeout must be a positive duration of at most 6h", "got 0s"}},
		{name: "rollback-timeout negative", args: []string{n0, "--rollback-timeout", "-5m"},
			want: []string{"--rollback-timeout must be a positive duration", "got -5m0s"}},
		{name: "rollback-timeout beyond the maximum", args: []string{n0, "--rollback-timeout", "7h"},
			want: []string{"--rollback-timeout must be a positive duration of at most 6h", "needs a person", "got 7h0m0s"}},
		{name: "evict-others not a bool", args: []string{n0, "--evict-others=maybe"},
			want: []string{`invalid argument "maybe" for "--evict-others" flag`}},
		{name: "output yaml", args: []string{n0, "-o", "yaml"},
			want: []string{`-o "yaml": use text or json`}},
		{name: "unknown flag", args: []string{n0, "--max-wiat", "1h"},
			want: []string{"unknown flag: --max-wiat", "recycler recycle --help"}},
		{name: "several mistakes at once", args: []string{n0, "--max-wait", "0", "--retire", "delete", "--on-timeout", "maybe"},
			want: []string{"--max-wait must be a positive", `--retire "delete"`, `--on-timeout "maybe"`}},
		{name: "kubeconfig missing", args: []string{n0, "--kubeconfig", "/nonexistent/kubeconfig"},
			want: []string{"kubeconfig", "/nonexistent/kubeconfig", "--kubeconfig"}},
		// Targets.
		{name: "no target", args: nil,
			want: []string{"no node given", "name one or more nodes", "instance id"}},
		{name: "same target twice", args: []string{n0, n1, n0},
			want: []string{n0 + " named twice", "name each node once"}},
		{name: "same node by name and instance id", args: []string{n0, f.instances[0]},
			want: []string{n0, f.instances[0], "same node", "name each node once"}},
		{name: "unknown node", args: []string{"no-such-node"},
			want: []string{`node "no-such-node" not found`, "kubectl get nodes", "nothing was changed"}},
		{name: "node name invalid", args: []string{"Bad_Node"},
			want: []string{`node name "Bad_Node" is not a valid Kubernetes node name`}},
		{name: "malformed instance id", args: []string{"i-xyz"},
			want: []string{`instance id "i-xyz" is malformed`, "8 or 17 hexadecimal digits"}},
		{name: "unknown instance id", args: []string{"i-0123456789abcdef0"},
			want: []string{"no node has providerID for instance i-0123456789abcdef0", "check the instance ID", "nothing was changed"}},
		{name: "one bad target among good ones", args: []string{n0, n1, "no-such-node"},
			want: []string{`node "no-such-node" not found`, "nothing was changed"}},
		{name: "one malformed target among good ones", args: []string{n0, "i-xyz", n1},
			want: []string{`instance id "i-xyz" is malformed`}},
		// Refused preconditions.
		{name: "node without providerID",
			setup: func(t *testing.T) { createPlainNode(t, f, "no-provider-id", "") },
			args:  []string{"no-provider-id"},
			want:  []string{"node no-provider-id has no spec.providerID", "Auto Scaling group", "nothing was changed"}},
		{name: "node of another cloud",
			setup: func(t *testing.T) { createPlainNode(t, f, "gce-node", "gce://project/us-central1-a/vm-1") },
			args:  []string{"gce-node"},
			want:  []string{"gce-node", "malformed provider id", "aws:///<availability-zone>/<instance-id>", "nothing was changed"}},
		{name: "node whose instance does not exist",
			setup: func(t *testing.T) { createPlainNode(t, f, "ghost-node", "aws:///us-east-1a/i-0123456789abcdef1") },
			args:  []string{"ghost-node"},
			want:  []string{"instance i-0123456789abcdef1 does not exist", "nothing was changed"}},
		{name: "instance id that two nodes claim",
			setup: func(t *testing.T) { createPlainNode(t, f, "stale-node", providerID(t, f, f.instances[0])) },
			args:  []string{f.instances[0]},
			want:  []string{f.instances[0], "stale-node", n0, "delete the stale Node objects", "nothing was changed"}},
		{name: "pod without a controller on the node",
			setup: func(t *testing.T) { barePod(t, f, n0, "loner") },
			args:  []string{n0},
			want:  []string{"have no controller", "default/loner", "--delete-unmanaged", "nothing was changed"}},
		{name: "group with Launch suspended",
			setup: func(t *testing.T) { suspend(t, f, "Launch") },
			args:  []string{n0},
			want:  []string{"group " + f.group, "Launch", "resume-processes", "nothing was changed"}},
		{name: "node already being recycled",
			setup: func(t *testing.T) { fence(t, f, n1, otherExecution) },
			args:  []string{n1},
			want:  []string{n1 + " is already being recycled by execution " + otherExecution, "recycler abort " + otherExecution, "nothing was changed"}},
		{name: "fenced node among good ones",
			setup: func(t *testing.T) { fence(t, f, n1, otherExecution) },
			args:  []string{n0, n1},
			want:  []string{n1 + " is already being recycled"}},
		{name: "group at MaxSize",
			setup: func(t *testing.T) { setMaxSize(t, f, 3) },
			args:  []string{n0},
			want:  []string{"group " + f.group + " is at MaxSize (3 of 3)", "Raise MaxSize", "--allow-raise-max", "--no-surge", "nothing was changed"}},
		{name: "group at MaxSize dry run",
			setup: func(t *testing.T) { setMaxSize(t, f, 3) },
			args:  []string{n0, "--dry-run"},
			want:  []string{"is at MaxSize", "--allow-raise-max"}},
		// Environment defaults.
		{name: "environment max-wait not a duration", env: map[string]string{"RECYCLER_MAX_WAIT": "abc"},
			args: []string{n0},
			want: []string{`environment variable RECYCLER_MAX_WAIT="abc"`, `invalid argument "abc"`}},
		{name: "environment check-seconds not a number", env: map[string]string{"RECYCLER_CHECK_SECONDS": "ten"},
			args: []string{n0},
			want: []string{"RECYCLER_CHECK_SECONDS", `"ten"`}},
		{name: "environment on-timeout unknown", env: map[string]string{"RECYCLER_ON_TIMEOUT": "maybe"},
			args: []string{n0},
			want: []string{`--on-timeout "maybe" is not one of fail, evict, force`, "from the environment: RECYCLER_ON_TIMEOUT=maybe"}},
		{name: "environment rollback-timeout beyond the maximum", env: map[string]string{"RECYCLER_ROLLBACK_TIMEOUT": "48h"},
			args: []string{n0},
			want: []string{"--rollback-timeout must be a positive duration of at most 6h", "got 48h0m0s", "from the environment: RECYCLER_ROLLBACK_TIMEOUT=48h"}},
		{name: "instance not InService",
			setup: func(t *testing.T) { standby(t, f, f.instances[2]) },
			args:  []string{n2},
			want:  []string{"instance " + f.instances[2] + " in group " + f.group + " is Standby, not InService", "recycle it once it is InService"}},
		// Last: detaching an instance is not undone.
		{name: "instance in no group",
			setup: func(t *testing.T) { detach(t, f, f.instances[2], n2) },
			args:  []string{n2},
			want:  []string{"instance " + f.instances[2] + " (node " + n2 + ") is in no Auto Scaling group", "nothing was changed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			state := filepath.Join(t.TempDir(), "recycler.db")
			before := observe(t, f)
			res := runCLI(t, append([]string{"recycle", "--state", state}, tc.args...)...)
			t.Logf("recycler recycle %s → exit %d\n%s", strings.Join(tc.args, " "), res.code, res.stderr)
			if res.code != ExitBadInput {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.code, ExitBadInput, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if strings.Contains(res.stderr, "recycling ") {
				t.Errorf("a recycle started:\n%s", res.stderr)
			}
			if strings.Contains(res.stdout, "Would recycle") && !slices.Contains(tc.args, "--dry-run") {
				t.Errorf("printed a plan without --dry-run:\n%s", res.stdout)
			}
			assertUnchanged(t, before, observe(t, f))
			assertNoExecution(t, state)
		})
	}
}

func TestRecycleDryRunPrintsThePlanAndChangesNothing(t *testing.T) {
	f := simEnv(t)
	state := filepath.Join(t.TempDir(), "recycler.db")
	before := observe(t, f)
	res := runCLI(t, "recycle", "--state", state, f.nodes[0], f.instances[1], "--dry-run",
		"--selector", "app=report", "--namespace", "jobs", "--max-wait", "2h", "--on-timeout", "evict", "--retire", "stop")
	if res.code != ExitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	g := before.groups[0]
	for _, w := range []string{
		fmt.Sprintf("Would recycle node %s (instance %s in ", f.nodes[0], f.instances[0]),
		fmt.Sprintf("Would recycle node %s (instance %s in ", f.nodes[1], f.instances[1]),
		fmt.Sprintf("group %s: desired %d, max %d", f.group, g.Desired, g.Max),
		"taint recycler.io/recycling:NoSchedule and cordon " + f.nodes[0],
		"wait up to 2h0m0s for pods matching \"app=report\" in namespaces jobs, then evict",
		"stop it, delete node " + f.nodes[1],
	} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, res.stdout)
		}
	}
	assertUnchanged(t, before, observe(t, f))
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--dry-run created the state file %s", state)
	}
}

// The ways out that the MaxSize refusal names are real: each passes the checks.
func TestMaxSizeRefusalNamesWorkingWaysOut(t *testing.T) {
	f := simEnv(t)
	setMaxSize(t, f, 3)
	for _, way := range []string{"--allow-raise-max", "--no-surge"} {
		before := observe(t, f)
		res := runCLI(t, "recycle", "--state", filepath.Join(t.TempDir(), "recycler.db"), f.nodes[0], way, "--dry-run")
		if res.code != ExitOK || !strings.Contains(res.stdout, "Would recycle node "+f.nodes[0]) {
			t.Errorf("%s --dry-run at MaxSize: exit %d\nstdout: %s\nstderr: %s", way, res.code, res.stdout, res.stderr)
		}
		assertUnchanged(t, before, observe(t, f))
	}
}

func TestExecutionCommandsRefuseAnUnknownExecution(t *testing.T) {
	f := simEnv(t) // abort connects to the cluster and AWS before it looks the execution up
	for _, tc := range []struct {
		cmd         string
		stateExists bool
		want        []string
	}{
		{"status", true, []string{`no execution "NOPE" in this state file`, "recycler list"}},
		{"history", true, []string{`no execution "NOPE" in this state file`, "recycler list"}},
		{"abort", true, []string{`no execution "NOPE" in this state file`, "recycler list"}},
		{"status", false, []string{`no execution "NOPE"`, "--state"}},
		{"history", false, []string{`no execution "NOPE"`, "--state"}},
		{"abort", false, []string{`no execution "NOPE"`}},
	} {
		t.Run(fmt.Sprintf("%s state file exists %v", tc.cmd, tc.stateExists), func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "recycler.db")
			if tc.stateExists {
				eng, err := engine.Open(context.Background(), engine.Options{Path: state})
				if err != nil {
					t.Fatal(err)
				}
				eng.Close()
			}
			before := observe(t, f)
			res := runCLI(t, tc.cmd, "NOPE", "--state", state)
			t.Logf("recycler %s NOPE → exit %d\n%s", tc.cmd, res.code, res.stderr)
			if res.code != ExitBadInput {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.code, ExitBadInput, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			assertUnchanged(t, before, observe(t, f))
			assertNoExecution(t, state)
			if _, err := os.Stat(state); tc.cmd != "abort" && !tc.stateExists && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("recycler %s created the state file %s", tc.cmd, state)
			}
		})
	}
}

// createPlainNode registers a Node without spec.providerID and waits until it is
// Ready with no startup taint left, so that nothing but Recycler could change it.
// barePod runs a pod without a controller on node until the test ends.
func barePod(t *testing.T, f fixture, node, name string) {
	t.Helper()
	ctx := context.Background()
	cs := f.env.Kube.Client
	_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = cs.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return err != nil, nil
		})
	})
}

func createPlainNode(t *testing.T, f fixture, name, providerID string) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.env.Kube.CreateNode(ctx, testenv.NodeSpec{Name: name, ProviderID: providerID}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.env.Kube.DeleteNode(context.Background(), name) })
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := f.env.Kube.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return nodeReady(n) && len(n.Spec.Taints) == 0, nil
	})
	if err != nil {
		t.Fatalf("node %s not Ready and untainted: %v", name, err)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func providerID(t *testing.T, f fixture, instance string) string {
	t.Helper()
	for _, g := range f.env.AWS.Status().Groups {
		for _, i := range g.Instances {
			if i.ID == instance {
				return i.ProviderID
			}
		}
	}
	t.Fatalf("no instance %s", instance)
	return ""
}

// suspend suspends a scaling process of the group until the test ends.
func suspend(t *testing.T, f fixture, process string) {
	t.Helper()
	g, p := aws.String(f.group), []string{process}
	if _, err := f.asg.SuspendProcesses(context.Background(), &autoscaling.SuspendProcessesInput{AutoScalingGroupName: g, ScalingProcesses: p}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := f.asg.ResumeProcesses(context.Background(), &autoscaling.ResumeProcessesInput{AutoScalingGroupName: g, ScalingProcesses: p}); err != nil {
			t.Errorf("resume %s: %v", process, err)
		}
	})
}

// fence fences node for another execution, as a recycle running elsewhere would.
func fence(t *testing.T, f fixture, node, execution string) {
	t.Helper()
	if _, err := f.kube.Fence(context.Background(), node, execution); err != nil {
		t.Fatal(err)
	}
	waitCordonTaint(t, f, node)
	t.Cleanup(func() {
		if err := f.kube.Unfence(context.Background(), node, execution); err != nil {
			t.Errorf("unfence %s: %v", node, err)
		}
		waitCordonTaint(t, f, node)
	})
}

// waitCordonTaint waits until the controller-manager has made node's
// node.kubernetes.io/unschedulable taint follow spec.unschedulable, so that the
// "before" snapshot is not taken in the middle of that change.
func waitCordonTaint(t *testing.T, f fixture, node string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := f.env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		tainted := slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeUnschedulable })
		return tainted == n.Spec.Unschedulable, nil
	})
	if err != nil {
		t.Fatalf("node %s: unschedulable taint does not follow the cordon: %v", node, err)
	}
}

func setMaxSize(t *testing.T, f fixture, maxSize int32) {
	t.Helper()
	ctx := context.Background()
	out, err := f.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{f.group}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		t.Fatalf("describe group %s: %v", f.group, err)
	}
	prev := aws.ToInt32(out.AutoScalingGroups[0].MaxSize)
	if _, err := f.asg.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String(f.group), MaxSize: aws.Int32(maxSize)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := f.asg.UpdateAutoScalingGroup(context.Background(), &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String(f.group), MaxSize: aws.Int32(prev)}); err != nil {
			t.Errorf("restore MaxSize: %v", err)
		}
	})
}

// standby puts instance in Standby (desired capacity decremented, so the group
// launches nothing) until the test ends.
func standby(t *testing.T, f fixture, instance string) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.asg.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
		AutoScalingGroupName: aws.String(f.group), InstanceIds: []string{instance}, ShouldDecrementDesiredCapacity: aws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	waitLifecycle(t, f, instance, "Standby")
	t.Cleanup(func() {
		if _, err := f.asg.ExitStandby(context.Background(), &autoscaling.ExitStandbyInput{
			AutoScalingGroupName: aws.String(f.group), InstanceIds: []string{instance},
		}); err != nil {
			t.Errorf("exit standby: %v", err)
		}
		waitLifecycle(t, f, instance, "InService")
	})
}

func waitLifecycle(t *testing.T, f fixture, instance, lifecycle string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, g := range f.env.AWS.Status().Groups {
			for _, i := range g.Instances {
				if i.ID == instance {
					return i.Lifecycle == lifecycle, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("instance %s never %s: %v", instance, lifecycle, err)
	}
}

// detach takes instance out of its group (desired capacity decremented, so the group
// launches nothing) and checks that its Node stays.
func detach(t *testing.T, f fixture, instance, node string) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.asg.DetachInstances(ctx, &autoscaling.DetachInstancesInput{
		AutoScalingGroupName: aws.String(f.group), InstanceIds: []string{instance}, ShouldDecrementDesiredCapacity: aws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	// AWS holds it in Detaching while it leaves the group's load balancers.
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		st := f.env.AWS.Status()
		return slices.ContainsFunc(st.Standalone, func(i sim.InstanceStatus) bool { return i.ID == instance && i.State == "running" }), nil
	})
	if err != nil {
		t.Fatalf("instance %s is not a running standalone instance after detach: %v", instance, err)
	}
	if _, err := f.env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Fatalf("node %s of the detached instance: %v", node, err)
	}
}

// Looking at a recycle, while it runs in another process or after it was detached,
// must not disturb it: `recycler resume` still finishes it. (Aborting it from another
// process: resume_test.go.)
func TestLookingAtARecycleLeavesItAlone(t *testing.T) {
	f := simEnv(t)
	state := filepath.Join(t.TempDir(), "recycler.db")
	node := f.nodes[1]
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	var stdout, stderr bytes.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- Execute(ctx, []string{"recycle", node, "--state", state}, strings.NewReader(""), &stdout, &stderr)
	}()
	id := runningExecution(t, state)
	look := func(when string) {
		for _, c := range []struct {
			args []string
			want string // on stdout
		}{{[]string{"status", id}, "RUNNING"}, {[]string{"list"}, node}, {[]string{"history", id}, ""}} {
			args := c.args
			res := runCLI(t, append(args, "--state", state)...)
			t.Logf("%s: recycler %s → exit %d\n%s%s", when, strings.Join(args, " "), res.code, res.stdout, res.stderr)
			if res.code != ExitOK || !strings.Contains(res.stdout, c.want) {
				t.Errorf("%s: recycler %s: exit %d\nstdout: %s\nstderr: %s", when, strings.Join(args, " "), res.code, res.stdout, res.stderr)
			}
		}
	}
	look("while the recycle runs")
	// Ctrl-C without a terminal detaches: the execution stays where it is.
	interrupt()
	if code := <-exited; code != ExitNeedsPerson || !strings.Contains(stderr.String(), "detached") {
		t.Fatalf("interrupted recycle: exit %d\n%s", code, stderr.String())
	}
	look("after the recycle was detached")
	res := runCLI(t, "resume", "--state", state)
	if res.code != ExitOK || !strings.Contains(res.stderr, "execution "+id+" succeeded") {
		t.Fatalf("resume: exit %d\n%s", res.code, res.stderr)
	}
}

// runningExecution waits until the state file at path has a running execution and returns its id.
func runningExecution(t *testing.T, path string) string {
	t.Helper()
	var id string
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, err := os.Stat(path); err != nil {
			return false, nil
		}
		eng, err := engine.Open(ctx, engine.Options{Path: path, Passive: true})
		if err != nil {
			return false, nil
		}
		defer eng.Close()
		exs, err := eng.List(ctx, engine.ListFilter{Status: engine.StatusRunning})
		if err != nil || len(exs) == 0 {
			return false, nil
		}
		id = exs[0].ID
		return true, nil
	})
	if err != nil {
		t.Fatalf("no running execution in %s: %v", path, err)
	}
	return id
}

// --rollback-timeout (RECYCLER_ROLLBACK_TIMEOUT) reaches the request every command
// builds from the recycle flags (recycle, rollout, serve).
func TestRollbackTimeoutFlagReachesTheRequest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{{nil, recycle.DefaultRollbackTimeout}, {[]string{"--rollback-timeout", "2h30m"}, 150 * time.Minute}} {
		f := &requestFlags{}
		fs := pflag.NewFlagSet("recycle", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		r := f.request("node-a")
		if err := errors.Join(f.check(), r.Validate()); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := time.Duration(r.RollbackTimeout); got != tc.want {
			t.Errorf("%v: rollbackTimeout %s, want %s", tc.args, got, tc.want)
		}
	}
}
