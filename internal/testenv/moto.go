package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PythonEnv names the Python interpreter that has moto installed (default python3).
const PythonEnv = "RECYCLER_PYTHON"

// ErrNoMoto: the Python interpreter or its moto package is missing.
var ErrNoMoto = errors.New("moto is not installed")

// Moto is a running moto server (https://github.com/getmoto/moto): an AWS
// implementation nobody here wrote, reached by the unmodified SDK clients at URL
// like any AWS endpoint. One server holds every service and region.
type Moto struct {
	URL     string
	Version string
	cmd     *exec.Cmd
	dir     string
	done    chan struct{}
	stop    sync.Once
	stopErr error
}

// StartMoto starts `python -m moto.server` on a free loopback port and returns once
// it answers. The error wraps ErrNoMoto when python or moto is missing.
func StartMoto(ctx context.Context) (*Moto, error) {
	python := os.Getenv(PythonEnv)
	if python == "" {
		python = "python3"
	}
	// Resolve the real interpreter (pyenv shims are scripts) so the process we
	// signal is the server itself, and check moto is importable.
	out, err := exec.CommandContext(ctx, python, "-c", "import sys, moto; print(sys.executable); print(moto.__version__)").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w: %s -c 'import moto': %w: %s (install it with `pip install 'moto[server]'`, or set %s)",
			ErrNoMoto, python, err, strings.TrimSpace(string(out)), PythonEnv)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		return nil, fmt.Errorf("%w: unexpected answer from %s: %q", ErrNoMoto, python, out)
	}
	var lastErr error
	for range 3 { // a free port can be taken between the probe and moto's bind
		m, err := startMoto(ctx, lines[0], lines[1])
		if err == nil {
			return m, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

func startMoto(ctx context.Context, python, version string) (*Moto, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "recycler-moto-")
	if err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	logPath := filepath.Join(dir, "moto.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start moto: %w", err)
	}
	port := fmt.Sprint(ports[0])
	cmd := exec.Command(python, "-m", "moto.server", "-H", "127.0.0.1", "-p", port)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.Env = motoEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start moto: %w", err)
	}
	m := &Moto{URL: "http://127.0.0.1:" + port, Version: version, cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(m.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := http.Get(m.URL + "/moto-api/data.json"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		select {
		case <-m.done:
			log, _ := os.ReadFile(logPath)
			os.RemoveAll(dir)
			return nil, fmt.Errorf("moto server exited while starting: %s", tail(string(log), 20))
		case <-ctx.Done():
			log, _ := os.ReadFile(logPath)
			_ = m.Stop()
			return nil, fmt.Errorf("moto server not ready at %s: %w: %s", m.URL, ctx.Err(), tail(string(log), 20))
		case <-tick.C:
		}
	}
}

// motoEnv is this process's environment without AWS_* variables: moto reads some of
// them (an AWS_ENDPOINT_URL a test set for the simulator breaks its EC2 backend).
func motoEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return env
}

// Reset drops every resource of every service (moto's /moto-api/reset).
func (m *Moto) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset", bytes.NewReader(nil))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reset moto: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Pid is the server's process id.
func (m *Moto) Pid() int { return m.cmd.Process.Pid }

// Stop kills the server and removes its directory.
// Idempotent.
func (m *Moto) Stop() error {
	m.stop.Do(func() {
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
		m.stopErr = os.RemoveAll(m.dir)
	})
	return m.stopErr
}

// MotoFor starts a moto server for one test and stops it at the end. Without
// python or moto the test is skipped (failed when CI=true: CI must run it).
func MotoFor(t testing.TB) *Moto {
	t.Helper()
	m, err := StartMoto(context.Background())
	if errors.Is(err, ErrNoMoto) && os.Getenv("CI") != "true" {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Stop(); err != nil {
			t.Errorf("stop moto: %v", err)
		}
	})
	return m
}
