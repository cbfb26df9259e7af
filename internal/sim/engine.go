package sim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// Terminated instances stay visible in DescribeInstances for about an hour (EC2 docs).
	terminatedVisibleFor = time.Hour
	// After a failed launch, Auto Scaling tries again later (it backs off; we use a fixed delay).
	launchRetryDelay = 10 * time.Second
	maxHookGlobal    = 48 * time.Hour
	causeTime        = "2006-01-02T15:04:05Z"
)

func (s *Server) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[s.rnd.IntN(16)]
	}
	return string(b)
}

func (s *Server) uuidLocked() string {
	h := s.hex(32)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

func (s *Server) sortedInstancesLocked() []*instance {
	out := make([]*instance, 0, len(s.instances))
	for _, i := range s.instances {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].LaunchTime.Equal(out[b].LaunchTime) {
			return out[a].LaunchTime.Before(out[b].LaunchTime)
		}
		return out[a].ID < out[b].ID
	})
	return out
}

func (s *Server) sortedGroupsLocked() []*group {
	out := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// advanceLocked applies every transition that is due at the clock's current time.
func (s *Server) advanceLocked() {
	now := s.clock.Now()
	for range 20 {
		changed := false
		for _, inst := range s.sortedInstancesLocked() {
			if s.stepInstanceLocked(inst, now) {
				changed = true
			}
		}
		for _, g := range s.sortedGroupsLocked() {
			if s.reconcileGroupLocked(g, now) {
				changed = true
			}
		}
		if !changed {
			return
		}
	}
}

// nextDeadlineLocked is the earliest time a scheduled transition falls due.
func (s *Server) nextDeadlineLocked() time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, inst := range s.instances {
		consider(inst.lifecycleAt)
		switch inst.State {
		case ec2Pending, ec2Stopping, ec2ShuttingDown:
			consider(inst.StateAt)
		case ec2Terminated:
			consider(inst.GoneAt)
		}
		for _, a := range inst.Actions {
			if !a.Done {
				consider(minTime(a.Deadline, a.GlobalDeadline))
			}
		}
	}
	for _, g := range s.groups {
		if len(s.countedLocked(g)) < g.Desired && !g.suspended("Launch") {
			consider(g.NextLaunchTry)
		}
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (s *Server) nodeInstance(inst *instance) Instance {
	return Instance{
		ID:           inst.ID,
		Name:         inst.PrivateDNS,
		ProviderID:   "aws:///" + inst.AZ + "/" + inst.ID,
		Region:       s.opts.Region,
		AZ:           inst.AZ,
		InstanceType: inst.InstanceType,
		Group:        inst.Tags["aws:autoscaling:groupName"],
		NeverReady:   inst.NeverReady,
	}
}

func (s *Server) stepInstanceLocked(inst *instance, now time.Time) bool {
	g := s.groups[inst.Group]
	changed, gone := s.stepEC2StateLocked(g, inst, now)
	if gone {
		return true
	}
	if inst.Lifecycle == lcPendingWait || inst.Lifecycle == lcTerminatingWait {
		if s.expireHookActionsLocked(g, inst, now) {
			changed = true
		}
	}
	if g == nil {
		return changed
	}
	if s.stepMemberLocked(g, inst, now) {
		changed = true
	}
	return changed
}

// stepEC2StateLocked moves the instance's EC2 state on once its transition is due;
// gone: a terminated instance outside any group was dropped from the listing.
func (s *Server) stepEC2StateLocked(g *group, inst *instance, now time.Time) (changed, gone bool) {
	switch inst.State {
	case ec2Pending:
		if !now.Before(inst.StateAt) {
			inst.State = ec2Running
			if !inst.registered {
				inst.registered = true
				s.nodeOps = append(s.nodeOps, nodeOp{register: true, inst: s.nodeInstance(inst)})
			}
			if g != nil && inst.Lifecycle == lcPending {
				s.launchedLocked(g, inst, inst.StateAt)
			}
			return true, false
		}
	case ec2Stopping:
		if !now.Before(inst.StateAt) {
			inst.State = ec2Stopped
			return true, false
		}
	case ec2ShuttingDown:
		if !now.Before(inst.StateAt) {
			inst.State = ec2Terminated
			inst.GoneAt = inst.StateAt.Add(terminatedVisibleFor)
			return true, false
		}
	case ec2Terminated:
		if inst.Group == "" && !now.Before(inst.GoneAt) {
			delete(s.instances, inst.ID)
			return true, true
		}
	}
	return false, false
}

// expireHookActionsLocked completes, with the hook's default result, every lifecycle
// action of a waiting instance whose heartbeat or global timeout passed, then moves
// the instance on if all its actions are done.
func (s *Server) expireHookActionsLocked(g *group, inst *instance, now time.Time) bool {
	changed := false
	for _, a := range inst.Actions {
		if !a.Done && !now.Before(minTime(a.Deadline, a.GlobalDeadline)) {
			a.Done = true
			a.Result = "ABANDON"
			if g != nil && g.Hooks[a.Hook] != nil {
				a.Result = g.Hooks[a.Hook].DefaultResult
			}
			changed = true
		}
	}
	if s.evaluateHooksLocked(inst, now) {
		changed = true
	}
	return changed
}

// stepMemberLocked steps what the group does to a member: due transitions, health
// checks and the replacement of an unhealthy instance, removal once terminated.
func (s *Server) stepMemberLocked(g *group, inst *instance, now time.Time) bool {
	changed := false
	if !inst.lifecycleAt.IsZero() && !now.Before(inst.lifecycleAt) {
		s.finishTransitionLocked(g, inst)
		changed = true
	}
	// Health checks: an EC2 instance that is not running is unhealthy; Standby and
	// lifecycle-wait instances are not health checked.
	if inst.Lifecycle == lcInService && inst.State != ec2Running && inst.State != ec2Pending && inst.Health == "Healthy" {
		inst.Health = "Unhealthy"
		changed = true
	}
	if inst.Lifecycle == lcInService && inst.Health == "Unhealthy" && !g.suspended("ReplaceUnhealthy") {
		a := s.startTerminateLocked(g, inst, now, fmt.Sprintf("At %s an instance was taken out of service in response to an EC2 instance status checks failure.", now.UTC().Format(causeTime)))
		g.triggers = append(g.triggers, a.Cause)
		changed = true
	}
	if (inst.Lifecycle == lcTerminating || inst.Lifecycle == lcTerminatingProceed) && inst.State == ec2Terminated {
		g.removeInstance(inst.ID)
		inst.Group = ""
		inst.Lifecycle = "Terminated"
		s.finishActivityLocked(inst, now, "Successful", "")
		changed = true
	}
	return changed
}

// finishTransitionLocked ends the transient state a user request started, at the
// moment it was due: EnteringStandby → Standby, Pending (after ExitStandby) →
// InService (Pending:Wait under launch hooks), Detaching → out of the group.
func (s *Server) finishTransitionLocked(g *group, inst *instance) {
	at := inst.lifecycleAt
	inst.lifecycleAt = time.Time{}
	switch inst.Lifecycle {
	case lcEnteringStandby:
		inst.Lifecycle = lcStandby
		s.finishActivityLocked(inst, at, "Successful", "")
	case lcPending:
		s.launchedLocked(g, inst, at)
	case lcDetaching:
		s.finishActivityLocked(inst, at, "Successful", "")
		g.removeInstance(inst.ID)
		inst.Group, inst.Lifecycle = "", ""
	}
}

// desiredChangedLocked records why the group will launch when desired capacity
// rises from g.Desired to n: each launch's cause will start with cause.
func (s *Server) desiredChangedLocked(g *group, n int, cause string) {
	for range n - g.Desired {
		g.triggers = append(g.triggers, cause)
	}
}

// launchedLocked: the instance finished booting.
func (s *Server) launchedLocked(g *group, inst *instance, at time.Time) {
	if hooks := g.hooksFor(transitionLaunching); len(hooks) > 0 {
		inst.Lifecycle = lcPendingWait
		s.startActionsLocked(inst, hooks, at)
		return
	}
	inst.Lifecycle = lcInService
	s.finishActivityLocked(inst, at, "Successful", "")
}

func (s *Server) startActionsLocked(inst *instance, hooks []*lifecycleHook, at time.Time) {
	inst.Actions = nil
	for _, h := range hooks {
		timeout := time.Duration(h.Timeout) * time.Second
		a := &hookAction{
			Hook:           h.Name,
			Token:          s.uuidLocked(),
			Deadline:       at.Add(timeout),
			GlobalDeadline: at.Add(min(maxHookGlobal, 100*timeout)),
		}
		inst.Actions = append(inst.Actions, a)
		if g := s.groups[inst.Group]; g != nil {
			s.emitLifecycleLocked(g, inst, h, a, at)
		}
	}
}

// evaluateHooksLocked moves an instance on once all its lifecycle actions are complete.
func (s *Server) evaluateHooksLocked(inst *instance, now time.Time) bool {
	abandon, allDone := false, true
	for _, a := range inst.Actions {
		abandon = abandon || (a.Done && a.Result == "ABANDON")
		allDone = allDone && a.Done
	}
	// An ABANDON ends the wait at once: the remaining hooks are not waited for.
	if !allDone && !abandon {
		return false
	}
	inst.Actions = nil
	switch inst.Lifecycle {
	case lcPendingWait:
		if abandon {
			inst.Lifecycle = lcTerminating
			s.finishActivityLocked(inst, now, "Cancelled", "Instance failed to complete user's Lifecycle Action: Lifecycle Action with token was abandoned: Lifecycle Action Completed with ABANDON Result")
			s.beginShutdownLocked(inst, now)
			return true
		}
		inst.Lifecycle = lcInService
		s.finishActivityLocked(inst, now, "Successful", "")
	case lcTerminatingWait:
		inst.Lifecycle = lcTerminatingProceed
		s.beginShutdownLocked(inst, now)
	}
	return true
}

func (s *Server) beginShutdownLocked(inst *instance, now time.Time) {
	switch inst.State {
	case ec2ShuttingDown, ec2Terminated:
		return
	}
	inst.State = ec2ShuttingDown
	inst.StateAt = now.Add(s.opts.StateDelay)
	s.deregisterLocked(inst)
}

func (s *Server) deregisterLocked(inst *instance) {
	if inst.registered {
		inst.registered = false
		s.nodeOps = append(s.nodeOps, nodeOp{register: false, inst: s.nodeInstance(inst)})
	}
}

// startTerminateLocked takes a group member out of service and terminates it,
// through Terminating:Wait when the group has termination lifecycle hooks.
func (s *Server) startTerminateLocked(g *group, inst *instance, now time.Time, cause string) *activity {
	if !inst.lifecycleAt.IsZero() {
		// Terminated in the middle of a standby or detach: that request ends here.
		inst.lifecycleAt = time.Time{}
		s.finishActivityLocked(inst, now, "Cancelled", "The instance was taken out of service before the request completed.")
	}
	act := s.newActivityLocked(g, now, "Terminating EC2 instance: "+inst.ID, cause, inst.AZ)
	inst.activity = act
	hooks := g.hooksFor(transitionTerminating)
	if len(hooks) > 0 && inst.State != ec2ShuttingDown && inst.State != ec2Terminated {
		inst.Lifecycle = lcTerminatingWait
		s.startActionsLocked(inst, hooks, now)
		return act
	}
	inst.Lifecycle = lcTerminating
	s.beginShutdownLocked(inst, now)
	return act
}

func (s *Server) newActivityLocked(g *group, now time.Time, description, cause, az string) *activity {
	a := &activity{
		ID:          s.uuidLocked(),
		Group:       g.Name,
		Description: description,
		Cause:       cause,
		Details:     fmt.Sprintf(`{"Subnet ID":"subnet-%s","Availability Zone":"%s"}`, strings.Repeat("0", 9)+az[len(az)-1:], az),
		Status:      "InProgress",
		Start:       now,
		Progress:    30,
	}
	g.Activities = append([]*activity{a}, g.Activities...)
	return a
}

func (s *Server) finishActivityLocked(inst *instance, now time.Time, status, message string) {
	if inst.activity == nil {
		return
	}
	inst.activity.Status = status
	inst.activity.StatusMessage = message
	inst.activity.End = now
	inst.activity.Progress = 100
	inst.activity = nil
}

func (s *Server) countedLocked(g *group) []*instance {
	var out []*instance
	for _, id := range g.Instances {
		if inst := s.instances[id]; inst != nil && countsTowardCapacity(inst.Lifecycle) {
			out = append(out, inst)
		}
	}
	return out
}

func (s *Server) azCountsLocked(g *group) map[string]int {
	counts := map[string]int{}
	for _, az := range g.AZs {
		counts[az] = 0
	}
	for _, inst := range s.countedLocked(g) {
		counts[inst.AZ]++
	}
	return counts
}

// reconcileGroupLocked keeps the number of counted instances equal to desired capacity.
func (s *Server) reconcileGroupLocked(g *group, now time.Time) bool {
	if g.Deleting {
		return s.deleteGroupLocked(g, now)
	}
	counted := s.countedLocked(g)
	switch {
	case len(counted) < g.Desired:
		return s.scaleOutLocked(g, len(counted), now)
	case len(counted) > g.Desired:
		return s.scaleInLocked(g, counted, now)
	default:
		return s.rebalanceLocked(g, counted, now)
	}
}

// deleteGroupLocked terminates a deleted group's instances; the group goes once they have.
func (s *Server) deleteGroupLocked(g *group, now time.Time) bool {
	changed := false
	for _, id := range append([]string(nil), g.Instances...) {
		inst := s.instances[id]
		if inst == nil {
			g.removeInstance(id)
			continue
		}
		if !strings.HasPrefix(inst.Lifecycle, lcTerminating) {
			s.startTerminateLocked(g, inst, now, fmt.Sprintf("At %s an instance was taken out of service in response to a user request (group deletion).", now.UTC().Format(causeTime)))
			changed = true
		}
	}
	if len(g.Instances) == 0 {
		delete(s.groups, g.Name)
		return true
	}
	return changed
}

// scaleOutLocked launches from the counted instances up to desired capacity; a failed
// launch is retried after launchRetryDelay.
func (s *Server) scaleOutLocked(g *group, from int, now time.Time) bool {
	if g.suspended("Launch") || now.Before(g.NextLaunchTry) {
		return false
	}
	for n := from; n < g.Desired; n++ {
		cause := fmt.Sprintf("At %s an instance was started in response to a difference between desired and actual capacity, increasing the capacity from %d to %d.", now.UTC().Format(causeTime), from, g.Desired)
		if len(g.triggers) > 0 {
			cause = g.triggers[0] + " " + cause
		}
		if !s.launchLocked(g, now, cause, false) {
			g.NextLaunchTry = now.Add(launchRetryDelay)
			return true
		}
		if len(g.triggers) > 0 {
			g.triggers = g.triggers[1:]
		}
	}
	return true
}

// scaleInLocked terminates counted instances down to desired capacity, by the
// termination policy.
func (s *Server) scaleInLocked(g *group, counted []*instance, now time.Time) bool {
	g.triggers = nil
	if g.suspended("Terminate") {
		return false
	}
	for _, inst := range counted {
		if inst.rebalance && inst.Lifecycle != lcInService {
			return false // AZRebalance launches before it terminates
		}
	}
	from := len(counted)
	for n := from; n > g.Desired; n-- {
		victim := s.pickVictimLocked(g)
		if victim == nil {
			return n != from
		}
		s.startTerminateLocked(g, victim, now, fmt.Sprintf("At %s an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from %d to %d.", now.UTC().Format(causeTime), from, g.Desired))
	}
	return true
}

// rebalanceLocked, at desired capacity with every instance InService, launches one
// instance when the zones differ by more than one (AZRebalance; scale-in follows).
func (s *Server) rebalanceLocked(g *group, counted []*instance, now time.Time) bool {
	g.triggers = nil
	for _, inst := range counted {
		inst.rebalance = false
		if inst.Lifecycle != lcInService {
			return false
		}
	}
	if g.Desired == 0 || g.suspended("AZRebalance") || g.suspended("Launch") || g.suspended("Terminate") {
		return false
	}
	lo, hi := -1, -1
	for _, c := range s.azCountsLocked(g) {
		if lo < 0 || c < lo {
			lo = c
		}
		if c > hi {
			hi = c
		}
	}
	if hi-lo <= 1 {
		return false
	}
	cause := fmt.Sprintf("At %s an instance was launched to rebalance instances across Availability Zones.", now.UTC().Format(causeTime))
	s.launchLocked(g, now, cause, true)
	return true
}

// pickVictimLocked follows the Default termination policy: the Availability Zone
// with the most instances, then the oldest launch template version, then the oldest instance.
func (s *Server) pickVictimLocked(g *group) *instance {
	counts := s.azCountsLocked(g)
	current := s.currentVersionLocked(g)
	var cands []*instance
	for _, inst := range s.countedLocked(g) {
		if !inst.Protected {
			cands = append(cands, inst)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	version := func(i *instance) int {
		n, _ := strconv.Atoi(i.LT.Version) // a launched instance's version is a number; none ("") counts as 0
		return n
	}
	sort.SliceStable(cands, func(a, b int) bool {
		x, y := cands[a], cands[b]
		if counts[x.AZ] != counts[y.AZ] {
			return counts[x.AZ] > counts[y.AZ]
		}
		if (version(x) == current) != (version(y) == current) {
			return version(y) == current
		}
		if version(x) != version(y) {
			return version(x) < version(y)
		}
		if !x.LaunchTime.Equal(y.LaunchTime) {
			return x.LaunchTime.Before(y.LaunchTime)
		}
		return x.ID < y.ID
	})
	return cands[0]
}

func (s *Server) currentVersionLocked(g *group) int {
	ref := g.launchRef()
	if ref == nil {
		return 0
	}
	lt := s.findTemplateLocked(ref.ID, ref.Name)
	if lt == nil {
		return 0
	}
	v, err := lt.resolve(ref.Version)
	if err != nil {
		return 0
	}
	return v.Number
}

func (s *Server) findTemplateLocked(id, name string) *launchTemplate {
	if id != "" {
		return s.templates[id]
	}
	for _, lt := range s.templates {
		if lt.Name == name {
			return lt
		}
	}
	return nil
}

func (s *Server) pickAZLocked(g *group) string {
	counts := s.azCountsLocked(g)
	best := g.AZs[0]
	for _, az := range g.AZs {
		if counts[az] < counts[best] {
			best = az
		}
	}
	return best
}

// launchLocked launches one instance for g; false when the launch failed (recorded as a Failed activity).
func (s *Server) launchLocked(g *group, now time.Time, cause string, rebalance bool) bool {
	az := s.pickAZLocked(g)
	ref := g.launchRef()
	lt := s.findTemplateLocked(ref.ID, ref.Name)
	fail := func(reason string) bool {
		a := s.newActivityLocked(g, now, "Launching a new EC2 instance.  Status Reason: "+reason, cause, az)
		a.Status, a.StatusMessage, a.End, a.Progress = "Failed", reason, now, 100
		return false
	}
	if lt == nil {
		return fail(fmt.Sprintf("The specified launch template, with template ID %s, does not exist. Launching EC2 instance failed.", ref.ID+ref.Name))
	}
	v, err := lt.resolve(ref.Version)
	if err != nil {
		return fail(fmt.Sprintf("The specified launch template version %s of template %s does not exist. Launching EC2 instance failed.", ref.Version, lt.ID))
	}
	itype := v.InstanceType
	if len(g.Overrides) > 0 && g.Overrides[0].InstanceType != "" {
		itype = g.Overrides[0].InstanceType
	}
	if s.launchFailsLocked() {
		return fail(fmt.Sprintf("We currently do not have sufficient %s capacity in the Availability Zone you requested (%s). Our system will be working on provisioning additional capacity. You can currently get %s capacity by not specifying an Availability Zone in your request or choosing %s. Launching EC2 instance failed.", itype, az, itype, strings.Join(otherZones(g.AZs, az), ", ")))
	}
	inst := s.newInstanceLocked(az, itype, v.ImageID, now)
	inst.LT = ltRef{ID: lt.ID, Name: lt.Name, Version: fmt.Sprint(v.Number)}
	for _, t := range v.InstanceTags {
		inst.Tags[t.Key] = t.Value
	}
	for _, t := range g.Tags {
		if t.PropagateAtLaunch {
			inst.Tags[t.Key] = t.Value
		}
	}
	inst.Tags["aws:autoscaling:groupName"] = g.Name
	inst.Tags["aws:ec2launchtemplate:id"] = lt.ID
	inst.Tags["aws:ec2launchtemplate:version"] = fmt.Sprint(v.Number)
	inst.Group = g.Name
	inst.Lifecycle = lcPending
	inst.Protected = g.NewProtected
	inst.rebalance = rebalance
	inst.NeverReady = s.neverReadyLocked()
	g.Instances = append(g.Instances, inst.ID)
	inst.activity = s.newActivityLocked(g, now, "Launching a new EC2 instance: "+inst.ID, cause, az)
	return true
}

func otherZones(all []string, except string) []string {
	var out []string
	for _, z := range all {
		if z != except {
			out = append(out, z)
		}
	}
	if len(out) == 0 {
		return []string{"another Availability Zone"}
	}
	return out
}

func (s *Server) newInstanceLocked(az, itype, image string, now time.Time) *instance {
	zi := 0
	for k, z := range s.opts.Zones {
		if z == az {
			zi = k
		}
	}
	s.ipCounter++
	ip := fmt.Sprintf("10.0.%d.%d", zi*32+s.ipCounter/250, s.ipCounter%250+4)
	domain := s.opts.Region + ".compute.internal"
	if s.opts.Region == "us-east-1" {
		domain = "ec2.internal"
	}
	inst := &instance{
		ID:           "i-" + s.hex(17),
		AZ:           az,
		InstanceType: itype,
		ImageID:      image,
		PrivateIP:    ip,
		PrivateDNS:   "ip-" + strings.ReplaceAll(ip, ".", "-") + "." + domain,
		State:        ec2Pending,
		StateAt:      now.Add(s.bootDelayLocked()),
		LaunchTime:   now,
		Tags:         map[string]string{},
		Health:       "Healthy",
	}
	s.instances[inst.ID] = inst
	return inst
}
