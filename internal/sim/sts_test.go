package sim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// presignFor presigns GetCallerIdentity with the cluster header (cluster "prod")
// signed, as an EKS token does, with the given keys, at the simulation's (fake) time.
func presignFor(t *testing.T, h *harness, endpoint string, creds aws.Credentials) string {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(h.ctx, config.WithRegion(h.sim.Region()), config.WithBaseEndpoint(endpoint),
		config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: creds}))
	if err != nil {
		t.Fatal(err)
	}
	pc := sts.NewPresignClient(sts.NewFromConfig(cfg), func(o *sts.PresignOptions) {
		o.Presigner = presignAt{v4.NewSigner(), h.clock.Now()}
	})
	req, err := pc.PresignGetCallerIdentity(h.ctx, &sts.GetCallerIdentityInput{}, func(o *sts.PresignOptions) {
		o.ClientOptions = append(o.ClientOptions, func(so *sts.Options) {
			so.APIOptions = append(so.APIOptions, smithyhttp.SetHeaderValue("x-k8s-aws-id", "prod"), smithyhttp.SetHeaderValue("X-Amz-Expires", "60"))
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return req.URL
}

// presignAt signs at a fixed (the fake clock's) time.
type presignAt struct {
	signer *v4.Signer
	at     time.Time
}

func (p presignAt) PresignHTTP(ctx context.Context, c aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time,
	optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.signer.PresignHTTP(ctx, c, r, payloadHash, service, region, p.at, optFns...)
}

// getPresigned sends the presigned URL as a verifier does: GET, the cluster
// header it expects, JSON wanted.
func getPresigned(t *testing.T, client *http.Client, rawURL, cluster string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-k8s-aws-id", cluster)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPresignedGetCallerIdentityIsVerified(t *testing.T) {
	h := newHarness(t, Options{})
	role := AssumedRole("123456789012", "recycler-lambda", "fn", "ASIASIMULATEDLAMBDA", "lambda-secret", "session-token-1")
	h.sim.AddIdentity(role)
	good := aws.Credentials{AccessKeyID: role.AccessKeyID, SecretAccessKey: role.SecretAccessKey, SessionToken: role.SessionToken}
	client := http.DefaultClient

	u := presignFor(t, h, h.sim.URL(), good)
	status, body := getPresigned(t, client, u, "prod")
	if status != 200 {
		t.Fatalf("valid presigned URL: %d %s", status, body)
	}
	var out struct {
		GetCallerIdentityResponse struct {
			GetCallerIdentityResult struct {
				Account, Arn string
				UserID       string `json:"UserId"`
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("want the JSON answer aws-iam-authenticator reads: %v\n%s", err, body)
	}
	if got := out.GetCallerIdentityResponse.GetCallerIdentityResult; got.Arn != role.ARN || got.Account != "123456789012" || !strings.HasSuffix(got.UserID, ":fn") {
		t.Fatalf("caller = %+v, want the assumed role %s", got, role.ARN)
	}

	for _, tc := range []struct {
		name, url, cluster, want string
	}{
		{"token for another cluster", u, "staging", "SignatureDoesNotMatch"},
		{"wrong secret", presignFor(t, h, h.sim.URL(), aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: "guess", SessionToken: good.SessionToken}), "prod", "SignatureDoesNotMatch"},
		{"wrong session token", presignFor(t, h, h.sim.URL(), aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey, SessionToken: "stale"}), "prod", "InvalidClientTokenId"},
		{"unknown key", presignFor(t, h, h.sim.URL(), aws.Credentials{AccessKeyID: "AKIDNOBODY", SecretAccessKey: "x"}), "prod", "InvalidClientTokenId"},
		{"tampered query", strings.Replace(u, "Version=2011-06-15", "Version=2011-06-16", 1), "prod", "SignatureDoesNotMatch"},
	} {
		status, body := getPresigned(t, client, tc.url, tc.cluster)
		if status != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want 403 %s", tc.name, status, body, tc.want)
		}
	}

	// Valid for 15 minutes from X-Amz-Date, although X-Amz-Expires says 60 s.
	h.step(14*time.Minute + 59*time.Second)
	if status, body := getPresigned(t, client, u, "prod"); status != 200 {
		t.Fatalf("after 14m59s: %d %s, want still accepted", status, body)
	}
	h.step(2 * time.Second)
	if status, body := getPresigned(t, client, u, "prod"); status != http.StatusForbidden || !strings.Contains(body, "Signature expired") {
		t.Fatalf("after 15m01s: %d %s, want 403 Signature expired", status, body)
	}
}

func TestProxyAnswersForTheRealSTSHostOnly(t *testing.T) {
	h := newHarness(t, Options{})
	tr, err := h.sim.ProxyTransport()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: tr}
	u := presignFor(t, h, "https://sts.us-east-1.amazonaws.com", aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey})
	if !strings.HasPrefix(u, "https://sts.us-east-1.amazonaws.com/?") {
		t.Fatalf("presigned URL %s does not name the STS host", u)
	}
	if status, body := getPresigned(t, client, u, "prod"); status != 200 || !strings.Contains(body, "user/sim") {
		t.Fatalf("through the proxy: %d %s", status, body)
	}
	// Anything but *.amazonaws.com:443 is refused, never forwarded.
	req, _ := http.NewRequest(http.MethodConnect, h.sim.URL(), nil)
	req.Host = "example.com:443"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT example.com:443 → %d, want 403", resp.StatusCode)
	}
}

func TestGetCallerIdentityNamesTheCaller(t *testing.T) {
	h := newHarness(t, Options{})
	role := AssumedRole("123456789012", "ops", "alice", "ASIAOPS", "s", "t")
	h.sim.AddIdentity(role)
	cfg, err := config.LoadDefaultConfig(h.ctx, config.WithRegion(h.sim.Region()), config.WithBaseEndpoint(h.sim.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(role.AccessKeyID, role.SecretAccessKey, role.SessionToken)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(h.ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Arn) != role.ARN {
		t.Fatalf("arn = %s, want %s", aws.ToString(out.Arn), role.ARN)
	}
	// The default identity still answers for any other key.
	if out, err := h.sts.GetCallerIdentity(h.ctx, &sts.GetCallerIdentityInput{}); err != nil || aws.ToString(out.Account) != "123456789012" {
		t.Fatalf("default identity: %v %v", out, err)
	}
}

func TestDescribeClusterRoundTripsThroughTheSDK(t *testing.T) {
	h := newHarness(t, Options{Region: "eu-central-1"})
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if err := h.sim.CreateCluster(ClusterSpec{Name: "prod-1", Endpoint: "https://127.0.0.1:6443", CAData: ca}); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.CreateCluster(ClusterSpec{Name: "-bad", Endpoint: "https://x", CAData: ca}); err == nil {
		t.Fatal("a malformed cluster name was accepted")
	}
	cfg, err := config.LoadDefaultConfig(h.ctx, config.WithRegion("eu-central-1"), config.WithBaseEndpoint(h.sim.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	c := eks.NewFromConfig(cfg)
	out, err := c.DescribeCluster(context.Background(), &eks.DescribeClusterInput{Name: aws.String("prod-1")})
	if err != nil {
		t.Fatal(err)
	}
	cl := out.Cluster
	data, _ := base64.StdEncoding.DecodeString(aws.ToString(cl.CertificateAuthority.Data))
	if aws.ToString(cl.Endpoint) != "https://127.0.0.1:6443" || string(data) != string(ca) || cl.Status != ekstypes.ClusterStatusActive ||
		aws.ToString(cl.Arn) != "arn:aws:eks:eu-central-1:123456789012:cluster/prod-1" || cl.CreatedAt == nil || !cl.CreatedAt.Equal(epoch) {
		t.Fatalf("cluster = %+v", cl)
	}
	_, err = c.DescribeCluster(context.Background(), &eks.DescribeClusterInput{Name: aws.String("nope")})
	var nf *ekstypes.ResourceNotFoundException
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "No cluster found for name: nope.") {
		t.Fatalf("unknown cluster: %v, want ResourceNotFoundException", err)
	}
	if got := h.sim.Calls()["eks:DescribeCluster"]; got != 2 {
		t.Errorf("eks:DescribeCluster counted %d times, want 2", got)
	}
}
