// Package lambda is Recycler's AWS Lambda function: the one Task resource of the
// state machine on Step Functions. Every invocation carries {"task", "execution",
// "state"} and is handed to recycle.Tasks.Invoke — the dispatcher the embedded
// engine calls — so both engines run the same task functions. Errors reach Step
// Functions with the ASL names the state machine's Retry/Catch match
// (errorType "Recycler.Transient", …). See docs/lambda.md.
package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	awslambda "github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
	awsprovider "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/eksauth"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
)

// Error names the function itself answers with (task errors keep their own).
const (
	// ErrBadInput: the payload is not a task invocation; nothing was done.
	ErrBadInput = recycle.ErrBadInput
	// ErrTransient: the cluster could not be reached (DescribeCluster, a token);
	// the state machine retries it like any transient error.
	ErrTransient = recycle.ErrTransient
	// ErrPrecondition: the function's cluster does not exist in its account and region.
	ErrPrecondition = recycle.ErrPrecondition
)

// ClusterEnv names the function's environment variable holding the EKS cluster.
const ClusterEnv = "RECYCLER_CLUSTER"

// Config is the function's configuration, read from its environment once at
// start and validated before the first invocation.
type Config struct {
	Cluster string
}

// ConfigFromEnv reads and validates the configuration.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{Cluster: getenv(ClusterEnv)}
	if c.Cluster == "" {
		return c, fmt.Errorf("%s is not set: the function needs the name of the EKS cluster whose nodes it recycles", ClusterEnv)
	}
	if err := eksauth.ValidateClusterName(c.Cluster); err != nil {
		return c, fmt.Errorf("%s: %w", ClusterEnv, err)
	}
	return c, nil
}

// Function answers invocations. AWS clients are built once per container
// (New); the Kubernetes client is built on the first invocation that needs it,
// from DescribeCluster and a per-cluster token source, and kept (its token is
// renewed per request by eksauth).
type Function struct {
	cfg   Config
	log   *slog.Logger
	clock clock.WithTicker
	cloud recycle.Cloud
	auth  *eksauth.Auth

	mu    sync.Mutex
	tasks *recycle.Tasks
}

// New builds a Function from an SDK configuration (no network calls).
func New(cfg Config, awsCfg aws.Config, log *slog.Logger) (*Function, error) {
	clk := clock.RealClock{}
	prov, err := awsprovider.NewFromConfig(awsCfg, awsprovider.Options{Clock: clk})
	if err != nil {
		return nil, fmt.Errorf("aws: %w", err)
	}
	auth, err := eksauth.New(awsCfg, eksauth.Options{Clock: clk})
	if err != nil {
		return nil, fmt.Errorf("eks auth: %w", err)
	}
	return &Function{cfg: cfg, log: log, clock: clk, cloud: prov, auth: auth}, nil
}

// connect returns the task functions over the cluster, building the
// Kubernetes client once.
func (f *Function) connect(ctx context.Context) (*recycle.Tasks, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tasks != nil {
		return f.tasks, nil
	}
	rc, err := f.auth.RESTConfig(ctx, f.cfg.Cluster)
	if err != nil {
		return nil, err
	}
	// Drains issue many evictions; client-go's default 5 QPS would dominate.
	rc.QPS, rc.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for cluster %s: %w", f.cfg.Cluster, err)
	}
	f.tasks = &recycle.Tasks{Cloud: f.cloud, Cluster: kube.New(cs, kube.WithClock(f.clock)), Clock: f.clock}
	return f.tasks, nil
}

// envelope is what the function reads of a payload before handing it on: the
// names for the log lines (recycle.Tasks.Invoke validates the whole payload).
type envelope struct {
	Task      string `json:"task"`
	Execution string `json:"execution"`
	State     struct {
		Request struct {
			Node       string `json:"node"`
			InstanceID string `json:"instanceId"`
		} `json:"request"`
		Target *struct {
			Node string `json:"node"`
		} `json:"target"`
	} `json:"state"`
}

func (e envelope) node() string {
	switch {
	case e.State.Target != nil && e.State.Target.Node != "":
		return e.State.Target.Node
	case e.State.Request.Node != "":
		return e.State.Request.Node
	}
	return e.State.Request.InstanceID
}

// Invoke implements the aws-lambda-go Handler: the raw payload in, the task's
// result or a typed error out.
func (f *Function) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	start := time.Now()
	var env envelope
	decodeErr := json.Unmarshal(payload, &env)
	log := f.log.With("execution", env.Execution, "task", env.Task, "node", env.node())
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		log = log.With("request_id", lc.AwsRequestID)
	}
	// client-go logs through klog: the same JSON lines, the same keys. One
	// invocation at a time per container, so this is this invocation's logger.
	klog.SetSlogLogger(log)

	fail := func(name string, err error) ([]byte, error) {
		log.Error("task failed", "error_name", name, "err", err, "duration_ms", time.Since(start).Milliseconds())
		// By value: aws-lambda-go then reports Type as errorType exactly (for any
		// other error, or a pointer to this one, it reports the Go type's name).
		return nil, messages.InvokeResponse_Error{Type: name, Message: err.Error()}
	}
	switch {
	case decodeErr != nil:
		return fail(ErrBadInput, fmt.Errorf("payload is not a task invocation: %w (want {\"task\": NAME, \"execution\": ID, \"state\": {...}})", decodeErr))
	case env.Task == "" || env.Execution == "":
		return fail(ErrBadInput, errors.New("payload names no task or no execution (want {\"task\": NAME, \"execution\": ID, \"state\": {...}})"))
	}
	tasks, err := f.connect(ctx)
	if errors.Is(err, eksauth.ErrClusterNotFound) {
		return fail(ErrPrecondition, fmt.Errorf("connect to cluster %s: %w", f.cfg.Cluster, err))
	}
	if err != nil {
		return fail(ErrTransient, fmt.Errorf("connect to cluster %s: %w", f.cfg.Cluster, err))
	}
	out, err := tasks.Invoke(ctx, payload)
	if err != nil {
		return fail(asl.ErrorName(err), err)
	}
	log.Info("task done", "duration_ms", time.Since(start).Milliseconds())
	return out, nil
}

// Main runs the function: configuration from the environment, AWS from the
// SDK's default chain (the Lambda role's credentials), logs as JSON on stdout.
// It returns only when the configuration is unusable (exit code 1).
func Main(ctx context.Context, getenv func(string) string, stdout io.Writer) int {
	log := slog.New(slog.NewJSONHandler(stdout, nil)).With("function", getenv("AWS_LAMBDA_FUNCTION_NAME"))
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		log.Error("bad configuration", "err", err)
		return 1
	}
	log = log.With("cluster", cfg.Cluster)
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		log.Error("load AWS configuration", "err", err)
		return 1
	}
	f, err := New(cfg, awsCfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	awslambda.StartWithOptions(f, awslambda.WithContext(ctx))
	return 0
}
