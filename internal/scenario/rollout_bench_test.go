package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

// BenchmarkRollout runs `recycler rollout` (the real binary, in its own process) over
// simulated fleets of 100 and 1,000 kwok nodes — groups of 100, 10 recycles in flight
// per group — where each replacement boots in B and each drain takes D (one pod per
// node whose deletion takes D). It reports the wall time against the lower bound
// ⌈N/k⌉·(B+D) (k: recycles in flight overall), AWS calls per node (counted by the
// simulator), Kubernetes requests per node (counted by a proxy in front of the API
// server; a watch counts once) and the process's peak memory (max RSS).
// RECYCLER_BENCH_ROLLOUT_NODES=100 runs only the small fleet.
func BenchmarkRollout(b *testing.B) {
	if os.Getenv("RECYCLER_SKIP_CONTROLPLANE") == "1" {
		b.Skip("RECYCLER_SKIP_CONTROLPLANE=1")
	}
	const boot, drain, perGroup, k = 15 * time.Second, 15 * time.Second, 100, 10
	sizes := []int{100, 1000}
	if v := os.Getenv("RECYCLER_BENCH_ROLLOUT_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		sizes = []int{n}
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "recycler")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/recycler/recycler/cmd/recycler").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	type row struct {
		nodes, groups, inFlight int
		wall, bound             time.Duration
		aws, kube               float64
		rssMB                   float64
		replaced                int
	}
	var rows []row
	for _, n := range sizes {
		groups := max(1, n/perGroup)
		r := row{nodes: n, groups: groups, inFlight: groups * k}
		r.bound = time.Duration(math.Ceil(float64(n)/float64(r.inFlight))) * (boot + drain)
		wall, aws, kube, rss, replaced := benchRollout(b, bin, filepath.Join(dir, strconv.Itoa(n)), groups, n/groups, k, boot, drain)
		r.wall, r.aws, r.kube, r.rssMB, r.replaced = wall, float64(aws)/float64(n), float64(kube)/float64(n), float64(rss)/1024, replaced
		rows = append(rows, r)
		b.ReportMetric(r.wall.Seconds()/r.bound.Seconds(), fmt.Sprintf("x-bound-%d", n))
		b.ReportMetric(r.aws, fmt.Sprintf("aws-calls/node-%d", n))
		b.ReportMetric(r.kube, fmt.Sprintf("kube-reqs/node-%d", n))
		b.ReportMetric(r.rssMB, fmt.Sprintf("peak-MB-%d", n))
	}
	fmt.Printf("\nRollout (recycler rollout in its own process; real control plane + kwok + simulated AWS; B=%s D=%s; %d per group in flight)\n", boot, drain, k)
	fmt.Printf("%6s %6s %4s %10s %10s %7s %10s %10s %9s\n", "nodes", "groups", "k", "wall", "bound", "ratio", "AWS/node", "kube/node", "peak MB")
	for _, r := range rows {
		fmt.Printf("%6d %6d %4d %10s %10s %7.3f %10.1f %10.1f %9.0f\n", r.nodes, r.groups, r.inFlight, r.wall.Round(100*time.Millisecond), r.bound,
			r.wall.Seconds()/r.bound.Seconds(), r.aws, r.kube, r.rssMB)
		if r.replaced != r.nodes {
			b.Errorf("%d nodes: only %d replaced", r.nodes, r.replaced)
		}
	}
}

// benchRollout sets up one fleet, rolls it, and measures.
func benchRollout(b *testing.B, bin, dir string, groups, nodes, k int, boot, drain time.Duration) (wall time.Duration, aws, kube int64, rssKB int64, replaced int) {
	b.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	env, err := sim.Up(ctx, sim.UpOptions{Groups: groups, Nodes: nodes, BootDelay: boot, Workloads: "none", ReadyTimeout: 20 * time.Minute})
	if err != nil {
		b.Fatalf("sim up (%d×%d nodes): %v", groups, nodes, err)
	}
	defer func() {
		if err := env.Down(context.Background()); err != nil {
			b.Errorf("sim down: %v", err)
		}
	}()
	if err := drainPods(ctx, env, drain); err != nil {
		b.Fatal(err)
	}
	var kubeReqs atomic.Int64
	proxy := serveKube(b, env.Kube.Config, func(rt http.RoundTripper) http.RoundTripper { return scenario.Counting(rt, &kubeReqs) })
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sim"] = &clientcmdapi.Cluster{Server: proxy}
	cfg.AuthInfos["sim"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["sim"] = &clientcmdapi.Context{Cluster: "sim", AuthInfo: "sim"}
	cfg.CurrentContext = "sim"
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		b.Fatal(err)
	}
	vars := os.Environ()
	for _, kv := range env.Vars() {
		if kv[0] == "KUBECONFIG" {
			kv[1] = kubeconfig
		}
		vars = append(vars, kv[0]+"="+kv[1])
	}
	args := []string{"rollout", "--all", "--max-in-flight", strconv.Itoa(k), "--state", filepath.Join(dir, "state.db"), "-o", "json",
		"--replacement-timeout", "10m", "--delete-unmanaged"}
	for _, g := range env.Groups {
		args = append(args, "--group", g)
	}
	env.AWS.ResetCalls()
	cmd := exec.Command(bin, args...)
	cmd.Env = vars
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	wall = time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		b.Fatal(err)
	}
	if err != nil {
		tail := stderr.String()
		b.Fatalf("recycler rollout: %v\n%s", err, tail[max(0, len(tail)-4000):])
	}
	var res struct {
		Summary struct {
			Replaced int `json:"replaced"`
		} `json:"summary"`
		Elapsed float64 `json:"elapsedSeconds"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil {
		b.Fatalf("rollout -o json: %v\n%s", err, stdout.String())
	}
	calls := env.AWS.Calls()
	for _, call := range slices.Sorted(maps.Keys(calls)) {
		if !strings.HasPrefix(call, "fault:") {
			aws += int64(calls[call])
			b.Logf("%d nodes: %-40s %6d calls, %5.2f per node", groups*nodes, call, calls[call], float64(calls[call])/float64(groups*nodes))
		}
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rssKB = ru.Maxrss
	}
	return wall, aws, kubeReqs.Load(), rssKB, res.Summary.Replaced
}

// drainPods puts one pod on every node whose deletion takes d (kwok's pod-delete
// delay, under a longer grace period): an eviction then leaves the node only after d,
// so every drain lasts d.
func drainPods(ctx context.Context, env *sim.Environment, d time.Duration) error {
	rc := rest.CopyConfig(env.Kube.Config)
	rc.QPS, rc.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		if n.Spec.ProviderID == "" {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "drain-", Namespace: "bench",
				Annotations: map[string]string{testenv.PodDeleteDelayAnnotation: d.String()}},
			Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "app", Image: "pause"}},
				TerminationGracePeriodSeconds: ptr.To(int64(2 * d / time.Second))},
		}
		if _, err := cs.CoreV1().Pods("bench").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("drain pod on %s: %w", n.Name, err)
		}
	}
	return waitRunning(ctx, cs, "bench", len(nodes.Items), 10*time.Minute)
}

func waitRunning(ctx context.Context, cs kubernetes.Interface, ns string, atLeast int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running >= atLeast {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d bench pods running after %s", running, atLeast, limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// serveKube serves the API server over plain HTTP on loopback (authenticating to it
// with cfg), every request through wrap's round tripper; it stops with the test.
func serveKube(tb testing.TB, cfg *rest.Config, wrap func(http.RoundTripper) http.RoundTripper) string {
	tb.Helper()
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:     wrap(tr),
		FlushInterval: -1, // watches stream
		ErrorLog:      stdlog.New(io.Discard, "", 0),
	})
	tb.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}
