package recycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/kube"
)

// createNode asks a real client-go clientset at host to create a Node and returns its
// error: these shapes are what the Kubernetes client really returns, not imitations.
// (A write: client-go itself retries a GET cut off by EOF, for 10 s.)
func createNode(t *testing.T, host string) error {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: host})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{})
	if err == nil {
		t.Fatal("Create succeeded")
	}
	// As the kube package wraps it.
	return fmt.Errorf("create node n1: %w", err)
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// dropAfter answers with a status line and headers promising a body, then closes
// the connection half-way: the apiserver dying mid-answer.
func dropAfter(t *testing.T, partial string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		fmt.Fprint(buf, partial)
		buf.Flush()
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type timeoutErr struct{ msg string }

func (e timeoutErr) Error() string { return e.msg }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassifyNetworkErrorsAsTransient(t *testing.T) {
	reqURL := "https://10.0.0.1:443/api/v1/nodes/n1"
	urlErr := func(inner error) error {
		return fmt.Errorf("watch pods on node n1: %w", &url.Error{Op: "Get", URL: reqURL, Err: inner})
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"connection refused (real client, closed port)", createNode(t, closedPort(t))},
		{"unexpected EOF (real client, body cut off)", createNode(t, dropAfter(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"kind\":"))},
		{"EOF before any answer (real client)", createNode(t, dropAfter(t, ""))},
		{"connection reset", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})},
		{"http2: client connection lost", urlErr(errors.New("http2: client connection lost"))},
		{"http2 GOAWAY (x/net's wording)", urlErr(errors.New("http2 server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\""))},
		{"http2: GOAWAY (net/http's wording)", urlErr(errors.New("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\""))},
		{"dial timeout", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ETIMEDOUT)})},
		{"TLS handshake timeout", urlErr(timeoutErr{"net/http: TLS handshake timeout"})},
		{"i/o timeout", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{"i/o timeout"}})},
		{"broken pipe", urlErr(&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)})},
		{"no route to host", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)})},
		{"network unreachable", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)})},
		{"DNS temporary failure", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "api.eks", IsTemporary: true}})},
		{"use of closed network connection", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed})},
		{"apiserver 503 while starting", apierrors.NewServiceUnavailable("etcd not ready")},
		{"apiserver 429", apierrors.NewTooManyRequests("slow down", 1)},
		{"AWS throttling", fmt.Errorf("describe group: %w", cloud.ErrThrottled)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify("Drain", tc.err)
			if name := asl.ErrorName(got); name != ErrTransient {
				t.Errorf("classify(%v) is named %q, want %s (retried, not rolled back)", tc.err, name, ErrTransient)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("classify lost the cause: %v", got)
			}
		})
	}
}

func TestClassifyKeepsOtherErrorsTheirMeaning(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // ASL name
	}{
		{"not found", apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, "n1"), asl.ErrTaskFailed},
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("RBAC")), asl.ErrTaskFailed},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Node"}, "n1", nil), asl.ErrTaskFailed},
		{"a plain bug", errors.New("boom"), asl.ErrTaskFailed},
		{"DNS: no such host", &net.DNSError{Err: "no such host", Name: "api.eks", IsNotFound: true}, asl.ErrTaskFailed},
		{"the task's own deadline", fmt.Errorf("get node: %w", context.DeadlineExceeded), asl.ErrTimeout},
		{"an abort", &url.Error{Op: "Get", URL: "https://x", Err: context.Canceled}, asl.ErrTaskFailed},
		{"node held", fmt.Errorf("fence: %w", kube.ErrNodeHeld), ErrPrecondition},
		{"already named", newError(ErrDrainTimeout, "pods still running"), ErrDrainTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := asl.ErrorName(classify("Drain", tc.err)); got != tc.want {
				t.Errorf("classify(%v) is named %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
