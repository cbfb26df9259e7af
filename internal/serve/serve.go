// Package serve is the always-on mode: one active process (a Kubernetes Lease
// decides) runs the embedded engine, drives every unfinished execution, and turns
// triggers — SQS messages, node annotations — into recycles. docs/serve.md has the
// model: leader, triggers, acknowledgement, heartbeats.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/metrics"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/trigger"
)

// Queue is what serve needs from SQS (*sqs.Client implements it).
type Queue interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// Lease configures the leader election (client-go leaderelection on a
// coordination.k8s.io Lease).
type Lease struct {
	Namespace, Name string
	Identity        string        // this process (pod name); must differ between replicas
	Duration        time.Duration // a standby takes over this long after the leader's last renewal
	RenewDeadline   time.Duration
	RetryPeriod     time.Duration
}

// Options configure Run; validated by the CLI.
type Options struct {
	QueueURL string // "" = no SQS trigger
	Queue    Queue
	// Defaults are the recycle options of every recycle a trigger starts (the
	// `recycler recycle` flags of `recycler serve`).
	Defaults recycle.Request
	// Cooldown: after an event started a recycle of a node, further alarm/health/
	// rebalance events for that node are acknowledged without a second recycle.
	Cooldown time.Duration
	Kube     kubernetes.Interface
	Tasks    *recycle.Tasks
	// OpenEngine opens the embedded engine (non-passive: it drives every unfinished
	// execution) with onEvent as its OnEvent hook.
	OpenEngine func(ctx context.Context, onEvent func(engine.Event)) (*engine.Engine, error)
	Lease      Lease
	Metrics    *metrics.Metrics
	Ready      *metrics.Ready
	Clock      clock.WithTicker
	Log        *slog.Logger
	Notify     Notifier // nil = no notifications
	// BlockedAfter: a recycle that stays in one step longer than this is notified
	// about once per step (NotifyBlocked); 0 = never.
	BlockedAfter time.Duration
	Schedule     *Schedule // nil = no scheduled rollouts
	// OnLeading is called with true once this process acts (engine open, triggers
	// running) and with false when it stopped acting; tests and logs use it.
	OnLeading func(bool)
}

// Run blocks until ctx ends (SIGTERM): while it holds the lease it acts; then it
// stops taking work, leaves running executions durable (they resume wherever the
// engine opens next), and releases the lease. Losing the lease while ctx is alive
// returns an error after acting stopped (the process should exit and restart).
func Run(ctx context.Context, o Options) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(o.Lease.Namespace, o.Lease.Name),
		Client:     o.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Lease.Identity},
	}
	// The election runs on its own context so the lease is released only after
	// acting has stopped: a standby that takes over must find the engine free.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	var leading atomic.Bool
	leadDone := make(chan struct{})
	var leadErr error
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.Lease.Duration,
		RenewDeadline:   o.Lease.RenewDeadline,
		RetryPeriod:     o.Lease.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            "recycler",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				leading.Store(true)
				defer close(leadDone)
				work, cancel := context.WithCancel(lctx)
				defer cancel()
				stop := context.AfterFunc(ctx, cancel)
				defer stop()
				leadErr = lead(work, o)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				o.Log.Info("new leader", "leader", id, "self", id == o.Lease.Identity)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	o.Ready.Set(nil) // a standby is ready: it waits for the lease
	go func() {
		<-ctx.Done()
		if leading.Load() {
			<-leadDone
		}
		stopElection()
	}()
	o.Log.Info("waiting for the lease", "lease", o.Lease.Namespace+"/"+o.Lease.Name)
	le.Run(electCtx)
	if leading.Load() {
		<-leadDone
	}
	switch {
	case ctx.Err() != nil:
		o.Log.Info("stopped: lease released, executions left durable")
		return nil
	case leadErr != nil:
		return leadErr
	default:
		return errors.New("lost the lease: another replica may act now, so this one stops (it restarts as a standby)")
	}
}

// leader is the state of one term as leader.
type leader struct {
	o      Options
	eng    *engine.Engine
	dedup  *trigger.Dedup
	nodes  *nodeIndex
	events chan engine.Event
	stalls *stalls // nil = no "blocked" notifications

	ctx context.Context // the term's context (for work handed to goroutines)

	mu         sync.Mutex
	running    map[string]runningExec // execution id → what it recycles
	annotating map[string]bool        // nodes whose annotation is being handled
	refused    map[string]bool        // node+value already refused (said once)
}

type runningExec struct {
	target     string // node name or instance id as requested
	annotation string // node whose annotation started it, "" otherwise
}

// eventTTL: how long an event id is remembered in memory. SQS redelivers within
// the visibility timeout and the retention period; anything older is found by the
// instance's attempts, whose inputs carry the event id (leader.start).
const eventTTL = 24 * time.Hour

func lead(ctx context.Context, o Options) error {
	log := o.Log
	log.Info("leading: opening the engine and resuming unfinished executions")
	l := &leader{o: o, ctx: ctx, dedup: trigger.NewDedup(o.Clock, eventTTL, o.Cooldown), running: map[string]runningExec{},
		events: make(chan engine.Event, 4096)}
	if o.Notify != nil && o.BlockedAfter > 0 {
		l.stalls = newStalls(o.BlockedAfter)
	}
	eng, err := l.openEngine(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	l.eng = eng
	defer func() {
		if err := eng.Close(); err != nil {
			log.Error("close engine", "err", err)
		}
		o.Metrics.Leader(false)
		if o.OnLeading != nil {
			o.OnLeading(false)
		}
		log.Info("stopped leading")
	}()
	if err := l.seed(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); l.consumeEvents(ctx) }()
	if l.stalls != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.notifyStalls(ctx) }()
	}

	l.nodes = newNodeIndex(o.Kube, l.onNode)
	if err := l.nodes.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer l.nodes.stop()
	o.Metrics.Leader(true)
	if o.OnLeading != nil {
		o.OnLeading(true)
	}
	if o.Queue != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.pollQueue(ctx) }()
	}
	if o.Schedule != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.runSchedule(ctx) }()
	}
	<-ctx.Done()
	return nil
}

// openEngine opens the state file. It adopts every unfinished execution no live
// process drives; those a previous leader still drives while it shuts down are
// adopted the moment it lets go (the engine looks every second).
func (l *leader) openEngine(ctx context.Context) (*engine.Engine, error) {
	return l.o.OpenEngine(ctx, func(ev engine.Event) {
		select {
		case l.events <- ev:
		default: // metrics and annotation clean-up may miss an event; never block the engine
		}
	})
}

// seed learns the running executions and the recent starts (for the cool-down)
// from the engine: a new leader knows what the old one did.
func (l *leader) seed(ctx context.Context) error {
	exs, err := l.eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, Limit: 1000})
	if err != nil {
		return fmt.Errorf("list executions: %w", err)
	}
	now := l.o.Clock.Now()
	for _, ex := range exs {
		var st recycle.State
		_ = json.Unmarshal(ex.Input, &st)
		if st.Request.Trigger != nil && now.Sub(ex.StartTime) < l.o.Cooldown {
			l.dedup.MarkNode(st.Request.Target(), ex.StartTime)
		}
		if st.Request.Trigger != nil && st.Request.Trigger.EventID != "" {
			l.dedup.MarkEvent(st.Request.Trigger.EventID)
		}
		if !ex.Status.Done() {
			re := runningExec{target: st.Request.Target()}
			if st.Request.Trigger != nil && st.Request.Trigger.Kind == string(trigger.KindAnnotation) {
				re.annotation = annotationNode(st.Request.Trigger.EventID)
			}
			l.running[ex.ID] = re
			l.seedStall(ctx, ex.ID, re.target)
		}
	}
	return nil
}

// seedStall times the step a running execution is in from its history, so a
// new leader notifies about a step the old one entered.
func (l *leader) seedStall(ctx context.Context, id, target string) {
	if l.stalls == nil {
		return
	}
	// The whole history: a poll loop re-enters its step every pass, so only the
	// first entry of the visit says since when (a day's drain is ~3,000 events).
	evs, err := l.eng.History(ctx, id)
	if err != nil {
		l.o.Log.Warn("read history for blocked notifications", "execution", id, "err", err)
		return
	}
	for _, ev := range evs {
		l.stalls.observe(ev, target)
	}
}

// notifyStalls checks for recycles blocked longer than BlockedAfter, at a
// quarter of it (at most every minute): a notification is late by that much at most.
func (l *leader) notifyStalls(ctx context.Context) {
	t := l.o.Clock.NewTicker(min(max(l.o.BlockedAfter/4, 100*time.Millisecond), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			for _, n := range l.stalls.due(l.o.Clock.Now()) {
				l.o.Log.Info("recycle blocked", "execution", n.Execution, "target", n.Target, "text", n.Text)
				l.o.Notify.Notify(ctx, n)
			}
		}
	}
}

// busy reports whether a running execution recycles node (by name) or instance.
func (l *leader) busy(node, instance string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, r := range l.running {
		if r.target == node || (instance != "" && r.target == instance) {
			return id, true
		}
	}
	return "", false
}

// alreadyError: the recycle a trigger asked for is not started because the engine
// has it already: the execution this very event started (Event set: a message
// delivered again after a crash), or a recycle of the instance that another trigger
// or a person started.
type alreadyError struct {
	Existing engine.Execution
	Event    string // the event that started Existing
	Reason   string // otherwise: what Existing is doing
}

func (e *alreadyError) Error() string {
	if e.Event != "" {
		return fmt.Sprintf("event %s started execution %s already (%s)", e.Event, e.Existing.ID, e.Existing.Status)
	}
	return fmt.Sprintf("execution %s (%s) %s", e.Existing.ID, e.Existing.Name, e.Reason)
}

// start records the recycle of instance that req (from a trigger) asks for,
// durably; the caller acknowledges its trigger only after this returned nil. The
// execution is named after the instance like every recycle (recycle.ExecutionName:
// the instance id, "-2", "-3" after ended attempts), so the engine refuses a second
// recycle of the node whoever starts it. The instance's attempts decide first: one
// whose input carries this event id (Request.Trigger.EventID, stored with the
// execution) is the one this event started; a running one is another's recycle.
// Either is an *alreadyError, and so is a name taken since (ExistsError).
func (l *leader) start(ctx context.Context, instance string, req recycle.Request, annotationNode string) (engine.Execution, error) {
	attempts, err := l.eng.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, NamePrefix: instance})
	if err != nil {
		return engine.Execution{}, fmt.Errorf("list recycles of %s: %w", instance, err)
	}
	if req.Trigger != nil && req.Trigger.EventID != "" {
		for _, ex := range attempts {
			var st recycle.State
			if json.Unmarshal(ex.Input, &st) == nil && st.Request.Trigger != nil && st.Request.Trigger.EventID == req.Trigger.EventID {
				return ex, &alreadyError{Existing: ex, Event: req.Trigger.EventID}
			}
		}
	}
	last, running := recycle.Attempts(instance, attempts)
	name := recycle.ExecutionName(instance, last+1)
	switch {
	case running != nil && req.LifecycleHook != nil:
		// A terminate hook for a node a recycle holds: an execution of its own only
		// answers it (Resolve finds the holder's fence; AnswerHook heartbeats while
		// the holder drains, then CONTINUE). Before the holder has fenced the node
		// that Resolve would recycle it a second time: the message comes back.
		if n := l.nodes.byInstanceID(instance); n != nil {
			if _, fenced := kube.FenceOf(n); !fenced {
				return engine.Execution{}, fmt.Errorf("execution %s recycles %s but has not fenced its node yet; the lifecycle action is taken up once it has", running.ID, instance)
			}
		}
		name = recycle.HookExecutionName(instance, req.LifecycleHook.Token)
	case running != nil:
		return *running, &alreadyError{Existing: *running, Reason: "recycles it, since " + running.StartTime.UTC().Format(time.RFC3339)}
	}
	input, err := json.Marshal(recycle.State{Request: req})
	if err != nil {
		return engine.Execution{}, err
	}
	def, err := recycle.Definition("")
	if err != nil {
		return engine.Execution{}, err
	}
	ex, err := l.eng.Start(ctx, engine.StartInput{
		StateMachine: recycle.StateMachineName, Definition: def, Name: name, Input: input,
		OnAbort: &engine.Rollback{StateMachine: recycle.RollbackStateMachineName, Definition: recycle.RollbackDefinition()},
	})
	if exists := (*engine.ExistsError)(nil); errors.As(err, &exists) {
		return exists.Existing, &alreadyError{Existing: exists.Existing, Reason: exists.Reason}
	}
	if err != nil {
		return ex, err
	}
	if !ex.Status.Done() {
		l.mu.Lock()
		l.running[ex.ID] = runningExec{target: req.Target(), annotation: annotationNode}
		l.mu.Unlock()
	}
	kind := "manual"
	if req.Trigger != nil {
		kind = req.Trigger.Kind
	}
	l.o.Metrics.Started(kind)
	l.o.Log.Info("recycle started", "execution", ex.ID, "name", name, "target", req.Target(), "trigger", kind)
	if l.o.Notify != nil {
		l.o.Notify.Notify(ctx, Notification{Kind: NotifyStarted, Execution: ex.ID, Target: req.Target(), Text: fmt.Sprintf("recycle of %s started (%s)", req.Target(), kind)})
	}
	return ex, nil
}

// consumeEvents feeds metrics and finishes what an ended execution leaves to serve.
func (l *leader) consumeEvents(ctx context.Context) {
	machines := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-l.events:
			m := machines[ev.ExecutionID]
			if m == "" {
				if ex, err := l.eng.Describe(ctx, ev.ExecutionID); err == nil {
					m = ex.StateMachine
					machines[ev.ExecutionID] = m
				}
			}
			l.o.Metrics.Observe(m, ev)
			if l.stalls != nil && m == recycle.StateMachineName {
				l.mu.Lock()
				target := l.running[ev.ExecutionID].target
				l.mu.Unlock()
				l.stalls.observe(ev, target)
			}
			if len(ev.Type) > len("Execution") && ev.Type[:len("Execution")] == "Execution" && ev.Type != "ExecutionStarted" {
				delete(machines, ev.ExecutionID)
				l.ended(ctx, ev.ExecutionID)
			}
		}
	}
}

func (l *leader) ended(ctx context.Context, id string) {
	l.mu.Lock()
	r, ok := l.running[id]
	delete(l.running, id)
	l.mu.Unlock()
	if !ok {
		return
	}
	ex, err := l.eng.Describe(ctx, id)
	if err == nil {
		l.o.Log.Info("recycle ended", "execution", id, "target", r.target, "status", ex.Status, "error", ex.Error)
		if l.o.Notify != nil {
			l.o.Notify.Notify(ctx, endNotification(ex, r.target))
		}
	}
	if r.annotation != "" {
		l.clearAnnotation(ctx, r.annotation, id)
	}
}
