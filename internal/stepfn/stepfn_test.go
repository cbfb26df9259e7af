package stepfn_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/stepfn"
)

const functionARN = "arn:aws:lambda:eu-west-1:123456789012:function:prod-recycler"

// scripted answers the recycle's tasks without a cluster: it checks the wiring of
// the client and the simulated Step Functions, not the tasks (internal/scenario runs
// the real ones). Drain answers "not yet" until released.
type scripted struct {
	mu       sync.Mutex
	calls    []string
	execs    []string // the "execution" of each payload ($$.Execution.Id)
	released bool
	rollback json.RawMessage // the payload Rollback received
}

func (s *scripted) Invoke(_ context.Context, arn string, payload []byte) ([]byte, error) {
	if arn != functionARN {
		return nil, errors.New("wrong function " + arn)
	}
	var p struct {
		Task      string          `json:"task"`
		Execution string          `json:"execution"`
		State     json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, p.Task)
	s.execs = append(s.execs, p.Execution)
	switch p.Task {
	case recycle.TaskDrain:
		return []byte(`{"done":` + map[bool]string{true: "true", false: "false"}[s.released] + `}`), nil
	case recycle.TaskCheckReplacement, recycle.TaskCheckWorkloads, recycle.TaskRetire:
		return []byte(`{"done":true}`), nil
	case recycle.TaskRollback:
		s.rollback = payload
		return []byte(`{"done":true}`), nil
	}
	return []byte(`{}`), nil
}

func setup(t *testing.T) (*stepfn.Client, *scripted) {
	t.Helper()
	srv := sim.New(sim.Options{Region: "eu-west-1", Seed: 3})
	if err := srv.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	lambda := &scripted{}
	srv.SetLambda(lambda)
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("eu-west-1"), config.WithBaseEndpoint(srv.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	api := sfn.NewFromConfig(cfg)
	def, _ := recycle.Definition(functionARN)
	rb, _ := recycle.DeployedRollbackDefinition(functionARN)
	var arns []string
	for name, d := range map[string][]byte{"prod-recycle": def, "prod-rollback": rb} {
		out, err := api.CreateStateMachine(t.Context(), &sfn.CreateStateMachineInput{Name: sdkaws.String(name), Definition: sdkaws.String(string(d)),
			RoleArn: sdkaws.String("arn:aws:iam::123456789012:role/prod-recycler-states")})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		arns = append(arns, *out.StateMachineArn)
	}
	slices.Sort(arns) // prod-recycle, prod-rollback
	c, err := stepfn.New(cfg, stepfn.Options{StateMachineARN: arns[0], PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, lambda
}

func input(t *testing.T, target string) json.RawMessage {
	b, err := json.Marshal(recycle.State{Request: recycle.NewRequest(target)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecycleRunsToTheEndAndReadsLikeTheEngine(t *testing.T) {
	c, lambda := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	lambda.released = true
	ex, err := c.Start(ctx, engine.StartInput{Name: "i-0123456789abcdef0", Input: input(t, "i-0123456789abcdef0")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(ex.ID, ":execution:prod-recycle:i-0123456789abcdef0") || ex.Status != engine.StatusRunning && ex.Status != engine.StatusSucceeded {
		t.Fatalf("started %+v", ex)
	}
	var watched []engine.Event
	if err := c.Watch(ctx, ex.Name, func(ev engine.Event) error { watched = append(watched, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	fin, err := c.Wait(ctx, ex.ID)
	if err != nil || fin.Status != engine.StatusSucceeded {
		t.Fatalf("wait: %+v %v", fin, err)
	}
	hist, err := c.History(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(watched) != len(hist) {
		t.Errorf("Watch delivered %d events, the history has %d", len(watched), len(hist))
	}
	for i := range hist {
		if hist[i].ID != int64(i+1) || (i < len(watched) && watched[i].ID != hist[i].ID) {
			t.Fatalf("event %d has id %d (watched %d): want 1… in order, once each", i, hist[i].ID, watched[i].ID)
		}
	}
	// $$.Execution.Id is the execution ARN, as on AWS (the fence records it).
	if lambda.execs[0] != ex.ID {
		t.Errorf("the function saw execution %q, want the ARN %s", lambda.execs[0], ex.ID)
	}
	// The Lambda integration's events read as the engine's: the tasks and the final state.
	if got := recycle.TasksSucceeded(hist); !got[recycle.TaskRetire] || !got[recycle.TaskResolve] {
		t.Errorf("tasks succeeded %v, want Resolve … Retire", got)
	}
	if st := recycle.StateFromHistory(hist); st.Request.InstanceID != "i-0123456789abcdef0" {
		t.Errorf("state from the history: %+v", st)
	}
	// AWS refuses a second execution with the same name.
	if _, err := c.Start(ctx, engine.StartInput{Name: "i-0123456789abcdef0", Input: input(t, "i-0123456789abcdef0")}); !errors.Is(err, engine.ErrExecutionAlreadyExists) {
		t.Errorf("second start with the same name: %v, want ErrExecutionAlreadyExists", err)
	}
	list, err := c.List(ctx, engine.ListFilter{})
	if err != nil || len(list) != 1 || list[0].ID != ex.ID || list[0].Status != engine.StatusSucceeded {
		t.Errorf("list: %+v %v", list, err)
	}
	for _, f := range []engine.ListFilter{{Name: "i-0123456789abcdef"}, {NamePrefix: "i-1"}} {
		if list, err := c.List(ctx, f); err != nil || len(list) != 0 {
			t.Errorf("list %+v: %+v %v, want none", f, list, err)
		}
	}
	if list, err := c.List(ctx, engine.ListFilter{NamePrefix: "i-0123"}); err != nil || len(list) != 1 {
		t.Errorf("list by prefix: %+v %v, want the one", list, err)
	}
}

func TestStopStartsTheRollbackWithTheLastState(t *testing.T) {
	c, lambda := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ex, err := c.Start(ctx, engine.StartInput{Name: "i-0fedcba9876543210", Input: input(t, "i-0fedcba9876543210")})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the drain loops ("not yet").
	for {
		lambda.mu.Lock()
		n := strings.Count(strings.Join(lambda.calls, " "), recycle.TaskDrain)
		lambda.mu.Unlock()
		if n >= 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the drain never looped")
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopped, err := c.Stop(ctx, ex.ID, recycle.ErrAborted, "aborted with 'recycler abort'")
	if err != nil {
		t.Fatal(err)
	}
	if stopped.Status != engine.StatusAborted || stopped.RollbackID == "" || !strings.Contains(stopped.RollbackID, ":execution:prod-rollback:") {
		t.Fatalf("stopped %+v: want ABORTED with a rollback execution", stopped)
	}
	rb, err := c.Wait(ctx, stopped.RollbackID)
	if err != nil || rb.Status != engine.StatusSucceeded {
		t.Fatalf("rollback %+v %v", rb, err)
	}
	var p struct {
		Execution string
		State     recycle.State
	}
	if err := json.Unmarshal(lambda.rollback, &p); err != nil {
		t.Fatal(err)
	}
	if p.Execution != ex.ID || p.State.Request.InstanceID != "i-0fedcba9876543210" {
		t.Errorf("Rollback got execution %q and state %+v: want the aborted execution's ARN and its last state", p.Execution, p.State.Request)
	}
	// One "not yet" drain loop costs what it costs on AWS: Task (entered, Lambda
	// scheduled, started, succeeded, exited), Choice (entered, exited), Wait (entered,
	// exited) = 9 events; the history budget (docs/stepfunctions.md) counts on it.
	hist, err := c.History(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	var drains []int64
	for _, ev := range hist {
		var d struct{ Name string }
		_ = json.Unmarshal(ev.Details, &d)
		if ev.Type == "TaskStateEntered" && d.Name == "Drain" {
			drains = append(drains, ev.ID)
		}
	}
	if len(drains) < 2 || drains[1]-drains[0] != 9 {
		t.Errorf("Drain entered at events %v: want a loop of 9 events", drains)
	}
	if _, err := c.Stop(ctx, ex.ID, recycle.ErrAborted, "again"); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("second stop: %v, want ErrNotRunning", err)
	}
}

func TestNewRefusesWhatIsNotAStateMachineARN(t *testing.T) {
	for _, arn := range []string{"", "prod-recycle", "arn:aws:lambda:eu-west-1:123456789012:function:x", "arn:aws:states:eu-west-1:123:stateMachine:x"} {
		if _, err := stepfn.New(sdkaws.Config{}, stepfn.Options{StateMachineARN: arn}); err == nil {
			t.Errorf("New accepted state machine %q", arn)
		}
	}
	if got := stepfn.DefaultRollbackARN("arn:aws:states:eu-west-1:123456789012:stateMachine:prod-recycle"); got != "arn:aws:states:eu-west-1:123456789012:stateMachine:prod-rollback" {
		t.Errorf("default rollback %s", got)
	}
}
