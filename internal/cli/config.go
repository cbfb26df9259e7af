package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	awsprovider "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
)

// envPrefix: every flag can default from RECYCLER_<FLAG_NAME> (dashes → underscores).
const envPrefix = "RECYCLER_"

// applyEnvDefaults sets each flag the user did not give from its environment
// variable, so a deployment can configure recycler without a wrapper script.
func applyEnvDefaults(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Errorf("environment variable %s=%q: %w", name, v, e)}
				return
			}
			_ = fs.SetAnnotation(f.Name, envAnnotation, []string{name + "=" + v})
		}
	})
	return err
}

// envAnnotation marks a flag whose value came from its environment variable.
const envAnnotation = "recycler/from-env"

// fromEnvironment lists NAME=value for every flag set from the environment, so that
// an error about a flag the user never typed can say where its value came from.
func fromEnvironment(fs *pflag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *pflag.Flag) { out = append(out, f.Annotations[envAnnotation]...) })
	return out
}

// stateFlags are shared by every command that touches executions.
type stateFlags struct {
	engineFlags
	statePath  string
	kubeconfig string
	cluster    string
}

func (s *stateFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.statePath, "state", defaultStatePath(), "SQLite file of the embedded engine (executions, history)")
	fs.StringVar(&s.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	s.engineFlags.register(fs)
	fs.StringVar(&s.cluster, "cluster", "", "EKS cluster name: connect with eks:DescribeCluster and an EKS token from the AWS credentials (no kubeconfig, no aws CLI)")
}

func defaultStatePath() string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "state")
		} else {
			dir = os.TempDir()
		}
	}
	return filepath.Join(dir, "recycler", "recycler.db")
}

// openEngine opens the state file. With tasks it drives executions — only the ones
// this command starts or adopts (docs/operations.md); without, it only reads: passive,
// nothing runs, nothing is created or upgraded.
func (s *stateFlags) openEngine(ctx context.Context, reg func() *recycle.Tasks, log *slog.Logger) (*engine.Engine, error) {
	readOnly := reg == nil
	if _, err := os.Stat(s.statePath); readOnly && errors.Is(err, os.ErrNotExist) {
		return nil, usageError{fmt.Errorf("no execution is recorded in %s: no recycle has run with this state file (pass --state to read another)", s.statePath)}
	}
	if err := os.MkdirAll(filepath.Dir(s.statePath), 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	opts := engine.Options{Path: s.statePath, Logger: log, Passive: readOnly}
	var fleet *rollout.Tasks
	if reg != nil {
		// Every runner of the file can run rollouts too (a rollout it starts or adopts).
		fleet = fleetTasks(reg())
		opts.Registry, opts.Workers = fleet.Registry(), engineWorkers
	}
	eng, err := engine.Open(ctx, opts)
	if fleet != nil && err == nil {
		fleet.SetExecutions(eng)
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", s.statePath, err)
	}
	return eng, nil
}

// buildTasks connects to the cluster and to AWS (region and endpoints from the SDK's
// standard configuration: AWS_REGION, AWS_ENDPOINT_URL, profiles, …).
func (s *stateFlags) buildTasks(ctx context.Context) (*recycle.Tasks, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws: load AWS configuration: %w", err)
	}
	cs, err := s.kubeClient(ctx, awsCfg)
	if err != nil {
		return nil, err
	}
	clk := clock.RealClock{}
	prov, err := awsprovider.NewFromConfig(awsCfg, awsprovider.Options{Clock: clk})
	if err != nil {
		return nil, fmt.Errorf("aws: %w", err)
	}
	return &recycle.Tasks{Cloud: prov, Cluster: kube.New(cs, kube.WithClock(clk)), Clock: clk}, nil
}

// kubeClient connects to the cluster (kubeconfig, or EKS auth from awsCfg).
func (s *stateFlags) kubeClient(ctx context.Context, awsCfg aws.Config) (kubernetes.Interface, error) {
	rc, err := s.kubeConfig(ctx, awsCfg)
	if err != nil {
		return nil, err
	}
	// Drains issue many evictions; client-go's default 5 QPS would dominate a recycle's time.
	// A rollout runs up to hundreds of recycles at once (~20 requests each); the API
	// server's priority and fairness, not a client-side bucket, should pace them.
	rc.QPS, rc.Burst = 300, 600
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
