package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/recycler/recycler/internal/testenv"
)

// Workload labels seeded by Up; Recycler's drain selects the long jobs by LabelComponent=LongJobComponent.
const (
	WorkloadNamespace = "demo"
	LabelComponent    = "app.kubernetes.io/component"
	LongJobComponent  = "long-job"
)

// UpOptions configure Up. Zero values give the demo defaults.
type UpOptions struct {
	Groups    int           // Auto Scaling groups; default 1
	Nodes     int           // nodes per group; default 3
	Workloads string        // "default" (Deployments+PDBs, long jobs, a DaemonSet) or "none"; default "default"
	BootDelay time.Duration // launch → InService and Node registered; default 5s
	// JobDuration: how long the long-job pods run before they succeed; default 10m.
	JobDuration time.Duration
	Region      string // default us-east-1
	Addr        string // AWS endpoint listen address; default 127.0.0.1:0
	// ReadyTimeout bounds the wait for every Node to be Ready; default 3m.
	ReadyTimeout time.Duration
	Testenv      testenv.Options
	// Kube, when set, is used instead of starting a control plane (Down then leaves
	// it running and only removes this environment's Nodes).
	Kube     *testenv.Env
	Logger   *slog.Logger
	Progress io.Writer
	Seed     uint64
	// EKS, when set, makes the environment EKS-like (needs Kube unset): see EKSOptions.
	EKS *EKSOptions
}

// EKSOptions make Up start the control plane the way EKS runs it: the
// apiserver asks aws-iam-authenticator (verifying against this simulator's
// STS) about bearer tokens, and DescribeCluster of Cluster answers with the
// apiserver's endpoint and CA. So `--cluster` and the Lambda connect with
// native EKS auth, no kubeconfig.
type EKSOptions struct {
	// Cluster is the EKS cluster name; default DefaultCluster.
	Cluster string
	// Mappings of IAM principals to Kubernetes users and groups, after the
	// default one: the static test user (AccessKeyID) is "sim-admin" in
	// system:masters, as EKS makes a cluster's creator admin.
	Mappings []Mapping
}

// DefaultCluster is the EKS cluster name of an EKS-like environment.
const DefaultCluster = "recycler-sim"

// Environment is a running control plane plus simulated AWS.
type Environment struct {
	Kube   *testenv.Env
	AWS    *Server
	Region string
	Groups []string
	// Cluster and Authenticator are set in an EKS-like environment (UpOptions.EKS).
	Cluster       string
	Authenticator *Authenticator
	opts          UpOptions
	ownKube       bool
}

// Up starts the control plane (kwok nodes) and the simulated AWS endpoint, creates
// the groups, waits until every Node is Ready and seeds the workloads. Call Down.
func Up(ctx context.Context, opts UpOptions) (*Environment, error) {
	if opts.Groups == 0 {
		opts.Groups = 1
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Workloads == "" {
		opts.Workloads = "default"
	}
	if opts.BootDelay == 0 {
		opts.BootDelay = 5 * time.Second
	}
	if opts.JobDuration == 0 {
		opts.JobDuration = 10 * time.Minute
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 3 * time.Minute
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	switch {
	case opts.Groups < 0 || opts.Nodes < 0:
		return nil, fmt.Errorf("sim up: --groups and --nodes must be positive (got %d, %d)", opts.Groups, opts.Nodes)
	case opts.Workloads != "default" && opts.Workloads != "none":
		return nil, fmt.Errorf("sim up: unknown workload set %q: use \"default\" or \"none\"", opts.Workloads)
	}
	if opts.Testenv.Progress == nil {
		opts.Testenv.Progress = opts.Progress
	}
	if opts.EKS != nil && opts.Kube != nil {
		return nil, errors.New("sim up: an EKS-like environment starts its own control plane (its apiserver asks aws-iam-authenticator): leave Kube unset")
	}
	aws := New(Options{Region: opts.Region, BootDelay: opts.BootDelay, Logger: opts.Logger, Seed: opts.Seed})
	if err := aws.Start(opts.Addr); err != nil {
		return nil, fmt.Errorf("sim up: %w", err)
	}
	env := &Environment{AWS: aws, Region: aws.Region(), opts: opts, ownKube: opts.Kube == nil}
	fail := func(err error) (*Environment, error) {
		return nil, errors.Join(err, env.Down(context.WithoutCancel(ctx)))
	}
	if opts.EKS != nil {
		env.Cluster = opts.EKS.Cluster
		if env.Cluster == "" {
			env.Cluster = DefaultCluster
		}
		fmt.Fprintln(opts.Progress, "starting aws-iam-authenticator (verifies EKS tokens against the simulated STS)…")
		mappings := append([]Mapping{{ARN: aws.defaultIdentity().ARN, Username: "sim-admin", Groups: []string{"system:masters"}}}, opts.EKS.Mappings...)
		authn, err := aws.StartAuthenticator(ctx, AuthenticatorOptions{ClusterID: env.Cluster, Mappings: mappings})
		if err != nil {
			return fail(fmt.Errorf("sim up: %w", err))
		}
		env.Authenticator = authn
		opts.Testenv.TokenWebhookConfig = authn.WebhookKubeconfig
	}
	env.Kube = opts.Kube
	if env.Kube == nil {
		fmt.Fprintln(opts.Progress, "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)…")
		kube, err := testenv.Start(ctx, opts.Testenv)
		if err != nil {
			return fail(fmt.Errorf("sim up: start control plane: %w", err))
		}
		env.Kube = kube
	}
	aws.setNodes(KwokNodes{Env: env.Kube})
	if opts.EKS != nil {
		if err := aws.CreateCluster(ClusterSpec{Name: env.Cluster, Endpoint: env.Kube.Config.Host, CAData: env.Kube.Config.CAData}); err != nil {
			return fail(fmt.Errorf("sim up: %w", err))
		}
	}
	fmt.Fprintf(opts.Progress, "simulated AWS at %s; creating %d group(s) of %d node(s)…\n", aws.URL(), opts.Groups, opts.Nodes)
	for g := 1; g <= opts.Groups; g++ {
		name := fmt.Sprintf("ng-%d", g)
		if err := aws.CreateGroup(GroupSpec{Name: name, Min: 1, Max: 2 * opts.Nodes, Desired: opts.Nodes}); err != nil {
			return fail(fmt.Errorf("sim up: %w", err))
		}
		env.Groups = append(env.Groups, name)
	}
	readyCtx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	if err := env.WaitNodesReady(readyCtx, opts.Groups*opts.Nodes); err != nil {
		return fail(fmt.Errorf("sim up: %w", err))
	}
	if opts.Workloads == "default" {
		fmt.Fprintln(opts.Progress, "seeding workloads (Deployments with PDBs, long jobs, a DaemonSet)…")
		if err := env.SeedWorkloads(ctx); err != nil {
			return fail(fmt.Errorf("sim up: %w", err))
		}
	}
	return env, nil
}

// WaitNodesReady waits until n Nodes are Ready and every InService instance has one.
func (e *Environment) WaitNodesReady(ctx context.Context, n int) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		nodes, err := e.Kube.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil //nolint:nilerr // a failed List is retried at the next poll; the wait's error names it (last)
		}
		ready := map[string]bool{}
		for _, node := range nodes.Items {
			ready[node.Spec.ProviderID] = nodeReady(&node)
		}
		count := 0
		for _, g := range e.AWS.Status().Groups {
			for _, inst := range g.Instances {
				if inst.Lifecycle != lcInService {
					continue
				}
				if !ready[inst.ProviderID] {
					last = fmt.Sprintf("instance %s (%s) has no Ready Node yet", inst.ID, inst.NodeName)
					return false, nil
				}
				count++
			}
		}
		last = fmt.Sprintf("%d of %d nodes Ready", count, n)
		return count >= n, nil
	})
	if err != nil {
		return fmt.Errorf("wait for nodes: %s: %w", last, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Vars are the environment variables that point kubectl, the AWS CLI/SDKs and recycler here.
func (e *Environment) Vars() [][2]string {
	vars := [][2]string{
		{"KUBECONFIG", e.Kube.Kubeconfig},
		{"AWS_ENDPOINT_URL", e.AWS.URL()},
		{"AWS_REGION", e.Region},
		{"AWS_DEFAULT_REGION", e.Region}, // AWS CLI v1
		{"AWS_ACCESS_KEY_ID", AccessKeyID},
		{"AWS_SECRET_ACCESS_KEY", SecretAccessKey},
		{"AWS_EC2_METADATA_DISABLED", "true"},
		{"RECYCLER_SIM_ADMIN", e.AWS.URL() + "/_sim/"},
	}
	if e.Cluster != "" {
		vars = append(vars, e.EKSVars()...)
	}
	return vars
}

// FunctionVars is the environment the Lambda service gives the Recycler function in
// this environment: the role's session keys instead of the admin's, its cluster (EKS
// auth), the endpoints, no kubeconfig.
func (e *Environment) FunctionVars(role Identity) [][2]string {
	var vars [][2]string
	for _, kv := range e.Vars() {
		switch kv[0] {
		case "KUBECONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RECYCLER_SIM_ADMIN":
		default:
			vars = append(vars, kv)
		}
	}
	return append(vars, [2]string{"AWS_ACCESS_KEY_ID", role.AccessKeyID}, [2]string{"AWS_SECRET_ACCESS_KEY", role.SecretAccessKey},
		[2]string{"AWS_SESSION_TOKEN", role.SessionToken})
}

// EKSVars point a program at the EKS-like environment's STS the way EKS needs
// it: tokens must name the real STS host (aws-iam-authenticator refuses any
// other), which this simulator answers through its HTTPS proxy.
func (e *Environment) EKSVars() [][2]string {
	return [][2]string{
		{"RECYCLER_CLUSTER", e.Cluster},
		{"AWS_ENDPOINT_URL_STS", "https://sts." + e.Region + ".amazonaws.com"},
		{"HTTPS_PROXY", e.AWS.URL()},
		{"NO_PROXY", "127.0.0.1,localhost"}, // the simulator and the apiserver: direct
		{"SSL_CERT_FILE", filepath.Join(e.Authenticator.Dir, "simulated-aws-ca.pem")},
		// The SDKs trust AWS_CA_BUNDLE instead of the system roots when it is set.
		{"AWS_CA_BUNDLE", filepath.Join(e.Authenticator.Dir, "simulated-aws-ca.pem")},
	}
}

// Down stops the simulated AWS and the control plane, leaving nothing behind.
func (e *Environment) Down(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stopAuthn, stopKube error
	if e.Authenticator != nil {
		stopAuthn = e.Authenticator.Stop()
	}
	if e.Kube == nil {
		return errors.Join(e.AWS.Close(ctx), stopAuthn)
	}
	if !e.ownKube {
		return errors.Join(e.AWS.Close(ctx), e.AWS.DeregisterAll(ctx), stopAuthn)
	}
	stopKube = e.Kube.Stop()
	return errors.Join(e.AWS.Close(ctx), stopKube, stopAuthn)
}

// SeedWorkloads creates the demo workloads in namespace "demo": Deployments "web"
// (PDB maxUnavailable 1) and "api" (PDB minAvailable 2), a Job of long-running pods
// labelled app.kubernetes.io/component=long-job that succeed after JobDuration, and
// a DaemonSet "node-agent".
func (e *Environment) SeedWorkloads(ctx context.Context) error {
	c := e.Kube.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: WorkloadNamespace}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("seed workloads: namespace: %w", err)
	}
	nodes := max(1, e.opts.Groups*e.opts.Nodes)
	podSpec := func() corev1.PodSpec {
		return corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.k8s.io/pause:3.10",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{}},
			}},
			TerminationGracePeriodSeconds: ptr.To[int64](30),
		}
	}
	labels := func(app string) map[string]string { return map[string]string{"app": app} }
	for _, d := range []struct {
		name     string
		replicas int32
		pdb      policyv1.PodDisruptionBudgetSpec
	}{
		{"web", int32(max(2, nodes)), policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
		{"api", 3, policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(2))}},
	} {
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: d.name, Namespace: WorkloadNamespace},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(d.replicas),
				Selector: &metav1.LabelSelector{MatchLabels: labels(d.name)},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(d.name)}, Spec: podSpec()},
			},
		}
		if _, err := c.AppsV1().Deployments(WorkloadNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("seed workloads: deployment %s: %w", d.name, err)
		}
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: d.name, Namespace: WorkloadNamespace}, Spec: d.pdb}
		pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: labels(d.name)}
		if _, err := c.PolicyV1().PodDisruptionBudgets(WorkloadNamespace).Create(ctx, pdb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("seed workloads: pdb %s: %w", d.name, err)
		}
	}
	jobPods := int32(max(1, nodes/2))
	jobSpec := podSpec()
	jobSpec.RestartPolicy = corev1.RestartPolicyNever
	jobSpec.TerminationGracePeriodSeconds = ptr.To[int64](600)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "report", Namespace: WorkloadNamespace},
		Spec: batchv1.JobSpec{
			Parallelism: ptr.To(jobPods),
			Completions: ptr.To(jobPods),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "report", LabelComponent: LongJobComponent},
					Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: e.opts.JobDuration.String()},
				},
				Spec: jobSpec,
			},
		},
	}
	if _, err := c.BatchV1().Jobs(WorkloadNamespace).Create(ctx, job, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("seed workloads: job: %w", err)
	}
	dsSpec := podSpec()
	dsSpec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: WorkloadNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels("node-agent")},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels("node-agent")}, Spec: dsSpec},
		},
	}
	if _, err := c.AppsV1().DaemonSets(WorkloadNamespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("seed workloads: daemonset: %w", err)
	}
	return nil
}

// setNodes installs the Node registry once the control plane runs (an EKS-like
// environment starts the simulator first: the apiserver needs its STS).
func (s *Server) setNodes(r NodeRegistry) {
	s.nodeMu.Lock()
	defer s.nodeMu.Unlock()
	s.opts.Nodes = r
}

// BindGroup gives a Kubernetes group (one an EKS mapping names) a cluster role
// named after it with these rules, as an EKS access entry plus RBAC would.
func (e *Environment) BindGroup(ctx context.Context, group string, rules []rbacv1.PolicyRule) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: group}, Rules: rules}
	if _, err := e.Kube.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bind group %s: %w", group, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: group},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: group},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: group}},
	}
	if _, err := e.Kube.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bind group %s: %w", group, err)
	}
	return nil
}
