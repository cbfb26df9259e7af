package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// BenchmarkRecycleOverhead measures Recycler's own overhead on one recycle: the wall
// time T minus what the world imposes — the replacement's boot delay B (plus the
// eviction grace, kwok's 500 ms, since moving pods follows the boot) or the selected
// pod's remaining run time P, whichever ends later. The seed loses ≥ 300 s to a sleep
// and up to 100 s to its poll interval on the same work.
//
// It runs a fixed number of recycles whatever b.N is, so `-benchtime 1x` reports
// medians over several runs.
func BenchmarkRecycleOverhead(b *testing.B) {
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		b.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	const runs = 5
	const grace = 500 * time.Millisecond // kwok's pod-delete delay: an evicted pod is gone this long after
	configs := []struct {
		name    string
		boot, p time.Duration
	}{
		{"boot-bound", 4 * time.Second, 1 * time.Second},
		{"pod-bound", 2 * time.Second, 6 * time.Second},
	}
	type row struct {
		name                string
		t, added, aws, kube []float64
		byOp                map[string]int64 // the last run's AWS calls per operation
	}
	var rows []row
	ctx := context.Background()
	for _, cfg := range configs {
		env, err := sim.Up(ctx, sim.UpOptions{Nodes: 3, BootDelay: cfg.boot, Workloads: "default", JobDuration: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		h, err := scenario.New(ctx, env)
		if err != nil {
			b.Fatal(err)
		}
		eng, err := engine.Open(ctx, engine.Options{Path: filepath.Join(b.TempDir(), "state.db"), Registry: h.Tasks.Registry(), Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		r := row{name: cfg.name}
		for i := range runs {
			podName := fmt.Sprintf("sel-%d", i)
			node := pinSelectedPod(b, env, podName, cfg.p)
			finished := watchSucceeded(b, env, podName)
			req := recycle.NewRequest(node)
			req.Selector, req.Namespaces = "bench/selected=true", []string{"bench"}
			start := time.Now()
			out, err := h.Recycle(ctx, eng, req, fmt.Sprintf("bench-%d", i), nil)
			if err != nil {
				b.Fatal(err)
			}
			if out.Execution.Status != engine.StatusSucceeded {
				b.Fatalf("run %d: %s %s %s", i, out.Execution.Status, out.Execution.Error, out.Execution.Cause)
			}
			pRemaining := (<-finished).Sub(start)
			world := max(cfg.boot+grace, pRemaining)
			r.t = append(r.t, out.Elapsed.Seconds())
			r.added = append(r.added, (out.Elapsed - world).Seconds())
			r.aws = append(r.aws, float64(out.AWSCalls))
			r.kube = append(r.kube, float64(out.KubeCalls))
			r.byOp = out.AWSByOp
			if err := checkAWSCalls(out); err != nil {
				b.Errorf("%s run %d: AWS calls over budget:\n%v", cfg.name, i, err)
			}
		}
		eng.Close()
		if err := env.Down(ctx); err != nil {
			b.Fatal(err)
		}
		rows = append(rows, r)
	}
	fmt.Printf("\nRecycle overhead (medians of %d runs; real control plane + simulated AWS; %d cores)\n", runs, 2)
	fmt.Printf("%-12s %5s %5s %8s %10s %10s %10s\n", "config", "B", "P", "T (s)", "added (s)", "AWS calls", "kube reqs")
	for i, r := range rows {
		fmt.Printf("%-12s %5s %5s %8.2f %10.2f %10.0f %10.0f\n", r.name, configs[i].boot, configs[i].p, median(r.t), median(r.added), median(r.aws), median(r.kube))
		b.ReportMetric(median(r.added), "added-s-"+r.name)
	}
	for _, r := range rows {
		for _, op := range slices.Sorted(maps.Keys(r.byOp)) {
			b.Logf("%-12s %-45s %3d calls", r.name, op, r.byOp[op])
		}
	}
	b.ReportMetric(median(append(rows[0].added, rows[1].added...)), "added-s-median")
}

// watchSucceeded reports when the pod is seen Succeeded: the end of the work a
// recycle must wait for, as a watcher sees it (not as computed from second-precision stamps).
func watchSucceeded(b *testing.B, env *sim.Environment, name string) <-chan time.Time {
	b.Helper()
	w, err := env.Kube.Client.CoreV1().Pods("bench").Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan time.Time, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodSucceeded {
				done <- time.Now()
				return
			}
		}
	}()
	return done
}

// pinSelectedPod runs a selected pod on a current node of the group that completes
// p after it is Ready, and returns the node.
func pinSelectedPod(b *testing.B, env *sim.Environment, name string, p time.Duration) string {
	b.Helper()
	ctx := context.Background()
	cs := env.Kube.Client
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "bench", metav1.GetOptions{}); err != nil {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		if n.DeletionTimestamp == nil && !n.Spec.Unschedulable && n.Spec.ProviderID != "" {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		b.Fatal("no node to recycle")
	}
	node := names[0]
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench", Labels: map[string]string{"bench/selected": "true"},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: p.String()}},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Containers:                    []corev1.Container{{Name: "job", Image: "pause"}},
			TerminationGracePeriodSeconds: ptr.To[int64](600)},
	}
	if _, err := cs.CoreV1().Pods("bench").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := scenario.WaitSettled(ctx, cs, "bench", time.Minute); err != nil {
		b.Fatal(err)
	}
	return node
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// awsBudget is what one recycle (surge by standby, AZRebalance suspended and
// resumed by it, no MaxSize raise) may call, per operation, besides its looks
// while it waits: issue 11 sets 20 AWS calls per recycled node. Each step
// writes its records in one call and reads what it needs once (docs/cloud.md).
var awsBudget = map[string]int64{
	"Auto Scaling/DescribeAutoScalingInstances": 1, // Resolve: where the instance is
	"Auto Scaling/DescribeAutoScalingGroups":    5, // Resolve, Surge, the look that finds the replacement InService, Retire ×2
	"Auto Scaling/DescribeScalingActivities":    1, // the first look: which launch is ours
	"Auto Scaling/CreateOrUpdateTags":           1, // Surge's group record
	"Auto Scaling/SuspendProcesses":             1,
	"EC2/CreateTags":                            3, // Surge, the claim, the detach
	"Auto Scaling/EnterStandby":                 1,
	"Auto Scaling/SetInstanceProtection":        2, // the claim, and its release
	"Auto Scaling/DetachInstances":              1,
	"EC2/TerminateInstances":                    1,
	"Auto Scaling/ResumeProcesses":              1,
	"Auto Scaling/DeleteTags":                   1,
	"EC2/DeleteTags":                            1,
}

// checkAWSCalls compares one successful recycle's AWS calls with awsBudget: every
// operation within its budget, DescribeAutoScalingGroups allowed one more per
// extra pass of CheckReplacement or Retire (a look while waiting for AWS), and
// the total within 20 when nothing had to wait.
func checkAWSCalls(out scenario.Outcome) error {
	passes := map[string]int{}
	for _, ev := range out.History {
		var d struct {
			Name string `json:"name"`
		}
		if ev.Type == "TaskStateEntered" && json.Unmarshal(ev.Details, &d) == nil {
			passes[d.Name]++
		}
	}
	waits := int64(max(passes["CheckReplacement"]-1, 0) + max(passes["Retire"]-2, 0))
	var errs []error
	for _, op := range slices.Sorted(maps.Keys(out.AWSByOp)) {
		n, limit := out.AWSByOp[op], awsBudget[op]
		if op == "Auto Scaling/DescribeAutoScalingGroups" {
			limit += waits
		}
		if n > limit {
			errs = append(errs, fmt.Errorf("%s: %d calls, budget %d", op, n, limit))
		}
	}
	if out.AWSCalls > 20+waits {
		errs = append(errs, fmt.Errorf("%d AWS calls in all (%d passes waited), want at most 20 per recycled node", out.AWSCalls, waits))
	}
	return errors.Join(errs...)
}
