// Package sim is a simulated AWS endpoint (Auto Scaling, EC2, STS) that the unmodified
// aws-sdk-go-v2 clients reach through AWS_ENDPOINT_URL. It speaks the real wire
// protocols and keeps Auto Scaling's documented group semantics; every running
// instance can be mirrored as a Kubernetes Node through a NodeRegistry.
// docs/aws-semantics.md lists what is modelled and where it comes from.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Instance is what a NodeRegistry learns about a running instance.
type Instance struct {
	ID           string
	Name         string // private DNS name, used as the Node name
	ProviderID   string // aws:///<az>/<id>
	Region       string
	AZ           string
	InstanceType string
	Group        string // Auto Scaling group, "" when standalone
	// NeverReady asks the registry to keep the Node NotReady (fault injection).
	NeverReady bool
}

// NodeRegistry mirrors running instances as Kubernetes Nodes, like the cloud
// controller and the kubelet would.
type NodeRegistry interface {
	Register(ctx context.Context, inst Instance) error
	Deregister(ctx context.Context, inst Instance) error
}

// Options configure a Server. Zero values give working defaults.
type Options struct {
	Clock     clock.WithTicker // default: real clock
	Region    string           // default us-east-1
	AccountID string           // default 123456789012
	// Zones of the region; default <region>a, b, c.
	Zones []string
	// BootDelay: launch → EC2 running, Node registered, lifecycle InService. Default 30s.
	BootDelay time.Duration
	// StateDelay: duration of EC2 stopping/shutting-down/pending-after-start. Default 2s.
	StateDelay time.Duration
	// TransitionDelay: how long the Auto Scaling states a user request passes
	// through last: EnteringStandby, Pending after ExitStandby, Detaching (AWS holds
	// them while the instance leaves or joins its load balancers). Default 300ms;
	// Faults.TransitionDelays overrides it per state.
	TransitionDelay time.Duration
	Nodes           NodeRegistry
	Logger          *slog.Logger
	Faults          Faults
	Seed            uint64 // random seed (ids, fault draws); 0 = time based
}

// Server is the simulated AWS endpoint.
type Server struct {
	opts  Options
	clock clock.WithTicker
	log   *slog.Logger

	mu         sync.Mutex
	rnd        *rand.Rand
	faults     Faults
	calls      map[string]int
	answers    map[string][]string // CompleteLifecycleAction answers by instance ("hook=RESULT"), for tests
	groups     map[string]*group
	instances  map[string]*instance
	templates  map[string]*launchTemplate // by id
	ipCounter  int
	nodeOps    []nodeOp
	nodeMu     sync.Mutex // orders Node changes (see unlockAndApply)
	buckets    map[string]*bucket
	svcs       map[string]*service
	queues     map[string]*sqsQueue // SQS, by name
	topics     map[string]*snsTopic // SNS, by name (made by the first CreateTopic)
	states     statesBackend        // Step Functions (its own lock: the engine calls back in)
	rules      []EventRule          // EventBridge rules that target a queue
	identities map[string]Identity  // by access key id
	clusters   map[string]*cluster  // EKS, by name
	proxy      proxyState           // CONNECT tunnels for *.amazonaws.com (proxy.go)
	reqCounter int
	shutdown   func()

	kick     chan struct{}
	listener net.Listener
	http     *http.Server
	cancel   context.CancelFunc
	done     chan struct{}
}

type nodeOp struct {
	register bool
	inst     Instance
}

// New builds a Server; call Start to serve.
func New(opts Options) *Server {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "123456789012"
	}
	if len(opts.Zones) == 0 {
		opts.Zones = []string{opts.Region + "a", opts.Region + "b", opts.Region + "c"}
	}
	if opts.BootDelay == 0 {
		opts.BootDelay = 30 * time.Second
	}
	if opts.StateDelay == 0 {
		opts.StateDelay = 2 * time.Second
	}
	if opts.TransitionDelay == 0 {
		opts.TransitionDelay = defaultTransitionDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	srv := &Server{
		opts:      opts,
		clock:     opts.Clock,
		log:       opts.Logger,
		rnd:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults:    opts.Faults,
		calls:     map[string]int{},
		groups:    map[string]*group{},
		instances: map[string]*instance{},
		templates: map[string]*launchTemplate{},
		kick:      make(chan struct{}, 1),
		buckets:   map[string]*bucket{},
		queues:    map[string]*sqsQueue{},
		states:    statesBackend{machines: map[string]*stateMachine{}, execs: map[string]string{}, arns: map[string]string{}},
	}
	srv.faults.RateLimits = maps.Clone(opts.Faults.RateLimits)
	srv.identities = map[string]Identity{AccessKeyID: srv.defaultIdentity()}
	srv.clusters = map[string]*cluster{}
	srv.faults.TransitionDelays = maps.Clone(opts.Faults.TransitionDelays)
	srv.faults.LostAnswers = maps.Clone(opts.Faults.LostAnswers)
	srv.svcs = srv.services()
	return srv
}

// Start listens on addr (default 127.0.0.1:0) and runs the reconciler until Close.
func (s *Server) Start(addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("simulated aws: listen on %s: %w", addr, err)
	}
	s.listener = ln
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("simulated aws stopped serving", "err", err)
		}
	}()
	go s.run(ctx)
	return nil
}

// URL is the endpoint to put in AWS_ENDPOINT_URL.
func (s *Server) URL() string { return "http://" + s.listener.Addr().String() }

// Region is the simulated region.
func (s *Server) Region() string { return s.opts.Region }

// Close stops serving and the reconciler. Nodes are left as they are; call
// DeregisterAll first to remove them.
func (s *Server) Close(ctx context.Context) error {
	if s.http == nil {
		return nil
	}
	err := errors.Join(s.http.Shutdown(ctx), s.closeProxy(ctx), s.states.close())
	s.cancel()
	<-s.done
	return err
}

// run is the reconciler: it advances the simulation whenever an API call changed
// something or the next scheduled transition is due (clock timers, never sleeps).
func (s *Server) run(ctx context.Context) {
	defer close(s.done)
	for {
		s.mu.Lock()
		s.advanceLocked()
		next := s.nextDeadlineLocked()
		_ = s.unlockAndApply(ctx) // errors are logged

		var timer clock.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = s.clock.NewTimer(max(next.Sub(s.clock.Now()), 0))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-s.kick:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (s *Server) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) takeNodeOpsLocked() []nodeOp {
	ops := s.nodeOps
	s.nodeOps = nil
	return ops
}

// unlockAndApply releases s.mu and applies the queued Node changes. Changes are
// applied in the order they were queued, whichever goroutine queued them: nodeMu
// is taken before s.mu is released.
func (s *Server) unlockAndApply(ctx context.Context) error {
	ops := s.takeNodeOpsLocked()
	s.nodeMu.Lock()
	defer s.nodeMu.Unlock()
	s.mu.Unlock()
	if s.opts.Nodes == nil {
		return nil
	}
	var errs []error
	for _, op := range ops {
		var err error
		if op.register {
			err = s.opts.Nodes.Register(ctx, op.inst)
		} else {
			err = s.opts.Nodes.Deregister(ctx, op.inst)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Error("simulated aws: node registry", "register", op.register, "instance", op.inst.ID, "err", err)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Sync advances the simulation to the clock's current time and applies pending
// Node changes before returning. Tests call it after stepping a fake clock.
func (s *Server) Sync(ctx context.Context) {
	s.mu.Lock()
	s.advanceLocked()
	_ = s.unlockAndApply(ctx)
	s.poke()
}

// apiError is an AWS error response.
type apiError struct {
	Status  int
	Code    string
	Message string
	Query   string // JSON protocols of query-compatible services (SQS): the legacy Query error code
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func validation(format string, args ...any) *apiError {
	return &apiError{Status: 400, Code: "ValidationError", Message: fmt.Sprintf(format, args...)}
}

func ec2Error(code, format string, args ...any) *apiError {
	return &apiError{Status: 400, Code: code, Message: fmt.Sprintf(format, args...)}
}

// protocol encodes one service's responses.
// A JSON-protocol service (SQS, Step Functions) implements it with the operation
// from X-Amz-Target and the body kept in form.body for its handlers to decode.
type protocol interface {
	readRequest(r *http.Request) (op string, in form, err *apiError)
	writeResult(w http.ResponseWriter, op, requestID string, result any)
	writeError(w http.ResponseWriter, requestID string, err *apiError)
	throttle() *apiError
	internal() *apiError
}

// service is one simulated AWS service: parse the operation, run it with the lock held.
type service struct {
	proto protocol
	ops   map[string]func(f form) (any, *apiError)
}

func (s *Server) services() map[string]*service {
	return map[string]*service{
		"autoscaling": {proto: awsQuery{ns: "http://autoscaling.amazonaws.com/doc/2011-01-01/"}, ops: s.autoscalingOps()},
		"ec2":         {proto: ec2Query{ns: "http://ec2.amazonaws.com/doc/2016-11-15/"}, ops: s.ec2Ops()},
		"sts":         {proto: stsQuery{awsQuery: awsQuery{ns: "https://sts.amazonaws.com/doc/2011-06-15/"}, srv: s}, ops: s.stsOps()},
		"sqs":         {proto: awsJSON{prefix: "AmazonSQS.", namespace: "com.amazonaws.sqs#"}, ops: s.sqsOps()},
		"sns":         {proto: awsQuery{ns: "http://sns.amazonaws.com/doc/2010-03-31/"}, ops: s.snsOps()},
		"eks":         {proto: restJSON{}, ops: s.eksOps()},
		"states":      {proto: awsJSON{prefix: "AWSStepFunctions.", namespace: "com.amazonaws.sfn#"}, ops: s.statesOps()},
	}
}

// ServeHTTP dispatches AWS API calls and the admin API under /_sim/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveAdmin(w, r)
		return
	}
	svcName := signingService(r)
	svc, ok := s.svcs[svcName]
	if !ok {
		http.Error(w, fmt.Sprintf("simulated aws: unsupported service %q (from the SigV4 credential scope)", svcName), http.StatusBadRequest)
		return
	}
	op, in, rerr := svc.proto.readRequest(r)
	if rerr != nil {
		svc.proto.writeError(w, "", rerr)
		return
	}
	s.mu.Lock()
	s.reqCounter++
	reqID := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", s.rnd.Uint32(), s.reqCounter&0xffff, s.rnd.IntN(0xfff), s.rnd.IntN(0xfff), s.rnd.Uint64()&0xffffffffffff)
	s.calls[svcName+":"+op]++
	handler, known := svc.ops[op]
	var (
		result any
		aerr   *apiError
	)
	switch {
	case s.overLimitLocked(svcName) || (s.faults.ThrottleRate > 0 && s.rnd.Float64() < s.faults.ThrottleRate):
		s.calls["fault:throttled"]++
		aerr = svc.proto.throttle()
	case known && svcName == "autoscaling" && !strings.HasPrefix(op, "Describe") && s.faults.ContentionRate > 0 && s.rnd.Float64() < s.faults.ContentionRate:
		s.calls["fault:contention"]++
		aerr = &apiError{Status: 500, Code: "ResourceContention", Message: "You already have a pending update to an Auto Scaling resource (for example, a group, instance, or load balancer)."}
	case s.faults.ServerErrorRate > 0 && s.rnd.Float64() < s.faults.ServerErrorRate:
		s.calls["fault:5xx"]++
		aerr = svc.proto.internal()
	case !known:
		aerr = &apiError{Status: 400, Code: "InvalidAction", Message: fmt.Sprintf("The action %s is not valid for this web service (simulated AWS supports: see docs/aws-semantics.md).", op)}
	default:
		s.advanceLocked()
		result, aerr = handler(in)
		s.advanceLocked()
		if aerr == nil && s.faults.LostAnswers[op] > 0 {
			// It happened; the client will never hear so.
			s.faults.LostAnswers[op]--
			s.calls["fault:lost"]++
			aerr = svc.proto.internal()
		}
	}
	// A client that hangs up must not lose a Node change.
	_ = s.unlockAndApply(context.WithoutCancel(r.Context()))
	s.poke()
	if lp, ok := result.(*longPoll); ok {
		result, aerr = s.waitLongPoll(r.Context(), lp)
	}
	if u, ok := result.(unlocked); ok {
		result, aerr = u(r.Context())
	}
	if aerr != nil {
		svc.proto.writeError(w, reqID, aerr)
		return
	}
	svc.proto.writeResult(w, op, reqID, result)
}

// signingService reads the service name from the SigV4 credential scope
// (Credential=AKID/date/region/service/aws4_request) of the Authorization header
// or, for a presigned URL, of X-Amz-Credential. Only presigned STS requests have
// their signature verified (sts.go).
func signingService(r *http.Request) string {
	scope := credentialScope(r.Header.Get("Authorization"))
	if scope == nil {
		scope = strings.Split(r.URL.Query().Get("X-Amz-Credential"), "/")
	}
	if len(scope) >= 5 {
		return scope[3]
	}
	return ""
}

// Calls returns the number of API calls per "service:Operation" (faulted calls
// included) and "fault:throttled"/"fault:5xx" counts.
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
}

// DeregisterAll removes the Node of every instance that has one (for a control
// plane that outlives the simulator).
func (s *Server) DeregisterAll(ctx context.Context) error {
	s.mu.Lock()
	for _, inst := range s.sortedInstancesLocked() {
		s.deregisterLocked(inst)
	}
	return s.unlockAndApply(ctx)
}
