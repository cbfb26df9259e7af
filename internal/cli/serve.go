package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	awsprovider "github.com/recycler/recycler/internal/cloud/aws"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/metrics"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/serve"
	"github.com/recycler/recycler/internal/trigger"
)

type serveFlags struct {
	fleetFlags     // the recycle flags, and the rollout flags of --schedule
	schedule       string
	queueURL       string
	metricsAddr    string
	cooldown       time.Duration
	leaseNamespace string
	leaseName      string
	identity       string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	webhook        string
	snsTopic       string
	blockedAfter   time.Duration
}

func newServeCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run always on: recycle nodes on events (SQS), annotations, with a leader lease and metrics",
		Long: `Run the embedded engine always on, as one active replica of several (a Kubernetes Lease
decides): drive every unfinished recycle, and start recycles from triggers:

  - an SQS queue fed by EventBridge or SNS (--sqs-queue-url): Auto Scaling terminate
    lifecycle hooks (drain, heartbeat, complete with CONTINUE), CloudWatch alarms in ALARM
    whose dimensions name an instance or a group, AWS Health scheduled changes and EC2
    rebalance recommendations for an instance;
  - the node annotation recycler.io/recycle=requested (or a JSON object of options).

The recycle flags are the defaults of every recycle a trigger starts. SIGTERM stops taking
work, leaves running recycles durable, and releases the lease; a standby takes over within
--lease-duration and resumes them. /metrics, /healthz and /readyz are served on --metrics-addr.`,
		Example: `  recycler serve --sqs-queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/recycler \
      --metrics-addr :9090 --state /var/lib/recycler/recycler.db \
      --selector app=airflow-worker --namespace airflow --max-wait 20h`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.fromEnv = fromEnvironment(cmd.Flags())
			return runServe(cmd.Context(), f)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.StringVar(&f.schedule, "schedule", "", "start a rollout (the --group/--nodes, --drifted/--older-than/--all and rollout flags) at these times: cron, e.g. \"CRON_TZ=Europe/Berlin 0 2 * * Sat\"")
	fs.StringVar(&f.queueURL, "sqs-queue-url", "", "SQS queue of trigger events (EventBridge rule or SNS subscription targets); empty: annotations only")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9090", "HOST:PORT for /metrics, /healthz and /readyz")
	fs.DurationVar(&f.cooldown, "cooldown", 30*time.Minute, "after an event started a recycle of a node, further alarm/health/rebalance events for it start none for this long")
	fs.StringVar(&f.leaseNamespace, "lease-namespace", inClusterNamespace(), "namespace of the leader Lease (in a pod: its own namespace)")
	fs.StringVar(&f.leaseName, "lease-name", "recycler", "name of the leader Lease")
	fs.StringVar(&f.identity, "identity", defaultIdentity(), "this replica's identity in the Lease (default: the pod's hostname)")
	fs.DurationVar(&f.leaseDuration, "lease-duration", 15*time.Second, "a standby takes over this long after the leader stopped renewing")
	fs.DurationVar(&f.renewDeadline, "lease-renew-deadline", 10*time.Second, "the leader stops acting when it could not renew for this long")
	fs.DurationVar(&f.retryPeriod, "lease-retry-period", 2*time.Second, "how often candidates try to acquire or renew the lease")
	fs.StringVar(&f.webhook, "notify-webhook", "", "URL that receives Slack-compatible JSON ({\"text\": …}) when a recycle starts, is blocked, succeeds, rolls back or needs a person")
	fs.StringVar(&f.snsTopic, "notify-sns-topic", "", "SNS topic ARN that receives the same notifications (subject for people, message JSON)")
	fs.DurationVar(&f.blockedAfter, "notify-blocked-after", 30*time.Minute, "notify once when a recycle stays in one step (a drain held by a budget, a replacement that does not come) longer than this; 0: never")
	return cmd
}

func inClusterNamespace() string {
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

func defaultIdentity() string {
	h, err := os.Hostname()
	if err != nil {
		return fmt.Sprintf("recycler-%d", os.Getpid())
	}
	return h
}

// validate checks every serve flag at once, before anything is started.
func (f *serveFlags) validate() (recycle.Request, *trigger.Cron, rollout.Options, error) {
	cron, ro, errs := f.validateSchedule()
	def := f.request("placeholder")
	if err := f.check(); err != nil && f.schedule == "" { // else the rollout's options said so
		errs = append(errs, err)
	}
	if err := def.Validate(); err != nil {
		errs = append(errs, err)
	}
	def.Node = ""
	if f.queueURL != "" {
		if u, err := url.Parse(f.queueURL); err != nil || u.Host == "" || len(strings.Split(strings.Trim(u.Path, "/"), "/")) != 2 {
			errs = append(errs, fmt.Errorf("--sqs-queue-url %q is not a queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/recycler-events", f.queueURL))
		}
	}
	if _, _, err := net.SplitHostPort(f.metricsAddr); err != nil {
		errs = append(errs, fmt.Errorf("--metrics-addr %q: want HOST:PORT such as :9090 or 127.0.0.1:9090: %w", f.metricsAddr, err))
	}
	if f.cooldown < 0 {
		errs = append(errs, fmt.Errorf("--cooldown must not be negative, got %s", f.cooldown))
	}
	errs = append(errs, f.validateLease()...)
	errs = append(errs, f.validateNotify()...)
	if len(errs) > 0 {
		if len(f.fromEnv) > 0 {
			errs = append(errs, fmt.Errorf("(flags not given on the command line came from the environment: %s)", strings.Join(f.fromEnv, " ")))
		}
		return def, nil, ro, usageError{errors.Join(errs...)}
	}
	return def, cron, ro, nil
}

// snsTopicARN: arn:PARTITION:sns:REGION:ACCOUNT:NAME (a standard topic).
var snsTopicARN = regexp.MustCompile(`^arn:aws[a-z-]*:sns:([a-z0-9-]+):[0-9]{12}:[A-Za-z0-9_-]{1,256}$`)

// validateNotify checks the notification channels.
func (f *serveFlags) validateNotify() []error {
	var errs []error
	if f.webhook != "" {
		if u, err := url.Parse(f.webhook); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--notify-webhook %q is not an http(s) URL", f.webhook))
		}
	}
	if f.snsTopic != "" && !snsTopicARN.MatchString(f.snsTopic) {
		errs = append(errs, fmt.Errorf("--notify-sns-topic %q is not a topic ARN such as arn:aws:sns:eu-west-1:123456789012:recycler", f.snsTopic))
	}
	if f.blockedAfter < 0 {
		errs = append(errs, fmt.Errorf("--notify-blocked-after must not be negative (0 turns it off), got %s", f.blockedAfter))
	}
	return errs
}

// notifiers builds the notification channels the flags name (nil: none).
func (f *serveFlags) notifiers(awsCfg aws.Config, log *slog.Logger, m *metrics.Metrics) serve.Notifier {
	var ns serve.Notifiers
	if f.webhook != "" {
		ns = append(ns, &serve.Webhook{URL: f.webhook, Client: &http.Client{Timeout: 10 * time.Second}, Log: log, Metrics: m})
	}
	if f.snsTopic != "" {
		region := snsTopicARN.FindStringSubmatch(f.snsTopic)[1] // the topic's region, whatever the default
		client := sns.NewFromConfig(awsCfg, func(o *sns.Options) { o.Region = region })
		ns = append(ns, &serve.SNS{Client: client, TopicARN: f.snsTopic, Log: log, Metrics: m})
	}
	if len(ns) == 0 {
		return nil
	}
	return ns
}

// validateSchedule reads --schedule and the rollout it starts.
func (f *serveFlags) validateSchedule() (*trigger.Cron, rollout.Options, []error) {
	var errs []error
	var cron *trigger.Cron
	var ro rollout.Options
	fleet := len(f.groups) > 0 || len(f.groupTags) > 0 || f.nodes != "" || f.drifted || f.all || f.olderThan != ""
	switch {
	case f.schedule != "":
		var err error
		if cron, err = trigger.ParseCron(f.schedule); err != nil {
			errs = append(errs, fmt.Errorf("--schedule: %w", err))
		}
		if ro, err = f.options(); err != nil {
			errs = append(errs, fmt.Errorf("--schedule's rollout: %w", err))
		}
	case fleet:
		errs = append(errs, errors.New("--group, --group-tag, --nodes, --drifted, --older-than and --all choose what a scheduled rollout replaces: give --schedule too"))
	}
	return cron, ro, errs
}

// validateLease checks the election flags.
func (f *serveFlags) validateLease() []error {
	var errs []error
	for flag, v := range map[string]string{"--lease-namespace": f.leaseNamespace, "--lease-name": f.leaseName} {
		if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %s", flag, v, strings.Join(msgs, "; ")))
		}
	}
	if f.identity == "" {
		errs = append(errs, errors.New("--identity is empty: give each replica its own (the pod name)"))
	}
	// client-go's own rules, said in our words before it panics on them.
	if !(f.leaseDuration > f.renewDeadline && f.renewDeadline > time.Duration(float64(f.retryPeriod)*1.2) && f.retryPeriod > 0) {
		errs = append(errs, fmt.Errorf("lease timings: want --lease-duration (%s) > --lease-renew-deadline (%s) > 1.2 × --lease-retry-period (%s) > 0",
			f.leaseDuration, f.renewDeadline, f.retryPeriod))
	}
	return errs
}

func runServe(ctx context.Context, f *serveFlags) error {
	defaults, cron, ro, err := f.validate()
	if err != nil {
		return err
	}
	log := loggingFrom(ctx).log.With("identity", f.identity)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	m := metrics.New()
	m.Kubernetes()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("aws configuration: %w", err)
	}
	cs, err := f.kubeClient(ctx, awsCfg)
	if err != nil {
		return err
	}
	clk := clock.RealClock{}
	prov, err := awsprovider.NewFromConfig(awsCfg, awsprovider.Options{Clock: clk})
	if err != nil {
		return fmt.Errorf("aws: %w", err)
	}
	m.AWS(prov.Metrics().Each)
	tasks := &recycle.Tasks{Cloud: prov, Cluster: kube.New(cs, kube.WithClock(clk)), Clock: clk}
	ready := &metrics.Ready{}

	ln, err := net.Listen("tcp", f.metricsAddr)
	if err != nil {
		return usageError{fmt.Errorf("--metrics-addr %s: %w", f.metricsAddr, err)}
	}
	srv := &http.Server{Handler: m.Handler(ready.Err), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())

	if err := os.MkdirAll(filepath.Dir(f.statePath), 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	opts := serve.Options{
		QueueURL: f.queueURL, Defaults: defaults, Cooldown: f.cooldown, Kube: cs, Tasks: tasks,
		OpenEngine: func(ctx context.Context, onEvent func(engine.Event)) (*engine.Engine, error) {
			// The engine drives every unfinished execution of the file no live process
			// drives (AdoptAll), rollouts too.
			fleet := fleetTasks(tasks)
			eng, err := engine.Open(ctx, engine.Options{Path: f.statePath, Registry: fleet.Registry(), Workers: engineWorkers, Logger: log, OnEvent: onEvent, AdoptAll: true})
			if err == nil {
				fleet.SetExecutions(eng)
			}
			return eng, err
		},
		Lease: serve.Lease{Namespace: f.leaseNamespace, Name: f.leaseName, Identity: f.identity,
			Duration: f.leaseDuration, RenewDeadline: f.renewDeadline, RetryPeriod: f.retryPeriod},
		Metrics: m, Ready: ready, Clock: clk, Log: log,
	}
	if f.queueURL != "" {
		opts.Queue = sqs.NewFromConfig(awsCfg)
	}
	opts.Notify, opts.BlockedAfter = f.notifiers(awsCfg, log, m), f.blockedAfter
	if cron != nil {
		fleet := fleetTasks(tasks)
		opts.Schedule = &serve.Schedule{Cron: cron, Rollout: func(ctx context.Context, at time.Time) (engine.StartInput, string, error) {
			sel, err := rollout.Select(ctx, fleet.Cloud, fleet.Cluster, ro.Selection, at)
			if err != nil {
				return engine.StartInput{}, "", fmt.Errorf("select nodes: %w", err)
			}
			p, err := rollout.NewPlan(sel, ro)
			if err != nil {
				return engine.StartInput{}, "", err
			}
			if p.Candidates() == 0 {
				return engine.StartInput{}, fmt.Sprintf("nothing to replace (%d node(s) skipped)", len(p.Skipped)), nil
			}
			in, err := rollout.StartInput(serve.ScheduledName(at), p.Input(ro.Request))
			return in, "", err
		}}
	}
	return serve.Run(ctx, opts)
}
