package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/asl"
)

// BuildBootstrap builds cmd/lambda as the provided.al2023 runtime runs it (a static
// `bootstrap`, -tags lambda.norpc) into a test's temporary folder.
func BuildBootstrap(t testing.TB) string {
	t.Helper()
	root, ok := repoRoot()
	if !ok {
		t.Fatal("build bootstrap: not inside the recycler repository")
	}
	out := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-tags", "lambda.norpc", "-o", out, "./cmd/lambda")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build bootstrap: %v\n%s", err, b)
	}
	return out
}

// Function is a Lambda `bootstrap` running under the AWS Lambda Runtime Interface
// Emulator, invoked over HTTP as the Lambda service invokes it.
type Function struct {
	URL    string // the emulator's invoke endpoint
	mu     sync.Mutex
	output bytes.Buffer
	one    sync.Mutex // the emulator is one sandbox: one invocation at a time
}

func (f *Function) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.output.Write(p)
}

// Output is what the emulator and the function printed so far.
func (f *Function) Output() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.output.String()
}

// StartFunction runs bootstrap under the emulator with exactly env (plus PATH and a
// temporary HOME) until the test ends.
func StartFunction(t testing.TB, bootstrap string, env [][2]string) *Function {
	t.Helper()
	rie := NeedTool(t, ToolLambdaRIE)
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	port, apiPort := strconv.Itoa(ports[0]), strconv.Itoa(ports[1])
	f := &Function{URL: "http://127.0.0.1:" + port + "/2015-03-31/functions/function/invocations"}
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", "127.0.0.1:"+port, "--runtime-api-address", "127.0.0.1:"+apiPort, bootstrap)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"AWS_LAMBDA_FUNCTION_NAME=recycler", "AWS_LAMBDA_FUNCTION_TIMEOUT=900", "LOG_LEVEL=warn"}
	for _, kv := range env {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			return f
		}
		select {
		case <-done:
			t.Fatalf("emulator exited while starting:\n%s", f.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("emulator not listening after a minute:\n%s", f.Output())
		}
	}
}

// Post sends one invocation and returns the body the function answered (a result,
// or the runtime's {"errorType", "errorMessage"}).
func (f *Function) Post(ctx context.Context, payload []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("invoke the function: %w", err)
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Invoke is the Lambda integration of Step Functions (it implements
// sim.LambdaInvoker): a function error becomes an error named by its errorType.
//
// As on AWS, an invocation runs to its end even when the caller gives up (Step
// Functions stopping an execution does not stop its running function), and the
// emulator's single sandbox takes one at a time, like a function with reserved
// concurrency 1 (an invocation cut off or overlapped kills the emulator).
func (f *Function) Invoke(ctx context.Context, _ string, payload []byte) ([]byte, error) {
	f.one.Lock()
	defer f.one.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Minute)
	defer cancel()
	body, err := f.Post(ctx, payload)
	if err != nil {
		return nil, err
	}
	var fe struct {
		ErrorType    *string `json:"errorType"`
		ErrorMessage string  `json:"errorMessage"`
	}
	if json.Unmarshal(body, &fe) == nil && fe.ErrorType != nil {
		return nil, &asl.Error{Name: *fe.ErrorType, Cause: fe.ErrorMessage}
	}
	return body, nil
}
