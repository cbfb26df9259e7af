package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/sim"
)

func TestSimStatusReportsDisagreements(t *testing.T) {
	st := sim.Status{Region: "us-east-1", Groups: []sim.GroupStatus{{Name: "ng-1", Desired: 2, Instances: []sim.InstanceStatus{
		{ID: "i-1", State: "running", Lifecycle: "InService", ProviderID: "aws:///us-east-1a/i-1"},
		{ID: "i-2", State: "running", Lifecycle: "InService", ProviderID: "aws:///us-east-1b/i-2"},
	}}}, Standalone: []sim.InstanceStatus{{ID: "i-3", State: "terminated", ProviderID: "aws:///us-east-1c/i-3"}}}
	node := func(name, pid string) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: pid},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	var out bytes.Buffer
	problems := writeSimStatus(&out, st, []corev1.Node{node("a", "aws:///us-east-1a/i-1"), node("c", "aws:///us-east-1c/i-3"), node("z", "aws:///us-east-1a/i-9")})
	want := []string{"instance i-2 is running but has no Node", "instance i-3 is terminated but its Node c exists", "Node z (aws:///us-east-1a/i-9) has no instance"}
	if strings.Join(problems, "|") != strings.Join(want, "|") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(out.String(), "i-1") || !strings.Contains(out.String(), "Ready") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestSimCommandsWithoutARunningSimulator(t *testing.T) {
	state := filepath.Join(t.TempDir(), "env")
	for _, sub := range []string{"env", "status", "down"} {
		var stdout, stderr bytes.Buffer
		code := Execute(t.Context(), []string{"sim", sub, "--state", state}, strings.NewReader(""), &stdout, &stderr)
		if code != ExitBadInput || !strings.Contains(stderr.String(), "no simulator is running") {
			t.Fatalf("sim %s: exit %d, stderr %q", sub, code, stderr.String())
		}
	}
	// A state file whose process is gone is stale: down cleans it up.
	if err := os.WriteFile(state, []byte("export RECYCLER_SIM_PID='999999999'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := Execute(t.Context(), []string{"sim", "down", "--state", state}, strings.NewReader(""), &stdout, &stderr); code != ExitOK || !strings.Contains(stdout.String(), "stale") {
		t.Fatalf("sim down on a stale state: exit %d %q %q", code, stdout.String(), stderr.String())
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatal("stale state file not removed")
	}
	var e bytes.Buffer
	if code := Execute(t.Context(), []string{"sim", "up", "--state", state, "--nodes", "0"}, strings.NewReader(""), &stdout, &e); code != ExitBadInput {
		t.Fatalf("sim up --nodes 0: exit %d %q", code, e.String())
	}
}
