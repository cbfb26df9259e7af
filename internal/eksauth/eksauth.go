// Package eksauth connects to Amazon EKS clusters the way EKS authenticates,
// with no kubeconfig file and no aws CLI: the cluster's endpoint and CA come
// from eks:DescribeCluster (cached per cluster), and the bearer token is a
// presigned sts:GetCallerIdentity URL with the cluster's name in the signed
// x-k8s-aws-id header — what aws-iam-authenticator (EKS's token verifier)
// accepts. Tokens are cached per cluster until shortly before they expire;
// every rest.Config carries its own cluster's token source, so one cluster's
// token is never sent to another. See docs/lambda.md ("Authentication").
package eksauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/utils/clock"
)

const (
	// TokenPrefix starts every EKS bearer token; base64url (unpadded) of the
	// presigned URL follows.
	TokenPrefix = "k8s-aws-v1."
	// ClusterIDHeader carries the cluster name inside the signature, so a token
	// made for one cluster is refused by another.
	ClusterIDHeader = "x-k8s-aws-id"
	// TokenValidity: STS accepts the presigned URL, and so EKS the token, for 15
	// minutes from X-Amz-Date whatever X-Amz-Expires says.
	TokenValidity = 15 * time.Minute
	// DefaultRefreshBefore is how long before the end of its validity a cached
	// token is replaced (aws-iam-authenticator's own generator uses 1 minute).
	DefaultRefreshBefore = time.Minute
	// presignExpires is X-Amz-Expires: ignored by STS; aws-iam-authenticator
	// accepts 0–900 and its own generator sends 60.
	presignExpires = "60"
)

// ErrClusterNotFound: DescribeCluster knows no such cluster in this account and region.
var ErrClusterNotFound = errors.New("EKS cluster not found")

// clusterNameRE is EKS's documented name pattern.
var clusterNameRE = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$`)

// ValidateClusterName says what is wrong with a cluster name, before any call.
func ValidateClusterName(name string) error {
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("cluster name %q is not an EKS cluster name: 1-100 letters, digits, '-' and '_', starting with a letter or digit", name)
	}
	return nil
}

// Cluster is what DescribeCluster says about a cluster.
type Cluster struct {
	Name     string
	ARN      string
	Endpoint string // https://…
	CAData   []byte // PEM
	Region   string // from the ARN
	Account  string // from the ARN
}

// CheckAccount says when the cluster is not in the given region or account:
// a wrong profile or AWS_REGION would otherwise recycle nodes of another
// cluster's groups, or none.
func (c Cluster) CheckAccount(region, account string) error {
	var diffs []string
	if region != "" && c.Region != region {
		diffs = append(diffs, fmt.Sprintf("its region is %s, the AWS configuration's is %s", c.Region, region))
	}
	if account != "" && c.Account != account {
		diffs = append(diffs, fmt.Sprintf("its account is %s, the AWS credentials' is %s", c.Account, account))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("cluster %s (%s) does not match the AWS configuration: %s; set AWS_REGION / AWS_PROFILE for the cluster's account and region",
			c.Name, c.ARN, strings.Join(diffs, "; "))
	}
	return nil
}

// Token is a bearer token for one cluster.
type Token struct {
	Value    string
	SignedAt time.Time
	// Expires is when EKS stops accepting it: SignedAt+15 min, or earlier when
	// the credentials that signed it expire first.
	Expires time.Time
}

// Options tune an Auth. The zero value is usable.
type Options struct {
	// Clock signs tokens and decides when they are renewed; default the real clock.
	Clock clock.PassiveClock
	// RefreshBefore: a cached token is replaced once less than this is left of
	// its validity. Default DefaultRefreshBefore.
	RefreshBefore time.Duration
}

// Auth describes clusters and makes their tokens, with one cache per cluster.
// Safe for concurrent use.
type Auth struct {
	eks     *eks.Client
	sts     *sts.Client
	presign *sts.PresignClient
	creds   sdkaws.CredentialsProvider
	region  string
	clock   clock.PassiveClock
	refresh time.Duration

	mu       sync.Mutex
	clusters map[string]Cluster
	tokens   map[string]Token
}

// New builds an Auth from an SDK configuration (region, credentials,
// endpoints: AWS_ENDPOINT_URL_EKS / _STS apply as usual).
func New(cfg sdkaws.Config, opts Options) (*Auth, error) {
	if cfg.Region == "" {
		return nil, errors.New("no AWS region configured: set AWS_REGION (or a region in the AWS profile) to the cluster's region")
	}
	if cfg.Credentials == nil {
		return nil, errors.New("no AWS credentials configured: EKS tokens are signed with them")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.RefreshBefore <= 0 {
		opts.RefreshBefore = DefaultRefreshBefore
	}
	stsClient := sts.NewFromConfig(cfg)
	a := &Auth{
		eks:      eks.NewFromConfig(cfg),
		sts:      stsClient,
		creds:    cfg.Credentials,
		region:   cfg.Region,
		clock:    opts.Clock,
		refresh:  opts.RefreshBefore,
		clusters: map[string]Cluster{},
		tokens:   map[string]Token{},
	}
	a.presign = sts.NewPresignClient(stsClient, func(o *sts.PresignOptions) {
		o.Presigner = clockPresigner{signer: v4.NewSigner(), clock: opts.Clock}
	})
	return a, nil
}

// Cluster describes the cluster once and then answers from the cache.
func (a *Auth) Cluster(ctx context.Context, name string) (Cluster, error) {
	if err := ValidateClusterName(name); err != nil {
		return Cluster{}, err
	}
	a.mu.Lock()
	c, ok := a.clusters[name]
	a.mu.Unlock()
	if ok {
		return c, nil
	}
	out, err := a.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: &name})
	var nf *ekstypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return Cluster{}, fmt.Errorf("describe cluster %s in %s: %w (check the name, AWS_REGION and the account of the credentials)", name, a.region, ErrClusterNotFound)
	}
	if err != nil {
		return Cluster{}, fmt.Errorf("describe cluster %s: %w", name, err)
	}
	c, err = clusterFrom(out.Cluster)
	if err != nil {
		return Cluster{}, fmt.Errorf("describe cluster %s: %w", name, err)
	}
	a.mu.Lock()
	a.clusters[name] = c
	a.mu.Unlock()
	return c, nil
}

func clusterFrom(c *ekstypes.Cluster) (Cluster, error) {
	if c == nil {
		return Cluster{}, errors.New("empty answer")
	}
	out := Cluster{Name: sdkaws.ToString(c.Name), ARN: sdkaws.ToString(c.Arn), Endpoint: sdkaws.ToString(c.Endpoint)}
	if c.Status != ekstypes.ClusterStatusActive && c.Status != ekstypes.ClusterStatusUpdating {
		return Cluster{}, fmt.Errorf("cluster is %s, not ACTIVE", c.Status)
	}
	if !strings.HasPrefix(out.Endpoint, "https://") {
		return Cluster{}, fmt.Errorf("cluster endpoint %q is not https", out.Endpoint)
	}
	if c.CertificateAuthority == nil || sdkaws.ToString(c.CertificateAuthority.Data) == "" {
		return Cluster{}, errors.New("cluster has no certificate authority data")
	}
	ca, err := base64.StdEncoding.DecodeString(sdkaws.ToString(c.CertificateAuthority.Data))
	if err != nil {
		return Cluster{}, fmt.Errorf("certificate authority data: %w", err)
	}
	out.CAData = ca
	parsed, err := arn.Parse(out.ARN)
	if err != nil {
		return Cluster{}, fmt.Errorf("cluster ARN %q: %w", out.ARN, err)
	}
	out.Region, out.Account = parsed.Region, parsed.AccountID
	return out, nil
}

// CallerAccount is the account of the configured credentials (sts:GetCallerIdentity).
func (a *Auth) CallerAccount(ctx context.Context) (string, error) {
	out, err := a.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", fmt.Errorf("get caller identity: %w", err)
	}
	return sdkaws.ToString(out.Account), nil
}

// Token returns a token for the cluster: the cached one while more than
// RefreshBefore of its validity is left, else a new one.
func (a *Auth) Token(ctx context.Context, cluster string) (Token, error) {
	if err := ValidateClusterName(cluster); err != nil {
		return Token{}, err
	}
	now := a.clock.Now()
	a.mu.Lock()
	t, ok := a.tokens[cluster]
	a.mu.Unlock()
	if ok && now.Before(t.Expires.Add(-a.refresh)) {
		return t, nil
	}
	t, err := a.newToken(ctx, cluster)
	if err != nil {
		return Token{}, err
	}
	a.mu.Lock()
	a.tokens[cluster] = t
	a.mu.Unlock()
	return t, nil
}

func (a *Auth) newToken(ctx context.Context, cluster string) (Token, error) {
	creds, err := a.creds.Retrieve(ctx)
	if err != nil {
		return Token{}, fmt.Errorf("token for cluster %s: AWS credentials: %w", cluster, err)
	}
	req, err := a.presign.PresignGetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, func(o *sts.PresignOptions) {
		o.ClientOptions = append(o.ClientOptions, func(so *sts.Options) {
			so.APIOptions = append(so.APIOptions,
				smithyhttp.SetHeaderValue(ClusterIDHeader, cluster),
				// X-Amz-* headers are moved into the presigned query.
				smithyhttp.SetHeaderValue("X-Amz-Expires", presignExpires))
		})
	})
	if err != nil {
		return Token{}, fmt.Errorf("token for cluster %s: presign sts:GetCallerIdentity: %w", cluster, err)
	}
	signedAt, err := signingTime(req.URL)
	if err != nil {
		return Token{}, fmt.Errorf("token for cluster %s: %w", cluster, err)
	}
	expires := signedAt.Add(TokenValidity)
	if creds.CanExpire && creds.Expires.Before(expires) {
		expires = creds.Expires
	}
	return Token{
		Value:    TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(req.URL)),
		SignedAt: signedAt,
		Expires:  expires,
	}, nil
}

// signingTime reads X-Amz-Date of a presigned URL: the validity counts from it.
func signingTime(presigned string) (time.Time, error) {
	u, err := url.Parse(presigned)
	if err != nil {
		return time.Time{}, fmt.Errorf("presigned URL: %w", err)
	}
	t, err := time.Parse("20060102T150405Z", u.Query().Get("X-Amz-Date"))
	if err != nil {
		return time.Time{}, fmt.Errorf("presigned URL has no valid X-Amz-Date: %w", err)
	}
	return t, nil
}

// forget drops the cluster's cached token (the apiserver refused it).
func (a *Auth) forget(cluster string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.tokens, cluster)
}

// RESTConfig is a client-go configuration for the cluster: its endpoint and CA
// from DescribeCluster, and a token source bound to this cluster alone.
func (a *Auth) RESTConfig(ctx context.Context, cluster string) (*rest.Config, error) {
	c, err := a.Cluster(ctx, cluster)
	if err != nil {
		return nil, err
	}
	ts := &tokenSource{auth: a, cluster: c.Name}
	// Fail here, not at the first API call, when no token can be made.
	if _, err := a.Token(ctx, c.Name); err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            c.Endpoint,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		WrapTransport:   transport.ResettableTokenSourceWrapTransport(ts),
	}, nil
}

// tokenSource feeds client-go one cluster's token on every request.
type tokenSource struct {
	auth    *Auth
	cluster string
}

// tokenTimeout bounds making a token (credential refresh may call IMDS or STS):
// client-go's token sources get no context.
const tokenTimeout = 30 * time.Second

func (s *tokenSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	t, err := s.auth.Token(ctx, s.cluster)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: t.Value, TokenType: "Bearer", Expiry: t.Expires}, nil
}

// ResetTokenOlderThan is called after a 401: the next request signs anew.
func (s *tokenSource) ResetTokenOlderThan(time.Time) { s.auth.forget(s.cluster) }

// clockPresigner signs at the injected clock's time, so token expiry follows it.
type clockPresigner struct {
	signer *v4.Signer
	clock  clock.PassiveClock
}

func (p clockPresigner) PresignHTTP(ctx context.Context, credentials sdkaws.Credentials, r *http.Request, payloadHash, service, region string,
	_ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.signer.PresignHTTP(ctx, credentials, r, payloadHash, service, region, p.clock.Now().UTC().Truncate(time.Second), optFns...)
}
