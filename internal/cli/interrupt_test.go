package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/sim"
)

// openPTY opens a pseudo-terminal pair: what the user's terminal is to recycler.
func openPTY(t *testing.T) (term, user *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" { // CI must run it
			t.Fatalf("no pseudo-terminals: %v", err)
		}
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

// Ctrl-C at a terminal asks; answering "a" aborts in this very process: the
// running step returns, the rollback runs here, and the node and the group end as
// they were before the recycle.
func TestCtrlCAtATerminalAbortsAndRollsBackHere(t *testing.T) {
	f := simEnv(t)
	stdin, user := openPTY(t)
	node, instance := f.nodes[2], f.instances[2]
	groupOf := func() sim.GroupStatus {
		for _, g := range f.env.AWS.Status().Groups {
			if g.Name == f.group {
				return g
			}
		}
		t.Fatalf("group %s gone", f.group)
		return sim.GroupStatus{}
	}
	before := groupOf()
	state := filepath.Join(t.TempDir(), "recycler.db")
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	var stdout bytes.Buffer
	stderr := &lockedWriter{w: &bytes.Buffer{}}
	exited := make(chan int, 1)
	go func() {
		exited <- Execute(ctx, []string{"recycle", node, "--state", state}, stdin, &stdout, stderr)
	}()
	id := runningExecution(t, state)
	if _, err := user.WriteString("a\n"); err != nil { // typed ahead of the question: read once it is asked
		t.Fatal(err)
	}
	interrupt()
	var code int
	select {
	case code = <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("the aborted recycle did not end within 2 minutes")
	}
	out := stderr.w.(*bytes.Buffer).String()
	if code != ExitFailed || !strings.Contains(out, "aborting: rolling back") {
		t.Fatalf("exit %d, want %d (rolled back); stderr:\n%s", code, ExitFailed, out)
	}
	eng, err := engine.Open(context.Background(), engine.Options{Path: state, Passive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ex, err := eng.Describe(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := eng.Describe(context.Background(), ex.RollbackID)
	if ex.Status != engine.StatusAborted || err != nil || rb.Status != engine.StatusSucceeded {
		t.Fatalf("execution %s %s, rollback %q %s (%v); want aborted and rolled back", id, ex.Status, ex.RollbackID, rb.Status, err)
	}
	n, err := f.env.Kube.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node %s after the rollback: %v", node, err)
	}
	if n.Spec.Unschedulable || slices.ContainsFunc(n.Spec.Taints, func(tn corev1.Taint) bool { return tn.Key == kube.TaintKey }) || n.Annotations[kube.AnnotationFenced] != "" {
		t.Errorf("node %s still fenced after the rollback: unschedulable=%v taints=%v annotations=%v", node, n.Spec.Unschedulable, n.Spec.Taints, n.Annotations)
	}
	// The replacement (if the surge had launched one) is gone again; the group is
	// as it was, with the old instance in service.
	var g sim.GroupStatus
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		g = groupOf()
		return g.Desired == before.Desired && g.Max == before.Max && len(g.Suspended) == len(before.Suspended) && len(g.Instances) == len(before.Instances) &&
			slices.ContainsFunc(g.Instances, func(i sim.InstanceStatus) bool { return i.ID == instance && i.Lifecycle == "InService" }), nil
	})
	if err != nil {
		t.Errorf("group after the rollback %+v, want as before %+v with %s InService", g, before, instance)
	}
}
