package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/testenv"
)

// motoCallback rewrites a definition for moto's Step Functions interpreter: moto
// cannot run a Lambda here (it needs Docker), but its SQS callback integration works,
// so every Task that names the function becomes
// sqs:sendMessage.waitForTaskToken with the Task's own Parameters and the task token
// as the message. Retry, Catch, TimeoutSeconds, Choice and Wait stay as they are:
// those are what moto's interpreter is asked to run.
func motoCallback(t *testing.T, def []byte, queueURL string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(def, &m); err != nil {
		t.Fatal(err)
	}
	for _, s := range m["States"].(map[string]any) {
		st := s.(map[string]any)
		if st["Resource"] != recycle.FunctionPlaceholder {
			continue
		}
		body := st["Parameters"].(map[string]any)
		body["taskToken.$"] = "$$.Task.Token"
		st["Resource"] = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
		st["Parameters"] = map[string]any{"QueueUrl": queueURL, "MessageBody": body}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// taskWorker answers moto's task tokens with the real task dispatcher
// (recycle.Tasks.Invoke, what the Lambda calls): success → SendTaskSuccess, a failure
// → SendTaskFailure with the error's ASL name, as the Lambda's errorType would be.
type taskWorker struct {
	sqs   *sqs.Client
	sfn   *sfn.Client
	queue string
	tasks *recycle.Tasks
	// inject, if set, answers a task instead of the dispatcher (once per key).
	mu      sync.Mutex
	inject  map[string]string // task name → error name to fail its first call with
	calls   []string
	errs    chan error
	running sync.WaitGroup
}

func (w *taskWorker) run(ctx context.Context) {
	for ctx.Err() == nil {
		out, err := w.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &w.queue, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			if ctx.Err() == nil {
				w.errs <- fmt.Errorf("receive: %w", err)
			}
			return
		}
		for _, msg := range out.Messages {
			if _, err := w.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &w.queue, ReceiptHandle: msg.ReceiptHandle}); err != nil {
				w.errs <- fmt.Errorf("delete message: %w", err)
				return
			}
			w.running.Add(1)
			go func(body string) {
				defer w.running.Done()
				w.answer(ctx, body)
			}(sdkaws.ToString(msg.Body))
		}
	}
}

func (w *taskWorker) answer(ctx context.Context, body string) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &msg); err != nil {
		w.errs <- fmt.Errorf("message %q: %w", body, err)
		return
	}
	var token, task string
	_ = json.Unmarshal(msg["taskToken"], &token)
	_ = json.Unmarshal(msg["task"], &task)
	delete(msg, "taskToken")
	payload, _ := json.Marshal(msg)

	w.mu.Lock()
	w.calls = append(w.calls, task)
	injected := w.inject[task]
	delete(w.inject, task)
	w.mu.Unlock()

	var out json.RawMessage
	var err error
	if injected != "" {
		err = asl.Errorf(injected, "injected by the test: Lambda's own transient failure")
	} else {
		out, err = w.tasks.Invoke(ctx, payload)
	}
	if err != nil {
		name := asl.ErrorName(err)
		_, serr := w.sfn.SendTaskFailure(ctx, &sfn.SendTaskFailureInput{TaskToken: &token, Error: &name, Cause: sdkaws.String(err.Error())})
		if serr != nil && ctx.Err() == nil {
			w.errs <- fmt.Errorf("send task failure: %w", serr)
		}
		return
	}
	if _, err := w.sfn.SendTaskSuccess(ctx, &sfn.SendTaskSuccessInput{TaskToken: &token, Output: sdkaws.String(string(out))}); err != nil && ctx.Err() == nil {
		w.mu.Lock()
		calls := strings.Join(w.calls, " ")
		w.mu.Unlock()
		w.errs <- fmt.Errorf("send task success of %s (tasks so far: %s): %w", task, calls, err)
	}
}

// motoRig is moto's Step Functions with the recycle state machine (rewritten for the
// SQS callback) and a worker answering its tasks against one simulated world.
type motoRig struct {
	w      *world
	sfn    *sfn.Client
	arn    string
	worker *taskWorker
}

func newMotoRig(t *testing.T, w *world, inject map[string]string) *motoRig {
	t.Helper()
	m := testenv.MotoFor(t)
	ctx := t.Context()
	// moto runs definitions only when told to.
	resp, err := http.Post(m.URL+"/moto-api/config", "application/json", bytes.NewReader([]byte(`{"stepfunctions": {"execute_state_machine": true}}`)))
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("enable moto's interpreter: %v %v", resp, err)
	}
	resp.Body.Close()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"), config.WithBaseEndpoint(m.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDMOTO", "moto", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	sfnc, sqsc := sfn.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: sdkaws.String("recycler-tasks")})
	if err != nil {
		t.Fatal(err)
	}
	def, err := recycle.Definition("")
	if err != nil {
		t.Fatal(err)
	}
	sm, err := sfnc.CreateStateMachine(ctx, &sfn.CreateStateMachineInput{
		Name: sdkaws.String(recycle.StateMachineName), RoleArn: sdkaws.String("arn:aws:iam::123456789012:role/recycler-states"),
		Definition: sdkaws.String(string(motoCallback(t, def, *q.QueueUrl))),
	})
	if err != nil {
		t.Fatalf("moto refuses the recycle state machine: %v", err)
	}
	worker := &taskWorker{sqs: sqsc, sfn: sfnc, queue: *q.QueueUrl, tasks: w.h.Tasks, inject: inject, errs: make(chan error, 16)}
	wctx, stop := context.WithCancel(context.Background())
	go worker.run(wctx)
	t.Cleanup(func() { stop(); worker.running.Wait() })
	return &motoRig{w: w, sfn: sfnc, arn: *sm.StateMachineArn, worker: worker}
}

// run starts an execution named from the instance id and waits for its end.
func (r *motoRig) run(t *testing.T, req recycle.Request) (*sfn.DescribeExecutionOutput, []sfntypes.HistoryEvent, string, *recycle.Target) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	tgt, err := r.w.h.Tasks.Resolve(ctx, recycle.State{Request: req})
	if err != nil {
		t.Fatal(err)
	}
	input, _ := json.Marshal(recycle.State{Request: req})
	ex, err := r.sfn.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: &r.arn, Name: &tgt.InstanceID, Input: sdkaws.String(string(input))})
	if err != nil {
		t.Fatal(err)
	}
	for {
		d, err := r.sfn.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: ex.ExecutionArn})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != sfntypes.ExecutionStatusRunning {
			hist := historyOf(ctx, t, r.sfn, *ex.ExecutionArn)
			r.worker.mu.Lock()
			calls := strings.Join(r.worker.calls, " ")
			r.worker.mu.Unlock()
			t.Logf("moto ran: %s %s (%q); %d history events; tasks: %s", d.Status, sdkaws.ToString(d.Error), sdkaws.ToString(d.Cause), len(hist), calls)
			return d, hist, calls, tgt
		}
		select {
		case err := <-r.worker.errs:
			t.Fatalf("task worker: %v", err)
		case <-ctx.Done():
			t.Fatalf("execution still %s: %v", d.Status, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestRecycleOnMotoStepFunctions runs the recycle state machine on moto's Step
// Functions interpreter (an implementation nobody here wrote), every Task answered
// by the real task dispatcher over the simulated AWS and the real control plane.
// The first Drain call fails with Lambda.ServiceException, which the definition
// must retry (moto's Retry), not roll back.
func TestRecycleOnMotoStepFunctions(t *testing.T) {
	w := newWorld(t, 2*time.Second, 8*time.Second)
	r := newMotoRig(t, w, map[string]string{recycle.TaskDrain: "Lambda.ServiceException"})
	ctx := t.Context()
	node := w.longJobNode(t)
	before := w.group(t)
	d, hist, calls, tgt := r.run(t, w.request(node, 5*time.Minute))
	if d.Status != sfntypes.ExecutionStatusSucceeded {
		t.Fatalf("execution %s: %s %s\n%s", d.Status, sdkaws.ToString(d.Error), sdkaws.ToString(d.Cause), eventsText(hist))
	}
	if !strings.HasPrefix(calls, "Resolve Fence Surge CheckReplacement") || !strings.Contains(calls, "Drain Drain") || !regexp.MustCompile(`CheckWorkloads( Retire)+$`).MatchString(calls) || strings.Contains(calls, "Rollback") {
		t.Errorf("tasks ran %q: want Resolve, Fence, Surge, checks, Drain retried after the Lambda error, CheckWorkloads, Retire (again while the old instance is Detaching), no Rollback", calls)
	}
	var st recycle.State
	if err := json.Unmarshal([]byte(sdkaws.ToString(d.Output)), &st); err != nil || st.Retire == nil {
		t.Fatalf("output %s: %v; want the final state with retire", sdkaws.ToString(d.Output), err)
	}
	after := w.group(t)
	if _, ok := after.Instance(tgt.InstanceID); ok || after.Desired != before.Desired {
		t.Errorf("after the recycle on moto: old %s still in the group or desired %d != %d", tgt.InstanceID, after.Desired, before.Desired)
	}
	if _, err := w.env.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		t.Errorf("old node %s still exists", node)
	}
	// A second execution for the same instance is refused, as AWS refuses a duplicate name.
	_, err := r.sfn.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: &r.arn, Name: &tgt.InstanceID, Input: sdkaws.String(`{}`)})
	if dup := (*sfntypes.ExecutionAlreadyExists)(nil); !errors.As(err, &dup) {
		t.Errorf("a second execution named %s: %v, want ExecutionAlreadyExists", tgt.InstanceID, err)
	}
}

// TestRollbackOnMotoStepFunctions: a replacement that never becomes Ready ends in
// Recycler.ReplacementTimeout on moto too; the Catch runs Rollback and the execution
// fails with the original error (the Fail state's ErrorPath/CausePath).
func TestRollbackOnMotoStepFunctions(t *testing.T) {
	w := newWorld(t, 2*time.Second, 10*time.Minute)
	f := w.env.AWS.Faults()
	f.NeverReadyNext = 5
	if err := w.env.AWS.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	r := newMotoRig(t, w, nil)
	node := w.longJobNode(t)
	before := w.group(t)
	req := w.request(node, time.Hour)
	req.ReplacementTimeout = recycle.Duration(8 * time.Second)
	d, hist, calls, tgt := r.run(t, req)
	if d.Status != sfntypes.ExecutionStatusFailed || sdkaws.ToString(d.Error) != recycle.ErrReplacementTimeout {
		t.Fatalf("execution %s %s: want FAILED %s\n%s", d.Status, sdkaws.ToString(d.Error), recycle.ErrReplacementTimeout, eventsText(hist))
	}
	// The rollback loops until AWS is done (the old instance back InService).
	if !regexp.MustCompile(`CheckReplacement( Rollback)+$`).MatchString(calls) {
		t.Errorf("tasks ran %q, want the checks then Rollback (until done)", calls)
	}
	assertUnfenced(t, w, node)
	after := w.group(t)
	if gi, ok := after.Instance(tgt.InstanceID); !ok || gi.Lifecycle != "InService" || after.Desired != before.Desired {
		t.Errorf("after the rollback on moto: %s is %+v, desired %d (want InService, %d)", tgt.InstanceID, gi, after.Desired, before.Desired)
	}
}

func historyOf(ctx context.Context, t *testing.T, c *sfn.Client, arn string) []sfntypes.HistoryEvent {
	t.Helper()
	var events []sfntypes.HistoryEvent
	p := sfn.NewGetExecutionHistoryPaginator(c, &sfn.GetExecutionHistoryInput{ExecutionArn: &arn, MaxResults: 1000})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, page.Events...)
	}
	return events
}

func eventsText(h []sfntypes.HistoryEvent) string {
	var b strings.Builder
	for _, e := range h {
		fmt.Fprintf(&b, "%d %s", e.Id, e.Type)
		if d := e.TaskFailedEventDetails; d != nil {
			fmt.Fprintf(&b, " %s: %.200s", sdkaws.ToString(d.Error), sdkaws.ToString(d.Cause))
		}
		b.WriteString("\n")
	}
	return b.String()
}
