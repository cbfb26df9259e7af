package simkube

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/recycler/recycler/internal/sim"
	"github.com/recycler/recycler/internal/testenv"
)

func TestMain(m *testing.M) { testenv.RunMain(m) }

func clients(t *testing.T, s *sim.Server) (*autoscaling.Client, *ec2.Client) {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(s.Region()), config.WithBaseEndpoint(s.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "secret", "")))
	if err != nil {
		t.Fatal(err)
	}
	return autoscaling.NewFromConfig(cfg), ec2.NewFromConfig(cfg)
}

// nodesByProvider lists the Nodes whose providerID points at the given instances.
func nodesFor(ctx context.Context, env *testenv.Env, ids []string) (map[string]corev1.Node, error) {
	list, err := env.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Node{}
	for _, n := range list.Items {
		for _, id := range ids {
			if len(n.Spec.ProviderID) > len(id) && n.Spec.ProviderID[len(n.Spec.ProviderID)-len(id):] == id {
				out[id] = n
			}
		}
	}
	return out, nil
}

func ready(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestNodesFollowInstances: a Ready kwok Node appears for each InService instance,
// with AWS's providerID and labels, and disappears when the instance terminates;
// a "never Ready" fault keeps the replacement's Node NotReady.
func TestNodesFollowInstances(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	s := sim.New(sim.Options{Region: "eu-west-1", BootDelay: 200 * time.Millisecond, StateDelay: 100 * time.Millisecond, Nodes: sim.KwokNodes{Env: env}})
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close(context.Background())
		_ = s.DeregisterAll(context.Background())
	})
	asg, ec2c := clients(t, s)
	if err := s.CreateGroup(sim.GroupSpec{Name: "nodes-test", Min: 1, Max: 4, Desired: 2, InstanceType: "c5.xlarge"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	poll := func(what string, cond func(ctx context.Context) (bool, error)) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, cond); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	poll("two InService instances with Ready Nodes", func(ctx context.Context) (bool, error) {
		out, err := asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"nodes-test"}})
		if err != nil {
			return false, err
		}
		ids = ids[:0]
		for _, i := range out.AutoScalingGroups[0].Instances {
			if i.LifecycleState == astypes.LifecycleStateInService {
				ids = append(ids, *i.InstanceId)
			}
		}
		nodes, err := nodesFor(ctx, env, ids)
		if err != nil || len(ids) != 2 || len(nodes) != 2 {
			return false, err
		}
		for _, n := range nodes {
			if !ready(n) {
				return false, nil
			}
		}
		return true, nil
	})
	nodes, _ := nodesFor(ctx, env, ids)
	di, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids[:1]})
	if err != nil {
		t.Fatal(err)
	}
	inst := di.Reservations[0].Instances[0]
	n := nodes[ids[0]]
	if n.Name != aws.ToString(inst.PrivateDnsName) ||
		n.Spec.ProviderID != fmt.Sprintf("aws:///%s/%s", aws.ToString(inst.Placement.AvailabilityZone), ids[0]) ||
		n.Labels[corev1.LabelTopologyZone] != aws.ToString(inst.Placement.AvailabilityZone) ||
		n.Labels[corev1.LabelInstanceTypeStable] != "c5.xlarge" || n.Labels[sim.LabelNodegroup] != "nodes-test" {
		t.Fatalf("node %s %+v does not match instance %s", n.Name, n.Labels, ids[0])
	}

	// The next replacement's Node never becomes Ready; a second launch right after it is normal.
	if err := s.SetFaults(sim.Faults{NeverReadyNext: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(ids[0]), ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("nodes-test"), DesiredCapacity: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	poll("terminated instance's Node deleted", func(ctx context.Context) (bool, error) {
		got, err := nodesFor(ctx, env, ids[:1])
		return err == nil && len(got) == 0, err
	})
	var neverReady, normal string
	poll("both new instances InService, the normal one's Node Ready", func(ctx context.Context) (bool, error) {
		for _, i := range s.Status().Groups[0].Instances {
			switch {
			case i.ID == ids[1] || i.Lifecycle != "InService":
			case i.NeverReady:
				neverReady = i.ID
			default:
				normal = i.ID
			}
		}
		if neverReady == "" || normal == "" {
			return false, nil
		}
		got, err := nodesFor(ctx, env, []string{neverReady, normal})
		return err == nil && len(got) == 2 && ready(got[normal]), err
	})
	nodes, _ = nodesFor(ctx, env, []string{neverReady})
	if ready(nodes[neverReady]) {
		t.Fatalf("instance %s: Node %s became Ready despite the never-ready fault", neverReady, nodes[neverReady].Name)
	}

	// A stopped instance loses its Node too.
	if _, err := ec2c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: ids[1:2]}); err != nil {
		t.Fatal(err)
	}
	poll("stopped instance's Node deleted", func(ctx context.Context) (bool, error) {
		nodes, err := nodesFor(ctx, env, ids[1:2])
		return err == nil && len(nodes) == 0, err
	})
}

// TestUpGivesAWorkingClusterPlusCloud: sim.Up on the shared control plane creates
// groups whose Nodes are Ready and seeds the workloads.
func TestUpGivesAWorkingClusterPlusCloud(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	e, err := sim.Up(ctx, sim.UpOptions{Kube: env, Groups: 2, Nodes: 2, BootDelay: 200 * time.Millisecond, JobDuration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Down(context.Background()); err != nil {
			t.Error(err)
		}
	})
	st := e.AWS.Status()
	if len(st.Groups) != 2 || st.Groups[0].InService != 2 || st.Groups[1].InService != 2 {
		t.Fatalf("groups: %+v", st.Groups)
	}
	var ids []string
	for _, g := range st.Groups {
		for _, i := range g.Instances {
			ids = append(ids, i.ID)
		}
	}
	nodes, err := nodesFor(ctx, env, ids)
	if err != nil || len(nodes) != 4 {
		t.Fatalf("want 4 Nodes for %v, got %d (%v)", ids, len(nodes), err)
	}
	for _, n := range nodes {
		if !ready(n) {
			t.Fatalf("node %s not Ready after Up", n.Name)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := env.Client.CoreV1().Pods(sim.WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: sim.LabelComponent + "=" + sim.LongJobComponent})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 2, nil
	}); err != nil {
		t.Fatalf("long-job pods not running: %v", err)
	}
	for _, name := range []string{"web", "api"} {
		if _, err := env.Client.PolicyV1().PodDisruptionBudgets(sim.WorkloadNamespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("pdb %s: %v", name, err)
		}
	}
	if _, err := env.Client.AppsV1().DaemonSets(sim.WorkloadNamespace).Get(ctx, "node-agent", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}
