package eksauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/recycler/recycler/internal/eksauth"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

const account = "123456789012"

// lambdaRole is the identity the Lambda runs as: a session of its role.
var lambdaRole = sim.AssumedRole(account, "recycler-lambda", "recycler-fn", "ASIASIMULATEDLAMBDA", "lambda-secret", "lambda-session-token")

// roleConfig is the SDK configuration of a program running as id against srv:
// AWS at the simulator, STS at its real host name through the simulator's
// proxy (the only STS host a token may name).
func roleConfig(t *testing.T, srv *sim.Server, id sim.Identity) aws.Config {
	t.Helper()
	tr, err := srv.ProxyTransport()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL", srv.URL())
	t.Setenv("AWS_ENDPOINT_URL_STS", "https://sts."+srv.Region()+".amazonaws.com")
	t.Setenv("AWS_CA_BUNDLE", "") // the transport trusts the simulator's CA already
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(srv.Region()),
		config.WithHTTPClient(&http.Client{Transport: tr}),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id.AccessKeyID, id.SecretAccessKey, id.SessionToken)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startSim(t *testing.T, opts sim.Options) *sim.Server {
	t.Helper()
	srv := sim.New(opts)
	if err := srv.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	srv.AddIdentity(lambdaRole)
	return srv
}

// verify runs `aws-iam-authenticator verify` (EKS's verifier) on a token for clusterID.
func verify(t *testing.T, srv *sim.Server, token, clusterID string) (string, error) {
	t.Helper()
	bin := testenv.NeedTool(t, testenv.ToolIAMAuthenticator)
	ca, err := srv.ProxyCA()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "verify", "-i", clusterID, "-t", token, "-o", "json")
	cmd.Env = append(os.Environ(), "HTTPS_PROXY="+srv.URL(), "SSL_CERT_FILE="+caFile, "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAWSIAMAuthenticatorAcceptsTheTokenOnlyForItsCluster(t *testing.T) {
	srv := startSim(t, sim.Options{})
	auth, err := eksauth.New(roleConfig(t, srv, lambdaRole), eksauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Token(t.Context(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	out, err := verify(t, srv, tok.Value, "prod")
	if err != nil {
		t.Fatalf("aws-iam-authenticator refused a token for its cluster: %v\n%s", err, out)
	}
	var id struct{ ARN, CanonicalARN, AccountID, SessionName string }
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &id); err != nil {
		t.Fatalf("verify output: %v\n%s", err, out)
	}
	if id.ARN != lambdaRole.ARN || id.CanonicalARN != "arn:aws:iam::"+account+":role/recycler-lambda" || id.SessionName != "recycler-fn" {
		t.Fatalf("identity = %+v, want the Lambda's role session", id)
	}
	out, err = verify(t, srv, tok.Value, "staging")
	if err == nil || !strings.Contains(out, "403") {
		t.Fatalf("a token for prod was accepted for staging (err %v):\n%s", err, out)
	}
	other, err := auth.Token(t.Context(), "staging")
	if err != nil {
		t.Fatal(err)
	}
	if other.Value == tok.Value {
		t.Fatal("two clusters got the same token")
	}
	if out, err := verify(t, srv, other.Value, "staging"); err != nil {
		t.Fatalf("staging's own token refused: %v\n%s", err, out)
	}
}

// presignedURL decodes a token back into its presigned URL.
func presignedURL(t *testing.T, tok string) *url.URL {
	t.Helper()
	raw, ok := strings.CutPrefix(tok, eksauth.TokenPrefix)
	if !ok {
		t.Fatalf("token %q lacks the %s prefix", tok, eksauth.TokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		t.Fatalf("token is not unpadded base64url: %v", err)
	}
	u, err := url.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestTokenIsCachedPerClusterAndRenewedBeforeItExpires(t *testing.T) {
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	srv := startSim(t, sim.Options{Clock: clk})
	auth, err := eksauth.New(roleConfig(t, srv, lambdaRole), eksauth.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tr, _ := srv.ProxyTransport()
	accepted := func(tok eksauth.Token, cluster string) bool {
		req, _ := http.NewRequest(http.MethodGet, presignedURL(t, tok.Value).String(), nil)
		req.Header.Set(eksauth.ClusterIDHeader, cluster)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == 200
	}

	t1, err := auth.Token(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	u := presignedURL(t, t1.Value)
	q := u.Query()
	if u.Scheme != "https" || u.Host != "sts.us-east-1.amazonaws.com" || q.Get("Action") != "GetCallerIdentity" ||
		!slices.Contains(strings.Split(q.Get("X-Amz-SignedHeaders"), ";"), eksauth.ClusterIDHeader) || q.Get("X-Amz-Date") != "20261201T090000Z" {
		t.Fatalf("presigned URL %s: want GetCallerIdentity at the STS host, signed at the clock's time, x-k8s-aws-id signed", u)
	}
	if !t1.Expires.Equal(start.Add(15 * time.Minute)) {
		t.Fatalf("expires %s, want 15 minutes after signing", t1.Expires)
	}
	staging, _ := auth.Token(ctx, "staging")
	if staging.Value == t1.Value || !accepted(staging, "staging") || accepted(staging, "prod") {
		t.Fatal("staging's token must be its own: accepted for staging, refused for prod")
	}

	clk.Step(13*time.Minute + 59*time.Second)
	if t2, _ := auth.Token(ctx, "prod"); t2.Value != t1.Value {
		t.Fatal("token renewed with more than a minute of validity left")
	}
	clk.Step(time.Second) // 14 minutes: one minute left
	t3, err := auth.Token(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	if t3.Value == t1.Value || !t3.SignedAt.Equal(start.Add(14*time.Minute)) {
		t.Fatalf("at 14m the token was not renewed (signed %s)", t3.SignedAt)
	}
	clk.Step(90 * time.Second) // 15m30s: the first token is dead, the renewed one is not
	if accepted(t1, "prod") || !accepted(t3, "prod") {
		t.Fatal("want the 15m30s-old token refused by STS and the renewed one accepted")
	}
}

func TestTokenExpiresWithItsCredentials(t *testing.T) {
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	srv := startSim(t, sim.Options{Clock: clk})
	cfg := roleConfig(t, srv, lambdaRole)
	cfg.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: lambdaRole.AccessKeyID, SecretAccessKey: lambdaRole.SecretAccessKey, SessionToken: lambdaRole.SessionToken,
			CanExpire: true, Expires: clk.Now().Add(5 * time.Minute)}, nil
	})
	auth, err := eksauth.New(cfg, eksauth.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Token(t.Context(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expires.Equal(start.Add(5 * time.Minute)) {
		t.Fatalf("expires %s, want when the session credentials do (%s)", tok.Expires, start.Add(5*time.Minute))
	}
	clk.Step(4 * time.Minute)
	if again, _ := auth.Token(t.Context(), "prod"); again.Value == tok.Value {
		t.Fatal("token kept past its credentials' last minute")
	}
}

func TestBadClusterNamesAreRefusedBeforeAnyCall(t *testing.T) {
	srv := startSim(t, sim.Options{})
	auth, err := eksauth.New(roleConfig(t, srv, lambdaRole), eksauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "-x", "a/b", strings.Repeat("a", 101)} {
		if _, err := auth.RESTConfig(t.Context(), name); err == nil || !strings.Contains(err.Error(), "not an EKS cluster name") {
			t.Errorf("cluster %q: %v, want a name error", name, err)
		}
	}
	if n := len(srv.Calls()); n != 0 {
		t.Errorf("bad names made %d kinds of API calls: %v", n, srv.Calls())
	}
	_, err = auth.Cluster(t.Context(), "absent")
	if !errors.Is(err, eksauth.ErrClusterNotFound) {
		t.Fatalf("unknown cluster: %v, want ErrClusterNotFound", err)
	}
}

// The strongest check: the real kube-apiserver, configured as EKS configures
// it, authenticates our token through aws-iam-authenticator's webhook, which
// verifies it against the simulated STS and maps the role to a group.
func TestAPIServerAuthenticatesTheTokenThroughTheEKSWebhook(t *testing.T) {
	ctx := t.Context()
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: 1, Workloads: "none", Progress: testWriter{t},
		EKS: &sim.EKSOptions{Mappings: []sim.Mapping{{
			ARN: "arn:aws:iam::" + account + ":role/recycler-lambda", Username: "recycler:{{SessionName}}", Groups: []string{"recycler"},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Down(context.Background()) })
	env.AWS.AddIdentity(lambdaRole)
	if err := env.BindGroup(ctx, "recycler", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}}}); err != nil {
		t.Fatal(err)
	}

	auth, err := eksauth.New(roleConfig(t, env.AWS, lambdaRole), eksauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := auth.RESTConfig(ctx, env.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != env.Kube.Config.Host || rc.BearerToken != "" || rc.BearerTokenFile != "" {
		t.Fatalf("rest config %s: want the apiserver from DescribeCluster and no static token", rc.Host)
	}
	cs := kubernetes.NewForConfigOrDie(rc)
	who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("whoami: %v\nauthenticator log:\n%s", err, env.Authenticator.Log())
	}
	if u := who.Status.UserInfo; u.Username != "recycler:recycler-fn" || !slices.Contains(u.Groups, "recycler") {
		t.Fatalf("authenticated as %q %v, want recycler:recycler-fn in group recycler", u.Username, u.Groups)
	}
	if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil || len(nodes.Items) == 0 {
		t.Fatalf("list nodes as the role: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets: %v, want Forbidden (RBAC of the mapped group, not admin)", err)
	}

	// A second cluster of the same Auth gets its own token: this apiserver's
	// authenticator is for env.Cluster, so it refuses "other"'s token.
	if err := env.AWS.CreateCluster(sim.ClusterSpec{Name: "other", Endpoint: env.Kube.Config.Host, CAData: env.Kube.Config.CAData}); err != nil {
		t.Fatal(err)
	}
	orc, err := auth.RESTConfig(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(orc).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("other cluster's token at %s's apiserver: %v, want Unauthorized", env.Cluster, err)
	}
	if _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("after the other cluster's refusal, %s still works: %v", env.Cluster, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
