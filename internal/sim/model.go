package sim

import (
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Auto Scaling lifecycle states (types.LifecycleState in the SDK).
const (
	lcPending            = "Pending"
	lcPendingWait        = "Pending:Wait"
	lcInService          = "InService"
	lcStandby            = "Standby"
	lcEnteringStandby    = "EnteringStandby"
	lcDetaching          = "Detaching"
	lcTerminating        = "Terminating"
	lcTerminatingWait    = "Terminating:Wait"
	lcTerminatingProceed = "Terminating:Proceed"
)

// EC2 instance states with their documented codes.
const (
	ec2Pending      = "pending"
	ec2Running      = "running"
	ec2ShuttingDown = "shutting-down"
	ec2Terminated   = "terminated"
	ec2Stopping     = "stopping"
	ec2Stopped      = "stopped"
)

var ec2StateCode = map[string]int{
	ec2Pending: 0, ec2Running: 16, ec2ShuttingDown: 32, ec2Terminated: 48, ec2Stopping: 64, ec2Stopped: 80,
}

const (
	transitionLaunching   = "autoscaling:EC2_INSTANCE_LAUNCHING"
	transitionTerminating = "autoscaling:EC2_INSTANCE_TERMINATING"
)

// Scaling processes (SuspendProcesses), as documented.
var scalingProcesses = []string{
	"Launch", "Terminate", "AddToLoadBalancer", "AlarmNotification", "AZRebalance",
	"HealthCheck", "InstanceRefresh", "ReplaceUnhealthy", "ScheduledActions",
}

// ltRef names a launch template and a version string as the caller gave it
// ("$Latest", "$Default", "3" or empty).
type ltRef struct {
	ID, Name, Version string
}

type ltVersion struct {
	Number       int
	Description  string
	Created      time.Time
	ImageID      string
	InstanceType string
	// InstanceTags are the TagSpecification tags for resource type "instance".
	InstanceTags []tag
}

type launchTemplate struct {
	ID, Name string
	Created  time.Time
	Default  int
	Versions []*ltVersion // index = number-1
	Tags     []tag
}

func (lt *launchTemplate) latest() int { return len(lt.Versions) }

// resolve maps "$Latest", "$Default", "" (= $Default) or a number to a version.
func (lt *launchTemplate) resolve(v string) (*ltVersion, error) {
	switch v {
	case "", "$Default":
		return lt.Versions[lt.Default-1], nil
	case "$Latest":
		return lt.Versions[len(lt.Versions)-1], nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > len(lt.Versions) {
		return nil, fmt.Errorf("version %q", v)
	}
	return lt.Versions[n-1], nil
}

type tag struct{ Key, Value string }

type hookAction struct {
	Hook           string
	Token          string
	Deadline       time.Time
	GlobalDeadline time.Time
	Result         string
	Done           bool
}

type instance struct {
	ID, AZ, InstanceType, ImageID string
	PrivateIP, PrivateDNS         string
	State                         string
	StateAt                       time.Time // when the current EC2 transition completes
	LaunchTime                    time.Time
	GoneAt                        time.Time // terminated instances vanish from DescribeInstances then
	Tags                          map[string]string
	LT                            ltRef // Version is the resolved number
	Group                         string
	Lifecycle                     string
	Health                        string
	Protected                     bool
	Actions                       []*hookAction
	activity                      *activity
	NeverReady                    bool
	registered                    bool
	rebalance                     bool

	// lifecycleAt ends a transient lifecycle state a user request started
	// (EnteringStandby, Pending after ExitStandby, Detaching).
	lifecycleAt time.Time
}

func (i *instance) sortedTags() []tag {
	out := make([]tag, 0, len(i.Tags))
	for k, v := range i.Tags {
		out = append(out, tag{k, v})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out
}

type lifecycleHook struct {
	Name, Transition, DefaultResult string
	Metadata, TargetARN, RoleARN    string
	Timeout                         int
}

type asgTag struct {
	Key, Value        string
	PropagateAtLaunch bool
}

// override is a mixed-instances override; LT, when set, replaces the group's
// launch template for this instance type.
type override struct {
	InstanceType, WeightedCapacity string
	LT                             *ltRef
}

type group struct {
	Name, ARN           string
	Min, Max, Desired   int
	AZs                 []string
	LT                  *ltRef
	MixedLT             *ltRef
	Overrides           []override
	Suspended           map[string]string
	Hooks               map[string]*lifecycleHook
	Tags                []asgTag
	Created             time.Time
	HealthCheckType     string
	GracePeriod         int
	DefaultCooldown     int
	TerminationPolicies []string
	NewProtected        bool
	Instances           []string
	Deleting            bool
	NextLaunchTry       time.Time
	Activities          []*activity // newest first

	// triggers are the causes of the capacity the group still has to launch (a
	// standby without decrement, a raised desired capacity, an unhealthy instance):
	// each launch's cause starts with the one it answers, as AWS chains them.
	triggers []string
}

// template returns the launch template reference instances are launched from.
func (g *group) template() *ltRef {
	if g.LT != nil {
		return g.LT
	}
	return g.MixedLT
}

// launchRef is the template new instances get: with mixed instances the first
// override ("prioritized" strategy) may bring its own template.
func (g *group) launchRef() *ltRef {
	if len(g.Overrides) > 0 && g.Overrides[0].LT != nil {
		return g.Overrides[0].LT
	}
	return g.template()
}

func (g *group) suspended(p string) bool { _, ok := g.Suspended[p]; return ok }

func (g *group) hooksFor(transition string) []*lifecycleHook {
	var out []*lifecycleHook
	for _, h := range g.Hooks {
		if h.Transition == transition {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

func (g *group) removeInstance(id string) {
	for k, v := range g.Instances {
		if v == id {
			g.Instances = append(g.Instances[:k:k], g.Instances[k+1:]...)
			return
		}
	}
}

type activity struct {
	ID, Group, Description, Cause, Details string
	Status, StatusMessage                  string
	Start, End                             time.Time
	Progress                               int
}

// countsTowardCapacity: the states Auto Scaling compares with desired capacity.
func countsTowardCapacity(lc string) bool {
	switch lc {
	case lcPending, lcPendingWait, "Pending:Proceed", lcInService:
		return true
	}
	return false
}
