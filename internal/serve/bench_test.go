package serve_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/recycler/recycler/internal/testenv"
)

// BenchmarkServeWatching1000Nodes: `recycler serve` (the built binary, leading,
// watching Nodes for annotations) on a cluster of 1,000 Nodes, 200 of them changed
// while it watches. Reports the process's peak resident memory (VmHWM). Goal < 150 MB.
func BenchmarkServeWatching1000Nodes(b *testing.B) {
	kube := testenv.Shared(b)
	ctx := context.Background()
	const n = 1000
	prefix := fmt.Sprintf("bench-%d-", time.Now().UnixNano()%100000)
	create := func(i int) error {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s%04d", prefix, i),
			Labels:      map[string]string{"node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": "us-east-1a", "eks.amazonaws.com/nodegroup": "ng-bench"},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
			Spec: corev1.NodeSpec{ProviderID: fmt.Sprintf("aws:///us-east-1a/i-%017x", 0xbe0000+i)}}
		_, err := kube.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		return err
	}
	parallel(b, n, create)
	b.Cleanup(func() {
		parallel(b, n, func(i int) error {
			return kube.Client.CoreV1().Nodes().Delete(ctx, fmt.Sprintf("%s%04d", prefix, i), metav1.DeleteOptions{})
		})
	})
	bin := recyclerBinary(b)
	dir := b.TempDir()
	for range b.N {
		addr := freeAddr(b)
		cmd := exec.Command(bin, "serve", "--state", filepath.Join(dir, "recycler.db"), "--metrics-addr", addr,
			"--lease-namespace", "default", "--lease-name", "bench", "--identity", "bench",
			"--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "1s")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kube.Kubeconfig, "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x", "AWS_EC2_METADATA_DISABLED=true")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for metric(addr, "recycler_leader") != "1" {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				b.Fatal("serve not leading within 2m")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Churn: 200 Nodes change (labels), as kubelets and controllers do all day.
		parallel(b, 200, func(i int) error {
			p := fmt.Sprintf(`{"metadata":{"labels":{"bench-round":"%d"}}}`, i)
			_, err := kube.Client.CoreV1().Nodes().Patch(ctx, fmt.Sprintf("%s%04d", prefix, i*5), types.MergePatchType, []byte(p), metav1.PatchOptions{})
			return err
		})
		time.Sleep(3 * time.Second) // let the informer digest the changes
		hwm := vmHWM(b, cmd.Process.Pid)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		b.ReportMetric(hwm, "peak-MB")
		b.Logf("recycler serve watching %d nodes: peak RSS %.1f MB (goal < 150 MB)", n, hwm)
		if hwm >= 150 {
			b.Errorf("peak RSS %.1f MB, goal < 150 MB", hwm)
		}
	}
}

func vmHWM(b *testing.B, pid int) float64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

func parallel(tb testing.TB, n int, fn func(int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}
