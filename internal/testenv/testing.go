package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SkipEnv, set to 1, makes Shared skip the test instead of failing when no
// control plane runs (RunMain then does not start one).
const SkipEnv = "RECYCLER_SKIP_CONTROLPLANE"

// shared is the test package's control plane. A package variable because
// TestMain and the tests have nothing else in common.
var shared struct {
	env     *Env
	err     error
	started bool
}

var errSkipped = errors.New(SkipEnv + "=1")

// RunMain is a package's TestMain: it starts one control plane for the
// package, runs the tests, stops it and exits with the tests' code.
//
//	func TestMain(m *testing.M) { testenv.RunMain(m) }
func RunMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	shared.started = true
	if os.Getenv(SkipEnv) == "1" {
		shared.err = errSkipped
		return m.Run()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ctrl-C or a kill while building or starting: stop, leave nothing behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	type result struct {
		env *Env
		err error
	}
	started := make(chan result, 1)
	go func() {
		env, err := Start(ctx, Options{Progress: os.Stderr})
		started <- result{env, err}
	}()
	var r result
	select {
	case r = <-started:
	case s := <-sigs:
		cancel()
		if r = <-started; r.env != nil {
			_ = r.env.Stop()
		}
		fmt.Fprintf(os.Stderr, "testenv: %v during control-plane start\n", s)
		return 1
	}
	shared.env, shared.err = r.env, r.err
	if r.err != nil {
		fmt.Fprintf(os.Stderr, "testenv: control plane did not start: %v\n", r.err)
	}
	if r.env != nil {
		defer func() { _ = r.env.Stop() }()
		// A signal during the tests: stop the control plane, then exit.
		go func() {
			s, ok := <-sigs
			if !ok {
				return
			}
			_ = r.env.Stop()
			fmt.Fprintf(os.Stderr, "testenv: %v: control plane stopped\n", s)
			os.Exit(1)
		}()
	}
	// A panicking test crashes the binary without running deferred calls:
	// Pdeathsig then kills the components, and the next Start removes the
	// directory left behind.
	return m.Run()
}

// Shared returns the package's control plane started by RunMain. It skips
// the test when RECYCLER_SKIP_CONTROLPLANE=1 and fails it when the control
// plane could not start.
func Shared(t testing.TB) *Env {
	t.Helper()
	switch {
	case !shared.started:
		t.Fatal("testenv.Shared needs the package's TestMain to call testenv.RunMain(m)")
	case errors.Is(shared.err, errSkipped):
		t.Skip("no control plane: " + SkipEnv + "=1")
	case shared.err != nil:
		t.Fatalf("control plane did not start: %v", shared.err)
	}
	return shared.env
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a fresh namespace named after the test, with its default
// service account (pods need it at once), and deletes it when the test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := strings.Trim(notDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	ns, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace for %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := e.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	// The controller-manager creates it too; whoever is first wins.
	_, err = e.Client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create default service account in %s: %v", ns.Name, err)
	}
	return ns.Name
}

// SyncBuffer is an output buffer several goroutines write (a command's stderr read while
// it runs, concurrent builders' progress).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
