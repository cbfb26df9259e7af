package testenv

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KwokNodeAnnotation marks the Nodes kwok manages (as their kubelet).
const (
	KwokNodeAnnotation      = "kwok.x-k8s.io/node"
	KwokNodeAnnotationValue = "fake"
)

//go:embed kwok/nodes.yaml
var nodeStages []byte

//go:embed kwok/pods.yaml
var podStages []byte

// Env is a running control plane. Stop it when done.
type Env struct {
	// Dir holds the environment's files: <component>.log, kubeconfig, keys.
	Dir string
	// Kubeconfig is the path of an admin kubeconfig (group system:masters).
	Kubeconfig string
	// Config and Client talk to the apiserver as that admin.
	Config *rest.Config
	Client kubernetes.Interface

	keepDir  bool
	mu       sync.Mutex
	procs    []*process
	stopOnce sync.Once
	stopErr  error

	// apiserver is how kube-apiserver was started, so StartAPIServer can start it
	// again on the same address with the same etcd and certificates.
	apiserver struct {
		bin  string
		args []string
	}
}

// process is one running component.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the component's log for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(string(b), 30)
}

// Start builds what is missing (see EnsureBinaries) and starts etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
// 127.0.0.1 with free ports. It returns once the apiserver is ready and the
// default namespaces and service account exist. On error nothing is left
// running.
func Start(ctx context.Context, opts Options) (*Env, error) {
	bins, err := EnsureBinaries(ctx, opts)
	if err != nil {
		return nil, err
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	tmp := opts.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	}
	removeStaleDirs(tmp)
	// A free port can be taken by another process between our probe and the
	// component's bind (parallel test packages start at once): try again.
	for attempt := 1; ; attempt++ {
		env, err := startOnce(ctx, tmp, bins, opts)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return env, err
		}
		progressf(opts.Progress, "testenv: port clash, starting again: %v", firstLine(err.Error()))
	}
}

func startOnce(ctx context.Context, tmp string, bins Binaries, opts Options) (*Env, error) {
	dir, err := os.MkdirTemp(tmp, envDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create control-plane dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("create control-plane dir: %w", err)
	}
	env := &Env{Dir: dir, keepDir: opts.KeepDir || os.Getenv("RECYCLER_KEEP_TESTENV") == "1"}
	if err := env.start(ctx, bins, opts); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return env, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (e *Env) start(ctx context.Context, bins Binaries, opts Options) error {
	began := time.Now()
	keys, err := writePKI(e.Dir)
	if err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	host := "https://127.0.0.1:" + strconv.Itoa(apiPort)

	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	if err := writeKubeconfig(e.Kubeconfig, host, keys); err != nil {
		return err
	}
	e.Config = &rest.Config{
		Host:            host,
		BearerToken:     keys.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: keys.caCert},
		// Tests create objects in bursts; client-go's 5 QPS would be the bottleneck.
		QPS:   200,
		Burst: 400,
	}
	if e.Client, err = kubernetes.NewForConfig(e.Config); err != nil {
		return fmt.Errorf("client for %s: %w", host, err)
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	etcd, err := e.run("etcd", bins.Etcd,
		"--name=testenv",
		"--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=testenv="+peerURL,
		// Throw-away data: durability only costs time.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	// The apiserver retries its etcd connection, so both start together.
	e.apiserver.bin = bins.KubeAPIServer
	e.apiserver.args = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback address; nothing here
		// reaches the apiserver through the kubernetes Service anyway.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + keys.servingCert,
		"--tls-private-key-file=" + keys.servingKey,
		"--client-ca-file=" + keys.caFile,
		"--token-auth-file=" + keys.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + keys.saPublicKey,
		"--service-account-signing-key-file=" + keys.saPrivateKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(e.Dir, "apiserver-certs"),
	}
	if opts.TokenWebhookConfig != "" {
		e.apiserver.args = append(e.apiserver.args, "--authentication-token-webhook-config-file="+opts.TokenWebhookConfig)
	}
	apiserver, err := e.run("kube-apiserver", e.apiserver.bin, e.apiserver.args...)
	if err != nil {
		return err
	}
	progressf(opts.Progress, "testenv: waiting for kube-apiserver at %s", host)
	if err := e.waitReady(ctx, etcd, apiserver); err != nil {
		return err
	}

	if _, err := e.run("kube-controller-manager", bins.KubeControllerManager,
		"--kubeconfig="+e.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers=*",
		"--service-account-private-key-file="+keys.saPrivateKey,
		"--root-ca-file="+keys.caFile,
		"--cluster-name=recycler-testenv",
		"--use-service-account-credentials=false",
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--profiling=false",
	); err != nil {
		return err
	}
	if _, err := e.run("kube-scheduler", bins.KubeScheduler,
		"--kubeconfig="+e.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	); err != nil {
		return err
	}
	stages := filepath.Join(e.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, append(append(append([]byte{}, nodeStages...), "\n---\n"...), podStages...), 0o644); err != nil {
		return fmt.Errorf("write kwok stages: %w", err)
	}
	if _, err := e.run("kwok", bins.Kwok,
		"--kubeconfig="+e.Kubeconfig,
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+KwokNodeAnnotation+"="+KwokNodeAnnotationValue,
		// Heartbeats through Leases, like a kubelet: node-lifecycle never
		// sees a stale node while kwok runs.
		"--node-lease-duration-seconds=40",
		// Room for 65k pod IPs (the default /24 runs out in big tests).
		"--cidr=10.0.0.0/16",
	); err != nil {
		return err
	}

	if err := e.waitBootstrapped(ctx); err != nil {
		return err
	}
	progressf(opts.Progress, "testenv: control plane ready in %s (%s)", time.Since(began).Round(time.Millisecond), e.Dir)
	return nil
}

// run starts one component in its own process group, logging to
// Dir/<name>.log. Pdeathsig kills it should this process die without Stop
// (a panicking or killed test binary).
func (e *Env) run(name, bin string, args ...string) (*process, error) {
	p, err := e.spawn(name, bin, args...)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

// spawn starts a component without registering it in procs.
func (e *Env) spawn(name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(e.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// HOME keeps kwok from reading a user's ~/.kwok config.
	cmd.Env = append(os.Environ(), "HOME="+e.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls the apiserver's /readyz until it answers ok, failing fast
// with the component's log when one of the components exits.
func (e *Env) waitReady(ctx context.Context, etcd, apiserver *process) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := e.checkAlive(); err != nil {
			return false, err
		}
		body, err := e.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = strings.TrimSpace(string(body) + " " + err.Error())
		}
		return err == nil, nil // not ready yet: poll again
	})
	if err != nil {
		if errors.Is(err, errExited) {
			return err
		}
		return fmt.Errorf("kube-apiserver not ready: %w (last answer: %s)\nkube-apiserver log:\n%s\netcd log:\n%s",
			err, tail(last, 20), apiserver.logTail(), etcd.logTail())
	}
	return nil
}

var errExited = errors.New("exited during startup")

// checkAlive returns an error with the log tail of the first component that
// has exited.
func (e *Env) checkAlive() error {
	e.mu.Lock()
	procs := append([]*process(nil), e.procs...)
	e.mu.Unlock()
	for _, p := range procs {
		if p.exited() {
			return fmt.Errorf("%s %w (%w); last lines of %s:\n%s", p.name, errExited, p.waitErr, p.logPath, p.logTail())
		}
	}
	return nil
}

// waitBootstrapped waits for what tests take for granted: the system
// namespaces and the default service account (created by the controller-manager).
func (e *Env) waitBootstrapped(ctx context.Context) error {
	var missing string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := e.checkAlive(); err != nil {
			return false, err
		}
		missing = e.notBootstrapped(ctx)
		return missing == "", nil
	})
	if err != nil {
		if errors.Is(err, errExited) {
			return err
		}
		e.mu.Lock()
		kcm := e.procs[2]
		e.mu.Unlock()
		return fmt.Errorf("control plane not bootstrapped: %w (still missing %s)\nkube-controller-manager log:\n%s", err, missing, kcm.logTail())
	}
	return nil
}

// StopAPIServer kills kube-apiserver (SIGKILL: connections drop mid-request, as when
// a control-plane node fails or is replaced) and waits until it has exited. etcd,
// the controllers, the scheduler and kwok keep running and retry, as they would in a
// cluster whose API endpoint went away. StartAPIServer brings it back.
func (e *Env) StopAPIServer() error {
	p, _ := e.component("kube-apiserver")
	if p == nil {
		return errors.New("stop kube-apiserver: not started")
	}
	if p.exited() {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("stop kube-apiserver: pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the same
// flags: the same port, etcd, certificates and tokens, so every client's
// configuration stays valid. It returns once /readyz answers ok. The previous log
// is kept as kube-apiserver.log.<n>.
func (e *Env) StartAPIServer(ctx context.Context) error {
	old, i := e.component("kube-apiserver")
	if old == nil {
		return errors.New("start kube-apiserver: never started")
	}
	if !old.exited() {
		return errors.New("start kube-apiserver: still running; call StopAPIServer first")
	}
	for n := 1; ; n++ {
		kept := fmt.Sprintf("%s.%d", old.logPath, n)
		if _, err := os.Stat(kept); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(old.logPath, kept); err != nil {
				return fmt.Errorf("start kube-apiserver: keep old log: %w", err)
			}
			break
		}
	}
	p, err := e.spawn("kube-apiserver", e.apiserver.bin, e.apiserver.args...)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.procs[i] = p
	e.mu.Unlock()
	etcd, _ := e.component("etcd")
	return e.waitReady(ctx, etcd, p)
}

// component returns the named running (or last) component and its index in procs.
func (e *Env) component(name string) (*process, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, p := range e.procs {
		if p.name == name {
			return p, i
		}
	}
	return nil, -1
}

// notBootstrapped names the first object tests take for granted that does not
// exist yet, or returns "".
func (e *Env) notBootstrapped(ctx context.Context) string {
	for _, ns := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease} {
		if _, err := e.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			return "namespace " + ns + ": " + err.Error()
		}
	}
	if _, err := e.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return "service account default/default: " + err.Error()
	}
	return ""
}

// Stop kills every component (whole process groups), waits for them and
// removes Dir. It is safe to call more than once.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		e.mu.Lock()
		procs := append([]*process(nil), e.procs...)
		e.mu.Unlock()
		// Reverse order: clients first, etcd last. The data is thrown away,
		// so there is nothing to shut down gracefully.
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			if p.exited() {
				continue // e.g. an apiserver stopped by StopAPIServer: its pid may be reused
			}
			if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				e.stopErr = errors.Join(e.stopErr, fmt.Errorf("kill %s: %w", p.name, err))
			}
		}
		for _, p := range procs {
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				e.stopErr = errors.Join(e.stopErr, fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid))
			}
		}
		if e.keepDir {
			// Not stale: keep it from the next Start's clean-up.
			_ = os.Remove(filepath.Join(e.Dir, ownerFile))
		} else if err := os.RemoveAll(e.Dir); err != nil {
			e.stopErr = errors.Join(e.stopErr, fmt.Errorf("remove %s: %w", e.Dir, err))
		}
	})
	return e.stopErr
}

// Pids returns the process ids of the running components (for leak checks).
func (e *Env) Pids() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	pids := make([]int, 0, len(e.procs))
	for _, p := range e.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

func writeKubeconfig(path, host string, keys *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: keys.caCert}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: keys.adminToken}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "admin"}
	cfg.CurrentContext = "testenv"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// freePorts asks the kernel for n distinct free loopback ports. They are
// released before use, so another process could take one in between; the
// window is short and a clash fails Start loudly with the component's log.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

const (
	envDirPrefix = "recycler-testenv-"
	ownerFile    = "owner.pid"
)

// removeStaleDirs deletes environment dirs whose owning process is gone (a
// test binary that panicked or was killed leaves its dir behind; Pdeathsig
// already took care of its processes).
func removeStaleDirs(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, envDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// isNotFound reports a 404 from the apiserver.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
