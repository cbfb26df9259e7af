// Package aws implements the cloud port (internal/cloud) with aws-sdk-go-v2: Auto
// Scaling for groups, standby, detach and lifecycle hooks, EC2 for instances, launch
// templates and tags.
//
// Configuration comes from the SDK's default chain (environment, shared config,
// IMDS): the region is never derived from an availability zone name, and endpoints
// follow AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_AUTO_SCALING / AWS_ENDPOINT_URL_EC2, so
// the same code talks to AWS, to the simulator (internal/sim) or to any compatible
// endpoint.
package aws

import (
	"context"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/cloud"
)

// DefaultMaxAttempts is the retryer's attempt limit per call. Auto Scaling shares one
// rate bucket per account and region, so a storm needs more than the SDK's 3.
const DefaultMaxAttempts = 8

// Options tune the provider. The zero value is usable.
type Options struct {
	// Metrics receives API call counts; nil creates one (see Provider.Metrics).
	Metrics *Metrics
	// Clock stamps recycler/retired-at and SurgeRecord.StartedAt; nil is the real clock.
	Clock clock.PassiveClock
	// MaxAttempts per API call (retries included); 0 means DefaultMaxAttempts.
	MaxAttempts int
	// Backoff overrides the retryer's backoff (tests shorten it); nil keeps the SDK's
	// exponential jitter backoff.
	Backoff retry.BackoffDelayer
}

// Provider is the AWS implementation of cloud.Provider.
type Provider struct {
	asg     *autoscaling.Client
	ec2     *ec2.Client
	metrics *Metrics
	clock   clock.PassiveClock
}

var _ cloud.Provider = (*Provider)(nil)

// New loads the SDK's default configuration (env, shared config, IMDS) and builds a
// provider. extra are passed to config.LoadDefaultConfig.
func New(ctx context.Context, opts Options, extra ...func(*config.LoadOptions) error) (*Provider, error) {
	cfg, err := config.LoadDefaultConfig(ctx, extra...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	return NewFromConfig(cfg, opts)
}

// NewFromConfig builds a provider from an SDK configuration. Its retryer is replaced
// by the SDK's adaptive retryer (client-side rate limiting after throttles) that also
// retries ResourceContention and ScalingActivityInProgress.
func NewFromConfig(cfg sdkaws.Config, opts Options) (*Provider, error) {
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region configured: set AWS_REGION (or a region in the AWS profile): %w", cloud.ErrValidation)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	cfg = cfg.Copy()
	cfg.Retryer = func() sdkaws.Retryer {
		return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
			o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
				so.MaxAttempts = opts.MaxAttempts
				so.Retryables = append(so.Retryables, retry.RetryableErrorCode{Codes: retryableCodes})
				if opts.Backoff != nil {
					so.Backoff = opts.Backoff
				}
			})
		})
	}
	cfg.APIOptions = append(cfg.APIOptions, opts.Metrics.install)
	return &Provider{
		asg:     autoscaling.NewFromConfig(cfg),
		ec2:     ec2.NewFromConfig(cfg),
		metrics: opts.Metrics,
		clock:   opts.Clock,
	}, nil
}

// Metrics returns the provider's API call counter.
func (p *Provider) Metrics() *Metrics { return p.metrics }
