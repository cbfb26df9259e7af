// Package scenario runs real recycles in-process against a simulated environment
// (local control plane + simulated AWS) and measures them: the demo, the end-to-end
// tests and the benchmark all go through it, so they exercise the same wiring as
// `recycler recycle` (engine, state machine, task functions, ports over the wire).
package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	awscloud "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/invariant"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/sim"
)

// Harness holds the live parts wired to one simulated environment.
type Harness struct {
	Env       *sim.Environment
	Tasks     *recycle.Tasks
	Kube      kubernetes.Interface // counted: the recycle's own Kubernetes client
	Provider  *awscloud.Provider   // counted: the recycle's own AWS client
	Observer  *awscloud.Provider   // the sampler's, not counted with the recycle
	KubeCalls *atomic.Int64
	Clock     clock.WithTicker

	fleetOnce sync.Once
	fleet     *rollout.Tasks
	nodes     *kube.NodeCache
}

// New wires task functions to env through the same clients `recycler recycle` uses.
func New(ctx context.Context, env *sim.Environment) (*Harness, error) {
	h := &Harness{Env: env, Clock: clock.RealClock{}, KubeCalls: &atomic.Int64{}}
	rc := rest.CopyConfig(env.Kube.Config)
	rc.QPS, rc.Burst = 50, 100
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingRT{rt, h.KubeCalls} })
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	h.Kube = cs
	if h.Provider, err = providerFor(ctx, env, h.Clock); err != nil {
		return nil, err
	}
	if h.Observer, err = providerFor(ctx, env, h.Clock); err != nil {
		return nil, err
	}
	h.Tasks = &recycle.Tasks{Cloud: h.Provider, Cluster: kube.New(cs, kube.WithClock(h.Clock)), Clock: h.Clock}
	return h, nil
}

func providerFor(ctx context.Context, env *sim.Environment, clk clock.PassiveClock) (*awscloud.Provider, error) {
	p, err := awscloud.New(ctx, awscloud.Options{Clock: clk},
		config.WithRegion(env.Region),
		config.WithBaseEndpoint(env.AWS.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	)
	if err != nil {
		return nil, fmt.Errorf("aws provider for the simulator: %w", err)
	}
	return p, nil
}

// Counting wraps rt so that every request adds one to n (a watch counts once).
func Counting(rt http.RoundTripper, n *atomic.Int64) http.RoundTripper { return countingRT{rt, n} }

type countingRT struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// Outcome is one measured recycle.
type Outcome struct {
	Execution engine.Execution
	History   []engine.Event
	Report    invariant.Report
	AWSCalls  int64            // API operations the recycle made (retries not counted)
	AWSByOp   map[string]int64 // per operation
	KubeCalls int64            // HTTP requests to kube-apiserver (watches count once)
	Elapsed   time.Duration
}

// Executions is where Recycle runs the state machine: the embedded engine
// (*engine.Engine, with h.Tasks' registry) or Step Functions (*stepfn.Client, whose
// Lambda dispatches to the same tasks).
type Executions interface {
	Start(ctx context.Context, in engine.StartInput) (engine.Execution, error)
	Watch(ctx context.Context, id string, fn func(engine.Event) error) error
	Wait(ctx context.Context, id string) (engine.Execution, error)
	History(ctx context.Context, id string) ([]engine.Event, error)
}

// Recycle runs req to its end on eng,
// sampling the invariants throughout. onEvent, if set, sees every history event.
func (h *Harness) Recycle(ctx context.Context, eng Executions, req recycle.Request, name string, onEvent func(engine.Event) error) (Outcome, error) {
	if err := req.Validate(); err != nil {
		return Outcome{}, err
	}
	tgt, err := h.Tasks.Resolve(ctx, recycle.State{Request: req})
	if err != nil {
		return Outcome{}, fmt.Errorf("resolve %s: %w", req.Target(), err)
	}
	w := invariant.Watch{Group: tgt.Group, OldNode: tgt.Node, Namespaces: req.Namespaces, MaxWait: time.Duration(req.MaxWait), ReadyLabels: req.ReadyLabels}
	if req.Selector != "" {
		if w.Selector, err = labels.Parse(req.Selector); err != nil {
			return Outcome{}, err
		}
	}
	sampler, err := invariant.Start(ctx, h.Env.Kube.Client, h.Observer, h.Clock, w)
	if err != nil {
		return Outcome{}, err
	}
	h.Provider.Metrics().Reset()
	h.KubeCalls.Store(0)
	input, err := json.Marshal(recycle.State{Request: req})
	if err != nil {
		return Outcome{}, err
	}
	def, err := recycle.Definition("")
	if err != nil {
		return Outcome{}, err
	}
	start := h.Clock.Now()
	ex, err := eng.Start(ctx, engine.StartInput{
		StateMachine: recycle.StateMachineName, Definition: def, Name: name, Input: input,
		OnAbort: &engine.Rollback{StateMachine: recycle.RollbackStateMachineName, Definition: recycle.RollbackDefinition()},
	})
	if err != nil {
		sampler.Stop(ctx)
		return Outcome{}, fmt.Errorf("start: %w", err)
	}
	watchErr := make(chan error, 1)
	if onEvent != nil {
		go func() { watchErr <- eng.Watch(ctx, ex.ID, onEvent) }()
	} else {
		watchErr <- nil
	}
	fin, err := eng.Wait(ctx, ex.ID)
	elapsed := h.Clock.Since(start)
	if err != nil {
		sampler.Stop(ctx)
		return Outcome{}, fmt.Errorf("wait for %s: %w", ex.ID, err)
	}
	if err := <-watchErr; err != nil {
		sampler.Stop(ctx)
		return Outcome{}, fmt.Errorf("watch %s: %w", ex.ID, err)
	}
	out := Outcome{Execution: fin, Elapsed: elapsed, AWSCalls: h.Provider.Metrics().TotalCalls(), AWSByOp: h.Provider.Metrics().Calls(), KubeCalls: h.KubeCalls.Load()}
	if fin.RollbackID != "" {
		if _, err := eng.Wait(ctx, fin.RollbackID); err != nil {
			sampler.Stop(ctx)
			return out, fmt.Errorf("wait for rollback %s: %w", fin.RollbackID, err)
		}
	}
	if out.History, err = eng.History(ctx, ex.ID); err != nil {
		sampler.Stop(ctx)
		return out, err
	}
	// A selected pod's deadline runs from the drain's start, as the recycle recorded it.
	if st := recycle.StateFromHistory(out.History); st.Drain != nil {
		sampler.DrainStarted(st.Drain.StartedAt)
	}
	out.Report = sampler.Stop(ctx)
	return out, nil
}
