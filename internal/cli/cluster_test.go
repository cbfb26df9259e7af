package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// cliHelperEnv makes the test binary run the CLI (TestCLIHelperProcess) instead
// of tests: HTTPS_PROXY and SSL_CERT_FILE are read once per process by Go, so
// commands that must reach STS through the simulator's proxy run in a fresh one.
const cliHelperEnv = "RECYCLER_TEST_CLI_ARGS"

func TestCLIHelperProcess(t *testing.T) {
	args, ok := os.LookupEnv(cliHelperEnv)
	if !ok {
		t.Skip("runs the CLI for another test")
	}
	os.Exit(Execute(context.Background(), strings.Split(args, "\x1f"), strings.NewReader(""), os.Stdout, os.Stderr))
}

// runCLIProcess runs the CLI in a child process with exactly env (plus PATH/HOME).
func runCLIProcess(t *testing.T, env [][2]string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCLIHelperProcess$")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), cliHelperEnv + "=" + strings.Join(args, "\x1f")}
	for _, kv := range env {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run the CLI: %v", err)
	}
	return cmdResult{code, stdout.String(), stderr.String()}
}

// withVar returns vars with name set to value (replaced or added); value ""
// drops it.
func withVar(vars [][2]string, name, value string) [][2]string {
	var out [][2]string
	for _, kv := range vars {
		if kv[0] != name {
			out = append(out, kv)
		}
	}
	if value != "" {
		out = append(out, [2]string{name, value})
	}
	return out
}

// --cluster needs neither a kubeconfig nor the aws CLI: an EKS-like control
// plane (apiserver → aws-iam-authenticator → simulated STS) accepts the token.
func TestClusterFlagConnectsWithoutAKubeconfig(t *testing.T) {
	if os.Getenv(testenv.SkipEnv) == "1" {
		t.Skip(testenv.SkipEnv + "=1")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: 2, BootDelay: time.Second, Workloads: "none", EKS: &sim.EKSOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Down(context.Background()) })
	inst := env.AWS.Status().Groups[0].Instances[0]
	// No KUBECONFIG, and the cluster from RECYCLER_CLUSTER.
	vars := withVar(env.Vars(), "KUBECONFIG", "")
	state := filepath.Join(t.TempDir(), "recycler.db")

	res := runCLIProcess(t, vars, "recycle", "--state", state, "--dry-run", inst.NodeName)
	if res.code != ExitOK || !strings.Contains(res.stdout, "Would recycle node "+inst.NodeName+" (instance "+inst.ID) {
		t.Fatalf("recycle --dry-run with RECYCLER_CLUSTER: exit %d\nstdout: %s\nstderr: %s\nauthenticator log:\n%s", res.code, res.stdout, res.stderr, env.Authenticator.Log())
	}
	res = runCLIProcess(t, withVar(vars, "RECYCLER_CLUSTER", ""), "recycle", "--state", state, "--dry-run", "--cluster", env.Cluster, inst.NodeName)
	if res.code != ExitOK {
		t.Fatalf("recycle --dry-run --cluster: exit %d\nstderr: %s", res.code, res.stderr)
	}

	for _, tc := range []struct {
		name string
		vars [][2]string
		args []string
		want []string
	}{
		{"unknown cluster", vars, []string{"--cluster", "nope"}, []string{"EKS cluster not found", "nope"}},
		{"malformed name", vars, []string{"--cluster", "-x"}, []string{"not an EKS cluster name"}},
		{"with a kubeconfig too", vars, []string{"--kubeconfig", env.Kube.Kubeconfig}, []string{"--cluster and --kubeconfig both given"}},
		{"other region", withVar(withVar(vars, "AWS_REGION", "eu-west-1"), "AWS_DEFAULT_REGION", "eu-west-1"), nil,
			[]string{"does not match the AWS configuration", "its region is us-east-1, the AWS configuration's is eu-west-1"}},
		{"other account", withVar(withVar(withVar(vars, "AWS_ACCESS_KEY_ID", "AKIDOTHERACCOUNT"), "AWS_SECRET_ACCESS_KEY", "x"), "AWS_SESSION_TOKEN", "t"), nil,
			[]string{"its account is 123456789012, the AWS credentials' is 210987654321"}},
	} {
		if tc.name == "other account" {
			env.AWS.AddIdentity(sim.AssumedRole("210987654321", "ops", "alice", "AKIDOTHERACCOUNT", "x", "t"))
		}
		args := append([]string{"recycle", "--state", state, "--dry-run"}, tc.args...)
		res := runCLIProcess(t, tc.vars, append(args, inst.NodeName)...)
		if res.code != ExitBadInput {
			t.Errorf("%s: exit %d, want %d\nstderr: %s", tc.name, res.code, ExitBadInput, res.stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(res.stderr, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, res.stderr)
			}
		}
	}
	if calls := env.AWS.Calls(); calls["autoscaling:EnterStandby"]+calls["ec2:TerminateInstances"] != 0 {
		t.Errorf("dry runs changed something: %v", calls)
	}
}
