package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recycler/recycler/internal/testenv"
)

// Mapping maps an IAM principal to a Kubernetes user and groups, as EKS's
// aws-auth config map or access entries do. ARN is a role
// (arn:aws:iam::ACCOUNT:role/NAME: sessions of it match) or a user.
type Mapping struct {
	ARN      string
	Username string // may use {{SessionName}}, {{AccountID}}
	Groups   []string
}

// AuthenticatorOptions configure StartAuthenticator.
type AuthenticatorOptions struct {
	// ClusterID is the cluster name tokens must be signed for.
	ClusterID string
	Mappings  []Mapping
	// Dir holds its state (certificate), config, webhook kubeconfig and log;
	// default a temporary folder removed by Stop.
	Dir string
	// StartTimeout bounds the wait for it to serve; default 1 minute.
	StartTimeout time.Duration
}

// Authenticator is a running `aws-iam-authenticator server`, the webhook EKS's
// apiservers ask about bearer tokens. It verifies tokens by sending their
// presigned GetCallerIdentity to STS — through this simulator's HTTPS proxy, so
// the simulated STS checks the signature — and maps the caller's ARN to a
// Kubernetes user and groups.
type Authenticator struct {
	// WebhookKubeconfig is for testenv.Options.TokenWebhookConfig.
	WebhookKubeconfig string
	Dir               string
	LogPath           string

	cmd     *exec.Cmd
	done    chan struct{}
	ownDir  bool
	waitErr error
}

// StartAuthenticator builds (once, cached) and starts aws-iam-authenticator
// against this simulator. Call Stop.
func (s *Server) StartAuthenticator(ctx context.Context, opts AuthenticatorOptions) (*Authenticator, error) {
	if opts.ClusterID == "" {
		return nil, errors.New("start aws-iam-authenticator: ClusterID is empty")
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = time.Minute
	}
	bin, err := testenv.Tool(ctx, testenv.ToolIAMAuthenticator)
	if err != nil {
		return nil, fmt.Errorf("start aws-iam-authenticator: %w", err)
	}
	a := &Authenticator{Dir: opts.Dir, done: make(chan struct{})}
	if a.Dir == "" {
		if a.Dir, err = os.MkdirTemp("", "recycler-iamauth-"); err != nil {
			return nil, fmt.Errorf("start aws-iam-authenticator: %w", err)
		}
		a.ownDir = true
	}
	fail := func(err error) (*Authenticator, error) {
		_ = a.Stop()
		return nil, fmt.Errorf("start aws-iam-authenticator: %w", err)
	}
	ca, err := s.ProxyCA()
	if err != nil {
		return fail(err)
	}
	caFile := filepath.Join(a.Dir, "simulated-aws-ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		return fail(err)
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(filepath.Join(a.Dir, "state"), 0o700); err != nil {
		return fail(err)
	}
	a.WebhookKubeconfig = filepath.Join(a.Dir, "webhook-kubeconfig.yaml")
	type roleMap struct {
		RoleARN  string   `json:"rolearn"`
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	}
	type userMap struct {
		UserARN  string   `json:"userarn"`
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	}
	var roles []roleMap
	var users []userMap
	for _, m := range opts.Mappings {
		if strings.Contains(m.ARN, ":role/") {
			roles = append(roles, roleMap{m.ARN, m.Username, m.Groups})
		} else {
			users = append(users, userMap{m.ARN, m.Username, m.Groups})
		}
	}
	cfg := map[string]any{
		"clusterID": opts.ClusterID,
		"server": map[string]any{
			"port":               port,
			"hostname":           "127.0.0.1",
			"address":            "127.0.0.1",
			"stateDir":           filepath.Join(a.Dir, "state"),
			"generateKubeconfig": a.WebhookKubeconfig,
			"mapRoles":           roles,
			"mapUsers":           users,
		},
	}
	cfgPath := filepath.Join(a.Dir, "config.json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return fail(err)
	}
	a.LogPath = filepath.Join(a.Dir, "aws-iam-authenticator.log")
	logFile, err := os.Create(a.LogPath)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	a.cmd = exec.Command(bin, "server", "--config", cfgPath, "--log-format", "json")
	a.cmd.Env = append(os.Environ(),
		// STS is reached at its real host name, through the simulator.
		"HTTPS_PROXY="+s.URL(), "https_proxy="+s.URL(), "NO_PROXY=", "no_proxy=",
		"SSL_CERT_FILE="+caFile,
		// No instance metadata here (it would be 169.254.169.254).
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION="+s.opts.Region,
	)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		close(a.done)
		return fail(err)
	}
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()

	deadline := time.Now().Add(opts.StartTimeout)
	for {
		_, statErr := os.Stat(a.WebhookKubeconfig)
		if statErr == nil {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
				c.Close()
				return a, nil
			}
		}
		select {
		case <-a.done:
			return fail(fmt.Errorf("exited while starting (%w):\n%s", a.waitErr, a.logTail()))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("not serving after %s:\n%s", opts.StartTimeout, a.logTail()))
		}
	}
}

func (a *Authenticator) logTail() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Log returns what the authenticator logged so far (to explain a refusal).
func (a *Authenticator) Log() string {
	b, _ := os.ReadFile(a.LogPath)
	return string(b)
}

// Stop kills the authenticator and removes its folder if Start made it.
func (a *Authenticator) Stop() error {
	if a.cmd != nil && a.cmd.Process != nil {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
		a.cmd = nil
	}
	if a.ownDir && os.Getenv("RECYCLER_KEEP_TESTENV") != "1" {
		return os.RemoveAll(a.Dir)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
