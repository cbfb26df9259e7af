package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// Who drives an execution (docs/operations.md), through the real CLI on the real
// control plane and simulated AWS. These tests recycle nodes for good, so they pick
// whichever nodes the group has now.

// member is a node of the group that nothing has touched.
type member struct{ node, instance string }

func members(t *testing.T, f fixture) []member {
	t.Helper()
	var out []member
	for _, g := range f.env.AWS.Status().Groups {
		for _, i := range g.Instances {
			if i.Lifecycle != "InService" || i.NodeName == "" {
				continue
			}
			n, err := f.env.Kube.Client.CoreV1().Nodes().Get(context.Background(), i.NodeName, metav1.GetOptions{})
			if err != nil || n.Spec.Unschedulable || !nodeReady(n) {
				continue
			}
			if _, fenced := n.Annotations[kube.AnnotationFenced]; fenced {
				continue
			}
			out = append(out, member{i.NodeName, i.ID})
		}
	}
	slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.node, b.node) })
	return out
}

// background runs a command the way a second terminal would: its own engine on the
// same state file, interrupted (Ctrl-C without a terminal: detach) by cancel.
type background struct {
	cancel         context.CancelFunc
	exited         chan int
	stdout, stderr *testenv.SyncBuffer
}

func runBackground(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, exited: make(chan int, 1), stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}}
	go func() { b.exited <- Execute(ctx, args, strings.NewReader(""), b.stdout, b.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.exited:
		case <-time.After(time.Minute):
			t.Errorf("recycler %s did not exit", strings.Join(args, " "))
		}
	})
	return b
}

func (b *background) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-b.exited:
		b.exited <- code
		return code
	case <-time.After(3 * time.Minute):
		t.Fatalf("still running after 3 minutes:\n%s", b.stderr.String())
		return -1
	}
}

// waitUntil polls cond for up to 5 minutes (what it waits for is another command's progress).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// runLong is runCLI for a command that recycles a node to its end.
func runLong(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Execute(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return cmdResult{code, stdout.String(), stderr.String()}
}

func jsonOut[T any](t *testing.T, res cmdResult, args ...string) T {
	t.Helper()
	var v T
	if res.code != ExitOK {
		t.Fatalf("recycler %s: exit %d\n%s%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	if err := json.Unmarshal([]byte(res.stdout), &v); err != nil {
		t.Fatalf("recycler %s -o json: %v\n%s", strings.Join(args, " "), err, res.stdout)
	}
	return v
}

func viewCmd[T any](t *testing.T, args ...string) T {
	t.Helper()
	args = append(args, "-o", "json")
	return jsonOut[T](t, runCLI(t, args...), args...)
}

// noMarks: no node carries Recycler's fence, and once the group has settled (a
// rollback may be terminating a replacement) no instance is in Standby.
func noMarks(t *testing.T, f fixture) {
	t.Helper()
	nodes, err := f.env.Kube.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if _, ok := n.Annotations[kube.AnnotationFenced]; ok || n.Spec.Unschedulable {
			t.Errorf("node %s is still fenced or cordoned", n.Name)
		}
	}
	var odd []string
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		odd = nil
		for _, g := range f.env.AWS.Status().Groups {
			for _, i := range g.Instances {
				if i.Lifecycle != "InService" {
					odd = append(odd, i.ID+" "+i.Lifecycle)
				}
			}
		}
		return len(odd) == 0, nil
	})
	if err != nil {
		t.Errorf("the group did not settle: %v", odd)
	}
}

// A recycle is named after its instance: a second `recycle` of the node while the
// first runs (in another process) is refused as a duplicate; `status`, `list` and
// `history` speak JSON and take the name; `abort NAME` from another process reaches
// the process that drives the recycle, which rolls back; the retry is attempt 2.
func TestSecondRecycleIsADuplicateAndAbortReachesItsDriver(t *testing.T) {
	f := simEnv(t)
	m := members(t, f)[0]
	state := filepath.Join(t.TempDir(), "recycler.db")
	first := runBackground(t, "recycle", m.node, "--state", state, "--log-format", "json")
	id := runningExecution(t, state)

	for _, target := range []string{m.node, m.instance} {
		before := observe(t, f)
		res := runCLI(t, "recycle", target, "--state", state)
		t.Logf("second recycle %s → exit %d\n%s", target, res.code, res.stderr)
		for _, want := range []string{"already being recycled by execution " + id, "(" + m.instance + ",", "driven by another recycler process", "recycler abort " + m.instance, "nothing was changed"} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("second recycle of %s: stderr lacks %q", target, want)
			}
		}
		if res.code != ExitBadInput {
			t.Errorf("second recycle of %s: exit %d, want %d", target, res.code, ExitBadInput)
		}
		if b, a := before.mutations, observe(t, f).mutations; len(a) > len(b) {
			t.Logf("(AWS mutations meanwhile come from the first recycle: %v → %v)", b, a)
		}
	}
	if exs := viewCmd[[]execView](t, "list", "--state", state); len(exs) != 1 {
		t.Fatalf("list after the refused duplicates: %d executions, want 1: %+v", len(exs), exs)
	}

	st := viewCmd[execView](t, "status", m.instance, "--state", state)
	if st.ID != id || st.Name != m.instance || st.Node != m.node || st.Instance != m.instance || st.Outcome != "running" ||
		st.Step == "" || st.Driver == nil || st.Driver.PID != os.Getpid() {
		t.Errorf("status %s -o json: %+v, want id %s, name and instance %s, node %s, a step, outcome running, driven by pid %d",
			m.instance, st, id, m.instance, m.node, os.Getpid())
	}

	ab := runCLI(t, "abort", m.instance, "--state", state)
	t.Logf("abort → exit %d\n%s", ab.code, ab.stderr)
	if ab.code != ExitFailed || !strings.Contains(ab.stderr, "driven by another recycler process") || !strings.Contains(ab.stderr, "aborted and rolled back") {
		t.Fatalf("abort of a recycle another process drives: exit %d, want %d (aborted and rolled back)\n%s", ab.code, ExitFailed, ab.stderr)
	}
	if code := first.wait(t); code != ExitFailed || !strings.Contains(first.stderr.String(), "aborted and rolled back") {
		t.Errorf("the driving recycle: exit %d, want %d\n%s", code, ExitFailed, first.stderr.String())
	}
	noMarks(t, f)
	// Its log lines (JSON) name the execution and the node.
	tagged := 0
	sc := bufio.NewScanner(strings.NewReader(first.stderr.String()))
	for sc.Scan() {
		var line map[string]any
		if !strings.HasPrefix(sc.Text(), "{") {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Errorf("log line is not JSON: %v\n%s", err, sc.Text())
			continue
		}
		if line[logKeyExecution] == id {
			tagged++
			if line[logKeyNode] != m.node {
				t.Errorf("log line about %s without node %s: %s", id, m.node, sc.Text())
			}
		}
	}
	if tagged == 0 {
		t.Errorf("no JSON log line names execution %s:\n%s", id, first.stderr.String())
	}

	// The retry after the rollback is the instance's second attempt.
	again := runLong(t, "recycle", m.node, "--state", state)
	if again.code != ExitOK || !strings.Contains(again.stderr, "("+m.instance+"-2)") {
		t.Fatalf("retry after the rollback: exit %d, want 0 as %s-2\n%s", again.code, m.instance, again.stderr)
	}
	byName := map[string]execView{}
	for _, v := range viewCmd[[]execView](t, "list", "--state", state) {
		byName[v.Name] = v
	}
	if v := byName[m.instance]; v.ID != id || v.Status != engine.StatusAborted || v.Outcome != "aborted" || v.RollbackID == "" {
		t.Errorf("list: first attempt %+v, want ABORTED, outcome aborted, with a rollback", v)
	}
	if v := byName[m.instance+"-2"]; v.Status != engine.StatusSucceeded || v.Outcome != "succeeded" || v.Step != "Done" || v.Node != m.node {
		t.Errorf("list: second attempt %+v, want SUCCEEDED in Done for node %s", v, m.node)
	}
	h := viewCmd[struct {
		Execution execView       `json:"execution"`
		Events    []engine.Event `json:"events"`
	}](t, "history", m.instance+"-2", "--state", state)
	if h.Execution.Name != m.instance+"-2" || len(h.Events) == 0 || h.Events[len(h.Events)-1].Type != "ExecutionSucceeded" {
		t.Errorf("history -o json: execution %+v, %d events", h.Execution, len(h.Events))
	}
}

// `recycle` drives only its own execution: a detached recycle in the same state file
// stays exactly where it was while another recycle runs; `abort` of it, with no
// process driving it, rolls it back in the aborting process. The other recycle meets
// throttling: the engine's retry warnings show at the default level, with execution
// and node.
func TestRecycleDrivesOnlyItsOwnAndAbortWithoutADriverRollsBackHere(t *testing.T) {
	f := simEnv(t)
	ms := members(t, f)
	if len(ms) < 2 {
		t.Fatalf("need two untouched nodes, have %v", ms)
	}
	a, b := ms[0], ms[1]
	state := filepath.Join(t.TempDir(), "recycler.db")
	detached := runBackground(t, "recycle", a.node, "--state", state)
	idA := runningExecution(t, state)
	detached.cancel()
	if code := detached.wait(t); code != ExitNeedsPerson || !strings.Contains(detached.stderr.String(), "detached") {
		t.Fatalf("interrupted recycle: exit %d\n%s", code, detached.stderr.String())
	}
	before := viewCmd[struct {
		Execution execView       `json:"execution"`
		Events    []engine.Event `json:"events"`
	}](t, "history", idA, "--state", state)
	if before.Execution.Driver != nil {
		t.Fatalf("a detached execution is still driven by %+v", before.Execution.Driver)
	}

	other := runBackground(t, "recycle", b.node, "--state", state)
	var idB string
	waitUntil(t, "the second recycle starts", func() bool {
		for _, v := range viewCmd[[]execView](t, "list", "--state", state) {
			if v.ID != idA {
				idB = v.ID
			}
		}
		return idB != ""
	})
	// AWS throttles every call until a task has failed for it (after the SDK's own
	// retries) and the state machine retries it: that warning shows at the default log
	// level, naming execution and node.
	never := sim.RateLimit{Burst: 1, PerSecond: 0.0001}
	if err := f.env.AWS.SetFaults(sim.Faults{RateLimits: map[string]sim.RateLimit{"ec2": never, "autoscaling": never}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.env.AWS.SetFaults(sim.Faults{}) })
	var warning string
	defer func() {
		if t.Failed() {
			t.Logf("the second recycle's output:\n%s", other.stderr.String())
		}
	}()
	waitUntil(t, "a retry warning", func() bool {
		for _, line := range strings.Split(other.stderr.String(), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "retries it") {
				warning = line
			}
		}
		return warning != ""
	})
	_ = f.env.AWS.SetFaults(sim.Faults{})
	if !strings.Contains(warning, "execution="+idB) || !strings.Contains(warning, "node="+b.node) {
		t.Errorf("retry warning without execution %s and node %s: %s", idB, b.node, warning)
	}
	if code := other.wait(t); code != ExitOK {
		t.Fatalf("recycle %s beside the detached one: exit %d\n%s", b.node, code, other.stderr.String())
	}

	after := viewCmd[struct {
		Execution execView       `json:"execution"`
		Events    []engine.Event `json:"events"`
	}](t, "history", idA, "--state", state)
	if after.Execution.Status != engine.StatusRunning || len(after.Events) != len(before.Events) {
		t.Fatalf("the detached recycle moved while another recycle ran: %s, %d events (was %d)", after.Execution.Status, len(after.Events), len(before.Events))
	}

	ab := runCLI(t, "abort", idA, "--state", state)
	t.Logf("abort → exit %d\n%s", ab.code, ab.stderr)
	if ab.code != ExitFailed || !strings.Contains(ab.stderr, "no process drives it, so the rollback runs here") || !strings.Contains(ab.stderr, "aborted and rolled back") {
		t.Fatalf("abort of a recycle nobody drives: exit %d\n%s", ab.code, ab.stderr)
	}
	noMarks(t, f)
}
