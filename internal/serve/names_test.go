package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/cli"
	"github.com/recycler/recycler/internal/engine"
)

// runningJobs puts a selected pod that never ends on each node (a drain waits for
// it until the test deletes it) and returns once they run.
func (f *fixture) runningJobs(ns, label string, nodes ...string) {
	f.t.Helper()
	for _, n := range nodes {
		if _, err := f.kube.Client.CoreV1().Pods(ns).Create(f.ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "job-" + n, Namespace: ns, Labels: map[string]string{"app": label}},
			Spec: corev1.PodSpec{NodeName: n, RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](0),
				Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
		}, metav1.CreateOptions{}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.eventually(time.Minute, "jobs Running", func() bool {
		for _, n := range nodes {
			p, err := f.kube.Client.CoreV1().Pods(ns).Get(f.ctx, "job-"+n, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning {
				return false
			}
		}
		return true
	})
}

// summary names each execution and its status.
func summary(exs []engine.Execution) string {
	var out []string
	for _, ex := range exs {
		out = append(out, fmt.Sprintf("%s %s (%s)", ex.ID, ex.Name, ex.Status))
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// endJob lets the drain of node go on.
func (f *fixture) endJob(ns, node string) {
	f.t.Helper()
	if err := f.kube.Client.CoreV1().Pods(ns).Delete(f.ctx, "job-"+node, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		f.t.Fatal(err)
	}
}

// A recycle that serve starts is named after its instance like `recycler recycle`'s,
// so whichever comes second — a person's recycle of the node serve is recycling, or
// an alarm for the node a person is recycling — is refused as a duplicate by the
// engine's own records, not left to fail on the fence.
func TestServeAndAManualRecycleOfOneNodeAreOneRecycle(t *testing.T) {
	f := setup(t)
	instances, nodes := f.group("dup", 2)
	url := f.queue("dup-events")
	ns := f.kube.Namespace(t)
	f.runningJobs(ns, "dupjob", nodes...)
	recycleFlags := []string{"--selector", "app=dupjob", "--namespace", ns, "--max-wait", "10m"}
	s := f.startServe("dup", append([]string{"--sqs-queue-url", url}, recycleFlags...)...)
	manual := func(ctx context.Context, node string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := cli.Execute(ctx, append([]string{"recycle", node, "--state", s.state}, recycleFlags...), strings.NewReader(""), &stdout, &stderr)
		return code, stderr.String()
	}

	// Serve first: an alarm starts the recycle of node 0, named after its instance;
	// a person's recycle of that node meanwhile is refused (exit 2).
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000e1", instances[0], "ALARM"))
	f.eventually(2*time.Minute, "serve's recycle draining", func() bool {
		return metric(s.metrics, `recycler_executions_running{step="Drain"}`) == "1"
	})
	exs := s.executions(t)
	if len(exs) != 1 || exs[0].Name != instances[0] {
		t.Fatalf("executions %s, want one named after instance %s", summary(exs), instances[0])
	}
	byServe := exs[0]
	code, stderr := manual(f.ctx, nodes[0])
	if code != cli.ExitBadInput || !strings.Contains(stderr, "already being recycled by execution "+byServe.ID+" ("+instances[0]+",") ||
		!strings.Contains(stderr, "driven by another recycler process") {
		t.Fatalf("manual recycle of node %s while serve recycles it: exit %d, stderr:\n%s\nwant exit 2 naming execution %s (%s) as a duplicate", nodes[0], code, stderr, byServe.ID, instances[0])
	}
	f.endJob(ns, nodes[0])
	if exs := s.waitEnded(t, f, 3*time.Minute); len(exs) != 1 || exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("executions %s, want serve's one Succeeded", summary(exs))
	}

	// A person first: while `recycler recycle` of node 1 runs (driven by that
	// command), an alarm for node 1 starts nothing.
	type ended struct {
		code   int
		stderr string
	}
	done := make(chan ended, 1)
	go func() { code, stderr := manual(context.WithoutCancel(f.ctx), nodes[1]); done <- ended{code, stderr} }()
	var byPerson engine.Execution
	f.eventually(2*time.Minute, "the person's recycle running", func() bool {
		for _, ex := range s.executions(t) {
			if ex.Name == instances[1] && ex.Status == engine.StatusRunning {
				byPerson = ex
				return true
			}
		}
		return false
	})
	f.send(url, alarmEvent("5a2b1f0e-0000-4000-8000-0000000000e2", instances[1], "ALARM"))
	f.eventually(time.Minute, "the alarm acknowledged as a duplicate", func() bool {
		return metric(s.metrics, `recycler_sqs_messages_total{outcome="duplicate"}`) == "1" && len(f.env.AWS.QueueMessages("dup-events")) == 0
	})
	if exs := s.executions(t); len(exs) != 2 {
		t.Errorf("executions %s, want serve's and the person's only", summary(exs))
	}
	if want := "node " + nodes[1] + " is being recycled: execution " + byPerson.ID + " (" + instances[1] + ")"; !strings.Contains(s.log.String(), want) {
		t.Errorf("serve's log does not say %q", want)
	}
	f.endJob(ns, nodes[1])
	select {
	case e := <-done:
		if e.code != cli.ExitOK {
			t.Fatalf("the person's recycle: exit %d\n%s", e.code, e.stderr)
		}
	case <-time.After(4 * time.Minute):
		t.Fatal("the person's recycle did not end within 4m")
	}
}

// A message received again after the process that started its recycle died (it
// was killed between Start and Delete; here: killed, and the same message sent
// again) finds that execution in the state file: the new leader starts no second
// recycle and acknowledges it as a duplicate.
func TestServeRedeliveredEventAfterACrashFindsItsExecution(t *testing.T) {
	f := setup(t)
	bin := recyclerBinary(t)
	instances, nodes := f.group("again", 1)
	url := f.queue("again-events")
	ns := f.kube.Namespace(t)
	f.runningJobs(ns, "againjob", nodes[0])
	state := t.TempDir() + "/recycler.db"
	args := []string{"--lease-name", "again", "--sqs-queue-url", url, "--selector", "app=againjob", "--namespace", ns, "--max-wait", "10m"}
	a := f.serveProcess(bin, "again-a", state, args...)
	f.eventually(time.Minute, "replica a leading", func() bool { return metric(a.metrics, "recycler_leader") == "1" })
	ev := alarmEvent("5a2b1f0e-0000-4000-8000-0000000000e3", instances[0], "ALARM")
	f.send(url, ev)
	f.eventually(2*time.Minute, "a's recycle draining, the message deleted", func() bool {
		return metric(a.metrics, `recycler_executions_running{step="Drain"}`) == "1" && len(f.env.AWS.QueueMessages("again-events")) == 0
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.send(url, ev) // the same message again
	b := f.serveProcess(bin, "again-b", state, args...)
	f.eventually(time.Minute, "replica b leading", func() bool { return metric(b.metrics, "recycler_leader") == "1" })
	f.eventually(time.Minute, "the message acknowledged as a duplicate", func() bool {
		return metric(b.metrics, `recycler_sqs_messages_total{outcome="duplicate"}`) == "1" && len(f.env.AWS.QueueMessages("again-events")) == 0
	})
	f.endJob(ns, nodes[0])
	var exs []engine.Execution
	f.eventually(3*time.Minute, "the recycle ended", func() bool {
		exs = executionsIn(t, state)
		return len(exs) >= 1 && exs[0].Status.Done()
	})
	if len(exs) != 1 || exs[0].Name != instances[0] || exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("executions %s, want one, named %s, Succeeded (resumed by b)", summary(exs), instances[0])
	}
}
