package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/scenario"
	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/stepfn"
)

func newDemoCmd(stdout, stderr io.Writer) *cobra.Command {
	var nodes int
	var boot, job time.Duration
	var where string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Recycle a node of a built-in simulated cluster and report on zero downtime",
		Long: `Starts a real local control plane (etcd, kube-apiserver, controller-manager, scheduler,
kwok as the kubelets) and the simulated AWS endpoint with one Auto Scaling group, seeds
workloads (Deployments with PodDisruptionBudgets, a long-running job, a DaemonSet), then
recycles the node that runs the long job — exactly as 'recycler recycle' would — and prints
the progress, the timeline and a zero-downtime report. Everything is removed at the end.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 2 || boot <= 0 || job <= 0 {
				return badInput("--nodes must be at least 2, --boot-delay and --job-duration positive")
			}
			if where != engineLocal && where != engineStepFunctions {
				return badInput("--engine %q: use local or stepfunctions", where)
			}
			return runDemo(cmd.Context(), stdout, stderr, nodes, boot, job, where)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "nodes in the simulated Auto Scaling group")
	cmd.Flags().DurationVar(&boot, "boot-delay", 5*time.Second, "how long a new instance takes to boot and join")
	cmd.Flags().DurationVar(&job, "job-duration", 20*time.Second, "how long the long-running job pods run")
	cmd.Flags().StringVar(&where, "engine", engineLocal, "local (the embedded engine) or stepfunctions (the state machines the Terraform module deploys, on the simulated Step Functions, driven through the same client as 'recycler recycle --engine stepfunctions')")
	return cmd
}

func runDemo(ctx context.Context, stdout, stderr io.Writer, nodes int, boot, job time.Duration, where string) error {
	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	say("== Recycler demo ==")
	say("Starting a local Kubernetes control plane and a simulated AWS (one Auto Scaling group of %d nodes)…", nodes)
	env, err := sim.Up(ctx, sim.UpOptions{Nodes: nodes, BootDelay: boot, JobDuration: job, Progress: stderr})
	if err != nil {
		return fmt.Errorf("start the simulated environment: %w", err)
	}
	defer func() {
		say("\nCleaning up: stopping the simulated AWS and the control plane…")
		if err := env.Down(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(stderr, "cleanup: %v\n", err)
		}
	}()
	log := loggingFrom(ctx).log
	h, err := scenario.New(ctx, env)
	if err != nil {
		return err
	}
	if err := scenario.WaitSettled(ctx, env.Kube.Client, sim.WorkloadNamespace, 2*time.Minute); err != nil {
		return err
	}
	node, err := nodeWithLongJob(ctx, env)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "recycler-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var eng interface {
		scenario.Executions
		executions
	}
	name := "demo-" + node
	if where == engineStepFunctions {
		c, err := demoStepFunctions(ctx, env, h)
		if err != nil {
			return err
		}
		tgt, err := h.Tasks.Resolve(ctx, recycle.State{Request: recycle.NewRequest(node)})
		if err != nil {
			return err
		}
		eng, name = c, tgt.InstanceID
		say("\nOn Step Functions: %s (and its rollback machine), each Task invoking the recycler Lambda.", c.StateMachine())
	} else {
		local, err := engine.Open(ctx, engine.Options{Path: filepath.Join(dir, "state.db"), Registry: h.Tasks.Registry(), Logger: log})
		if err != nil {
			return err
		}
		defer local.Close()
		eng = local
	}

	selector := sim.LabelComponent + "=" + sim.LongJobComponent
	req := recycle.NewRequest(node)
	req.Selector, req.Namespaces = selector, []string{sim.WorkloadNamespace}
	req.MaxWait = recycle.Duration(10 * time.Minute)
	say("\nThe cluster before:")
	printPods(ctx, stdout, env)
	say("\nRecycling %s: it runs a long job (pods %s in namespace %s, ~%s) that must finish,", node, selector, sim.WorkloadNamespace, job)
	say("and pods of Deployments whose PodDisruptionBudgets must hold. Same path as:")
	say("  recycler recycle %s --selector %s --namespace %s --max-wait 10m\n", node, selector, sim.WorkloadNamespace)

	view := newProgress(stdout, isTerminal(stdout))
	out, err := h.Recycle(ctx, eng, req, name, view.event)
	if err != nil {
		return err
	}
	code, _, msg := outcome(ctx, eng, out.Execution, out.History)
	say("%s\n", msg)

	say("Timeline (time in each step; the boot delay is %s, the job runs %s):", boot, job)
	steps := recycle.StepDurations(out.History)
	for _, s := range recycle.Steps {
		if d, ok := steps[s]; ok {
			say("  %-16s %8s", s, d.Round(10*time.Millisecond))
		}
	}
	say("  %-16s %8s", "total", out.Elapsed.Round(10*time.Millisecond))

	say("\nZero-downtime report (measured continuously during the run):")
	fmt.Fprint(stdout, out.Report.String())
	say("  (5. a crash at any moment ends like an uninterrupted run: not shown here — the crash test kills")
	say("   'recycler recycle' at every step and resumes it: go test -run TestCrash ./internal/scenario/)")
	say("\nAPI calls made by the recycle: %d AWS (%s), %d Kubernetes requests", out.AWSCalls, opsSummary(out.AWSByOp), out.KubeCalls)
	say("\nThe cluster after:")
	printPods(ctx, stdout, env)
	if code != ExitOK || !out.Report.OK() {
		return exitError{code: max(code, ExitFailed), msg: "the demo recycle did not succeed cleanly"}
	}
	return nil
}

func nodeWithLongJob(ctx context.Context, env *sim.Environment) (string, error) {
	pods, err := env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			return p.Spec.NodeName, nil
		}
	}
	return "", fmt.Errorf("no long-job pod is scheduled yet")
}

func printPods(ctx context.Context, w io.Writer, env *sim.Environment) {
	pods, err := env.Kube.Client.CoreV1().Pods(sim.WorkloadNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "  (list pods: %v)\n", err)
		return
	}
	byNode := map[string][]string{}
	for _, p := range pods.Items {
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], fmt.Sprintf("%s(%s)", p.Name, strings.ToLower(string(p.Status.Phase))))
	}
	var names []string
	for n := range byNode {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sort.Strings(byNode[n])
		label := orText(n, "(unscheduled)")
		if _, err := env.Kube.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); n != "" && err != nil {
			label += " (node deleted; its pods are garbage-collected soon)"
		}
		fmt.Fprintf(w, "  %-28s %s\n", label, strings.Join(byNode[n], " "))
	}
}

func opsSummary(ops map[string]int64) string {
	short := func(op string) string { return op[strings.LastIndexByte(op, '/')+1:] }
	seen := map[string]int{}
	for op := range ops {
		seen[short(op)]++
	}
	var parts []string
	for op, n := range ops {
		name := short(op)
		if seen[name] > 1 { // the same operation of two services (Auto Scaling's and EC2's DeleteTags)
			name = op
		}
		parts = append(parts, fmt.Sprintf("%s×%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// demoStepFunctions deploys what the Terraform module deploys on the simulated Step
// Functions — `recycler asl [--rollback] --function-arn` — with the function's
// invocations dispatched in-process to the same task functions (the end-to-end test
// TestRecycleOnStepFunctions runs the real bootstrap under the Lambda emulator).
func demoStepFunctions(ctx context.Context, env *sim.Environment, h *scenario.Harness) (*stepfn.Client, error) {
	env.AWS.SetLambda(sim.LambdaFunc(func(ctx context.Context, _ string, payload []byte) ([]byte, error) {
		return h.Tasks.Invoke(ctx, payload)
	}))
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(env.Region), config.WithBaseEndpoint(env.AWS.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(sim.AccessKeyID, sim.SecretAccessKey, "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
	if err != nil {
		return nil, err
	}
	api := sfn.NewFromConfig(cfg)
	fn := "arn:aws:lambda:" + env.Region + ":123456789012:function:demo-recycler"
	def, err := recycle.Definition(fn)
	if err != nil {
		return nil, err
	}
	rb, err := recycle.DeployedRollbackDefinition(fn)
	if err != nil {
		return nil, err
	}
	var arn string
	for _, m := range []struct {
		name string
		def  []byte
	}{{"demo-recycle", def}, {"demo-rollback", rb}} {
		out, err := api.CreateStateMachine(ctx, &sfn.CreateStateMachineInput{Name: aws.String(m.name), Definition: aws.String(string(m.def)),
			RoleArn: aws.String("arn:aws:iam::123456789012:role/demo-recycler-states")})
		if err != nil {
			return nil, fmt.Errorf("create state machine %s: %w", m.name, err)
		}
		if arn == "" {
			arn = *out.StateMachineArn
		}
	}
	return stepfn.New(cfg, stepfn.Options{StateMachineARN: arn, PollInterval: 500 * time.Millisecond})
}
