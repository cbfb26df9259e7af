// Package metrics is what `recycler serve` exports to Prometheus: executions by
// step and outcome, step durations, pods, PDB blocks, API calls, SQS messages,
// leader status. It reads the engine's history events (Observe), so the numbers
// are those of the durable record, whichever engine process wrote them.
package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientmetrics "k8s.io/client-go/tools/metrics"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// Metrics holds the collectors on a registry of its own (no global state but the
// client-go adapter, which client-go allows once per process).
type Metrics struct {
	Registry *prometheus.Registry

	started    *prometheus.CounterVec   // trigger
	finished   *prometheus.CounterVec   // outcome
	inStep     *prometheus.GaugeVec     // step
	stepDur    *prometheus.HistogramVec // step
	podsWaited prometheus.Gauge
	evicted    prometheus.Counter
	forced     prometheus.Counter
	blocked    *prometheus.GaugeVec // pdb
	sqs        *prometheus.CounterVec
	leader     prometheus.Gauge
	kubeReqs   *prometheus.CounterVec // verb, code
	kubeWait   prometheus.Histogram   // client-side rate limiter
	notifySent *prometheus.CounterVec // channel, outcome

	mu    sync.Mutex
	execs map[string]*execView
}

// execView is what Observe keeps per running execution.
type execView struct {
	step      string
	entered   time.Time
	evicted   int
	forced    int
	waited    int
	blockedBy map[string]int
}

// New builds the collectors and registers them (plus Go and process collectors).
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), execs: map[string]*execView{}}
	f := func(c prometheus.Collector) { m.Registry.MustRegister(c) }
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recycler_executions_started_total", Help: "Recycles started, by trigger (lifecycle-terminate, alarm, scheduled-change, rebalance, annotation, schedule)."}, []string{"trigger"})
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recycler_executions_finished_total", Help: "Recycle and rollback executions finished, by outcome (succeeded, failed, aborted, timed_out)."}, []string{"state_machine", "outcome"})
	m.inStep = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recycler_executions_running", Help: "Running executions by the state they are in."}, []string{"step"})
	m.stepDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "recycler_step_duration_seconds", Help: "Time spent in each top-level state of the recycle workflow.",
		Buckets: []float64{0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}}, []string{"step"})
	m.podsWaited = prometheus.NewGauge(prometheus.GaugeOpts{Name: "recycler_pods_waited", Help: "Selected pods being waited for on nodes being drained."})
	m.evicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "recycler_pods_evicted_total", Help: "Pods evicted (Eviction API) by drains."})
	m.forced = prometheus.NewCounter(prometheus.CounterOpts{Name: "recycler_pods_forced_total", Help: "Selected pods deleted past --max-wait with --on-timeout force."})
	m.blocked = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "recycler_evictions_blocked", Help: "Pods whose eviction a PodDisruptionBudget refuses right now, by PDB (namespace/name)."}, []string{"pdb"})
	m.sqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recycler_sqs_messages_total", Help: "SQS messages handled, by outcome (started, duplicate, cooldown, ignored, malformed, failed)."}, []string{"outcome"})
	m.leader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "recycler_leader", Help: "1 while this process holds the lease and acts, else 0."})
	m.kubeReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recycler_kubernetes_requests_total", Help: "Kubernetes API requests, by verb and HTTP code (429 = throttled by the API server)."}, []string{"verb", "code"})
	m.kubeWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "recycler_kubernetes_client_throttle_seconds", Help: "Time requests waited in client-go's rate limiter.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)})
	m.notifySent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "recycler_notifications_total", Help: "Notifications sent, by channel and outcome."}, []string{"channel", "outcome"})
	for _, c := range []prometheus.Collector{m.started, m.finished, m.inStep, m.stepDur, m.podsWaited, m.evicted, m.forced, m.blocked,
		m.sqs, m.leader, m.kubeReqs, m.kubeWait, m.notifySent, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// AWS exports the AWS provider's per-operation counts (calls the code made, and
// attempts sent: attempts − calls are retries, mostly throttling).
func (m *Metrics) AWS(each func(fn func(op string, calls, attempts int64))) {
	m.Registry.MustRegister(&awsCollector{each: each,
		calls:    prometheus.NewDesc("recycler_aws_calls_total", "AWS API operations called, by operation.", []string{"operation"}, nil),
		attempts: prometheus.NewDesc("recycler_aws_attempts_total", "AWS API requests sent, retries included (attempts - calls = retries after throttling or errors).", []string{"operation"}, nil)})
}

type awsCollector struct {
	each            func(fn func(op string, calls, attempts int64))
	calls, attempts *prometheus.Desc
}

func (c *awsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.calls; ch <- c.attempts }
func (c *awsCollector) Collect(ch chan<- prometheus.Metric) {
	c.each(func(op string, calls, attempts int64) {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(calls), op)
		ch <- prometheus.MustNewConstMetric(c.attempts, prometheus.CounterValue, float64(attempts), op)
	})
}

var kubeOnce sync.Once

// Kubernetes routes client-go's request metrics to m. client-go accepts one
// registration per process; the first Metrics to call this gets them.
func (m *Metrics) Kubernetes() {
	kubeOnce.Do(func() {
		clientmetrics.Register(clientmetrics.RegisterOpts{
			RequestResult:      kubeResult{m},
			RateLimiterLatency: kubeLatency{m},
		})
	})
}

type kubeResult struct{ m *Metrics }

func (k kubeResult) Increment(_ context.Context, code, method, _ string) {
	k.m.kubeReqs.WithLabelValues(strings.ToUpper(method), code).Inc()
}

type kubeLatency struct{ m *Metrics }

func (k kubeLatency) Observe(_ context.Context, _ string, _ url.URL, d time.Duration) {
	k.m.kubeWait.Observe(d.Seconds())
}

// SQS counts one message handled with outcome.
func (m *Metrics) SQS(outcome string) { m.sqs.WithLabelValues(outcome).Inc() }

// Started counts a recycle a trigger started.
func (m *Metrics) Started(trigger string) { m.started.WithLabelValues(trigger).Inc() }

// Leader sets the leader gauge.
func (m *Metrics) Leader(on bool) {
	if on {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// Notification counts one notification.
func (m *Metrics) Notification(channel, outcome string) {
	m.notifySent.WithLabelValues(channel, outcome).Inc()
}

// Observe reads one committed history event (the engine's OnEvent).
func (m *Metrics) Observe(machine string, ev engine.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.execs[ev.ExecutionID]
	if v == nil {
		v = &execView{blockedBy: map[string]int{}}
		m.execs[ev.ExecutionID] = v
	}
	switch {
	case strings.HasSuffix(ev.Type, "StateEntered"):
		var d struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(ev.Details, &d)
		if d.Name == "" || strings.HasPrefix(d.Name, "Wait") || strings.HasSuffix(d.Name, "?") {
			return // loop helpers are part of the step they serve
		}
		if v.step != "" && v.step != d.Name {
			m.leaveLocked(v, ev.Timestamp)
		}
		if v.step != d.Name {
			v.step, v.entered = d.Name, ev.Timestamp
			m.inStep.WithLabelValues(d.Name).Inc()
		}
	case ev.Type == "TaskSucceeded" && v.step == recycle.TaskDrain:
		var d struct {
			Output json.RawMessage `json:"output"`
		}
		_ = json.Unmarshal(ev.Details, &d)
		var out recycle.DrainStatus
		if json.Unmarshal(d.Output, &out) != nil {
			return
		}
		if n := len(out.Evicted); n > v.evicted {
			m.evicted.Add(float64(n - v.evicted))
			v.evicted = n
		}
		if out.ForcedPods > v.forced {
			m.forced.Add(float64(out.ForcedPods - v.forced))
			v.forced = out.ForcedPods
		}
		m.podsWaited.Add(float64(len(out.Selected) - v.waited))
		v.waited = len(out.Selected)
		now := map[string]int{}
		for _, b := range out.Blocked {
			ns, _, _ := strings.Cut(b.Pod, "/") // a budget is in its pod's namespace
			for _, p := range b.PDBs {
				now[ns+"/"+p]++
			}
		}
		m.setBlockedLocked(v, now)
	case strings.HasPrefix(ev.Type, "Execution") && ev.Type != "ExecutionStarted":
		m.leaveLocked(v, ev.Timestamp)
		m.podsWaited.Sub(float64(v.waited))
		m.setBlockedLocked(v, map[string]int{})
		outcome := strings.ToLower(strings.TrimPrefix(ev.Type, "Execution"))
		if outcome == "timedout" {
			outcome = "timed_out"
		}
		m.finished.WithLabelValues(machine, outcome).Inc()
		delete(m.execs, ev.ExecutionID)
	}
}

func (m *Metrics) leaveLocked(v *execView, at time.Time) {
	if v.step == "" {
		return
	}
	m.inStep.WithLabelValues(v.step).Dec()
	m.stepDur.WithLabelValues(v.step).Observe(at.Sub(v.entered).Seconds())
	v.step = ""
}

func (m *Metrics) setBlockedLocked(v *execView, now map[string]int) {
	for pdb, n := range v.blockedBy {
		m.blocked.WithLabelValues(pdb).Sub(float64(n))
	}
	for pdb, n := range now {
		m.blocked.WithLabelValues(pdb).Add(float64(n))
	}
	v.blockedBy = now
}

// Handler serves /metrics, /healthz (the process runs) and /readyz (ready() says
// whether this process can act or stand by correctly).
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Ready is a settable readiness flag with a reason.
type Ready struct{ v atomic.Value }

// Set records the current readiness (nil = ready).
func (r *Ready) Set(err error) { r.v.Store(errBox{err}) }

// Err is the last error Set (an error until the first Set).
func (r *Ready) Err() error {
	b, ok := r.v.Load().(errBox)
	if !ok {
		return errNotStarted
	}
	return b.err
}

type errBox struct{ err error }

var errNotStarted = &notStarted{}

type notStarted struct{}

func (*notStarted) Error() string { return "starting" }
