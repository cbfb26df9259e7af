package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/recycler/recycler/internal/sim"
)

// newSimCmd is `recycler sim`: a local cluster (kwok) plus a simulated AWS.
func newSimCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	_ = stdin
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a local Kubernetes cluster plus a simulated AWS (Auto Scaling, EC2) to try recycler",
		Long: `recycler sim up starts a real Kubernetes control plane (kwok plays the kubelets) and a
simulated AWS endpoint that the AWS SDKs and CLI reach through AWS_ENDPOINT_URL. It creates
Auto Scaling groups whose instances appear as Nodes, seeds workloads, prints the environment
variables to use it, and runs until 'recycler sim down' or Ctrl-C.`,
		Args: cobra.NoArgs,
	}
	var stateFile string
	cmd.PersistentFlags().StringVar(&stateFile, "state", "", "state file of the running simulator (default $XDG_RUNTIME_DIR/recycler/sim/env, else <user cache>/recycler/sim/env)")
	cmd.AddCommand(newSimUpCmd(stdout, stderr, &stateFile), newSimDownCmd(stdout, &stateFile), newSimEnvCmd(stdout, &stateFile), newSimStatusCmd(stdout, &stateFile))
	return cmd
}

func simStatePath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "recycler", "sim", "env"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a place for the sim state file: %w (set --state)", err)
	}
	return filepath.Join(d, "recycler", "sim", "env"), nil
}

// readSimState parses the "export K='V'" lines of the state file.
func readSimState(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, badInput("no simulator is running (no state file %s); start one with 'recycler sim up'", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read sim state: %w", err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	return vars, sc.Err()
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func newSimUpCmd(stdout, stderr io.Writer, stateFlag *string) *cobra.Command {
	var opts sim.UpOptions
	var addr string
	var eks bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the control plane and the simulated AWS; run until 'recycler sim down' or Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := simStatePath(*stateFlag)
			if err != nil {
				return err
			}
			if vars, err := readSimState(path); err == nil {
				if pid, _ := strconv.Atoi(vars["RECYCLER_SIM_PID"]); pidAlive(pid) {
					return badInput("a simulator is already running (pid %d, state %s); stop it with 'recycler sim down'", pid, path)
				}
			}
			if opts.Nodes < 1 || opts.Groups < 1 {
				return badInput("--nodes and --groups must be at least 1 (got %d and %d)", opts.Nodes, opts.Groups)
			}
			if opts.Workloads != "default" && opts.Workloads != "none" {
				return badInput("--workloads %q: use 'default' or 'none'", opts.Workloads)
			}
			if opts.BootDelay <= 0 {
				return badInput("--boot-delay must be positive (got %s)", opts.BootDelay)
			}
			opts.Addr = addr
			opts.Progress = stderr
			if eks {
				// Mapped to system:masters like an EKS cluster's creator.
				opts.EKS = &sim.EKSOptions{}
			}
			ctx := c.Context()
			env, err := sim.Up(ctx, opts)
			if err != nil {
				return err
			}
			shutdown := make(chan struct{})
			var once sync.Once
			env.AWS.OnShutdown(func() { once.Do(func() { close(shutdown) }) })
			var b strings.Builder
			fmt.Fprintf(&b, "# recycler sim (pid %d): eval \"$(recycler sim env)\" or copy these lines\n", os.Getpid())
			for _, kv := range env.Vars() {
				fmt.Fprintf(&b, "export %s='%s'\n", kv[0], kv[1])
			}
			fmt.Fprintf(&b, "export RECYCLER_SIM_PID='%d'\n", os.Getpid())
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return errors.Join(fmt.Errorf("write sim state: %w", err), env.Down(context.WithoutCancel(ctx)))
			}
			if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
				return errors.Join(fmt.Errorf("write sim state: %w", err), env.Down(context.WithoutCancel(ctx)))
			}
			fmt.Fprint(stdout, b.String())
			fmt.Fprintf(stderr, "ready: %d group(s) %s with %d Ready node(s) each. 'recycler sim status' shows them; 'recycler sim down' or Ctrl-C stops everything.\n",
				len(env.Groups), strings.Join(env.Groups, ", "), opts.Nodes)
			select {
			case <-ctx.Done():
			case <-shutdown:
			}
			fmt.Fprintln(stderr, "stopping the simulator and the control plane…")
			err = env.Down(context.WithoutCancel(ctx))
			if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
				err = errors.Join(err, rmErr)
			}
			if err != nil {
				return fmt.Errorf("sim down: %w", err)
			}
			fmt.Fprintln(stderr, "stopped; nothing left behind.")
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Nodes, "nodes", 3, "nodes (instances) per Auto Scaling group")
	f.IntVar(&opts.Groups, "groups", 1, "number of Auto Scaling groups (ng-1, ng-2, …)")
	f.StringVar(&opts.Workloads, "workloads", "default", "workloads to seed: default (Deployments with PDBs, long jobs, a DaemonSet) or none")
	f.DurationVar(&opts.BootDelay, "boot-delay", 5*time.Second, "time from launch to InService and a registered Node")
	f.DurationVar(&opts.JobDuration, "job-duration", 10*time.Minute, "how long the long-job pods run before they succeed")
	f.StringVar(&opts.Region, "region", "us-east-1", "simulated AWS region")
	f.BoolVar(&eks, "eks", false, "EKS-like: the apiserver authenticates EKS tokens through aws-iam-authenticator, and RECYCLER_CLUSTER="+sim.DefaultCluster+" is exported (try --cluster)")
	f.StringVar(&addr, "addr", "127.0.0.1:0", "listen address of the simulated AWS endpoint")
	return cmd
}

func newSimDownCmd(stdout io.Writer, stateFlag *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the simulator started by 'recycler sim up'",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, vars, err := runningSim(*stateFlag)
			if err != nil {
				return err
			}
			pid, _ := strconv.Atoi(vars["RECYCLER_SIM_PID"])
			if !pidAlive(pid) {
				_ = os.Remove(path)
				_, err := fmt.Fprintf(stdout, "no simulator was running (stale state file %s removed)\n", path)
				return err
			}
			req, err := http.NewRequestWithContext(c.Context(), http.MethodPost, vars["RECYCLER_SIM_ADMIN"]+"shutdown", nil)
			if err != nil {
				return fmt.Errorf("sim down: %w", err)
			}
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			} else if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("sim down: signal pid %d: %w", pid, err)
			}
			// The simulator stops its control plane, then exits; wait for it (bounded).
			ticker := time.NewTicker(200 * time.Millisecond)
			defer ticker.Stop()
			deadline := time.After(60 * time.Second)
			for pidAlive(pid) {
				select {
				case <-c.Context().Done():
					return c.Context().Err()
				case <-deadline:
					return fmt.Errorf("sim down: pid %d still running after 60s; stop it with: kill %d", pid, pid)
				case <-ticker.C:
				}
			}
			_, err = fmt.Fprintln(stdout, "simulator stopped")
			return err
		},
	}
}

func newSimEnvCmd(stdout io.Writer, stateFlag *string) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print the environment variables of the running simulator (eval \"$(recycler sim env)\")",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			path, _, err := runningSim(*stateFlag)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read sim state: %w", err)
			}
			_, err = stdout.Write(b)
			return err
		},
	}
}

func newSimStatusCmd(stdout io.Writer, stateFlag *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show groups and instances (AWS view) next to their Nodes (Kubernetes view)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, vars, err := runningSim(*stateFlag)
			if err != nil {
				return err
			}
			st, err := fetchSimStatus(c.Context(), vars["RECYCLER_SIM_ADMIN"]+"status")
			if err != nil {
				return err
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", vars["KUBECONFIG"])
			if err != nil {
				return fmt.Errorf("sim status: kubeconfig: %w", err)
			}
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("sim status: %w", err)
			}
			nodes, err := client.CoreV1().Nodes().List(c.Context(), metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("sim status: list nodes: %w", err)
			}
			problems := writeSimStatus(stdout, st, nodes.Items)
			if len(problems) > 0 {
				return fmt.Errorf("AWS and Kubernetes disagree:\n  %s", strings.Join(problems, "\n  "))
			}
			_, err = fmt.Fprintln(stdout, "\nAWS and Kubernetes agree: every running instance has its Node and every Node its instance.")
			return err
		},
	}
}

func fetchSimStatus(ctx context.Context, url string) (sim.Status, error) {
	var st sim.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, fmt.Errorf("sim status: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("sim status: the simulator does not answer at %s: %w (is 'recycler sim up' still running?)", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("sim status: %w", err)
	}
	return st, nil
}

// writeSimStatus prints the table and returns the disagreements between the two views.
func writeSimStatus(w io.Writer, st sim.Status, nodes []corev1.Node) []string {
	byProvider := map[string]*corev1.Node{}
	for i := range nodes {
		byProvider[nodes[i].Spec.ProviderID] = &nodes[i]
	}
	seen := map[string]bool{}
	var problems []string
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(inst sim.InstanceStatus) {
		node, ready := "-", "-"
		if n := byProvider[inst.ProviderID]; n != nil {
			seen[inst.ProviderID] = true
			node, ready = n.Name, "NotReady"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready = "Ready"
				}
			}
			if inst.State != "running" {
				problems = append(problems, fmt.Sprintf("instance %s is %s but its Node %s exists", inst.ID, inst.State, n.Name))
			}
		} else if inst.State == "running" {
			problems = append(problems, fmt.Sprintf("instance %s is running but has no Node", inst.ID))
		}
		lc := inst.Lifecycle
		if lc == "" {
			lc = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", inst.ID, inst.AZ, inst.InstanceType, inst.State, lc, node, ready)
	}
	fmt.Fprintf(tw, "AWS %s at %s\n", st.Region, st.Endpoint)
	for _, g := range st.Groups {
		fmt.Fprintf(tw, "\ngroup %s\tmin %d\tmax %d\tdesired %d\tInService %d", g.Name, g.Min, g.Max, g.Desired, g.InService)
		if len(g.Suspended) > 0 {
			fmt.Fprintf(tw, "\tsuspended: %s", strings.Join(g.Suspended, ","))
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "  INSTANCE\tZONE\tTYPE\tEC2\tLIFECYCLE\tNODE\tREADY")
		for _, inst := range g.Instances {
			row(inst)
		}
	}
	if len(st.Standalone) > 0 {
		fmt.Fprintln(tw, "\nnot in a group (detached or terminated)")
		fmt.Fprintln(tw, "  INSTANCE\tZONE\tTYPE\tEC2\tLIFECYCLE\tNODE\tREADY")
		for _, inst := range st.Standalone {
			row(inst)
		}
	}
	for _, n := range nodes {
		if strings.HasPrefix(n.Spec.ProviderID, "aws:///") && !seen[n.Spec.ProviderID] {
			problems = append(problems, fmt.Sprintf("Node %s (%s) has no instance", n.Name, n.Spec.ProviderID))
		}
	}
	_ = tw.Flush()
	return problems
}

// runningSim finds the state file of the running simulator and reads its variables.
func runningSim(stateFlag string) (string, map[string]string, error) {
	path, err := simStatePath(stateFlag)
	if err != nil {
		return "", nil, err
	}
	vars, err := readSimState(path)
	return path, vars, err
}
