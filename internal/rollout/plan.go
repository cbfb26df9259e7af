package rollout

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/window"
)

// Plan is what a rollout will do: per group, the candidates in order with their
// batches and estimated times, the skipped nodes, the windows and the estimate. It is
// computed from a Selection without side effects, so `recycler plan` shows exactly
// what `recycler rollout` then runs.
type Plan struct {
	CreatedAt   time.Time   `json:"createdAt"`
	Selection   Selection   `json:"selection"`
	Settings    Settings    `json:"settings"`
	MaxInFlight Amount      `json:"maxInFlight"`
	Groups      []GroupPlan `json:"groups"`
	Skipped     []Skipped   `json:"skipped"`
	Estimate    Estimate    `json:"estimate"`
	Notes       []string    `json:"notes,omitempty"`
}

// GroupPlan is one group's part of the plan.
type GroupPlan struct {
	Name        string   `json:"name"`
	Desired     int      `json:"desired"`
	MaxSize     int      `json:"maxSize"`
	MaxInFlight int      `json:"maxInFlight"`
	Members     []string `json:"members"`
	UpToDate    int      `json:"upToDate"`
	Boot        Measured `json:"boot"`
	Drain       Measured `json:"drain"`
	Items       []Item   `json:"items"`
	Batches     int      `json:"batches"`
}

// Measured is an estimated duration and where it came from.
type Measured struct {
	Duration Duration `json:"duration"`
	Source   string   `json:"source"`
}

// Item is one candidate in its place: Order within its group (AZ-balanced), Batch =
// Order / MaxInFlight, and the estimated start and end.
type Item struct {
	Candidate
	Order int       `json:"order"`
	Batch int       `json:"batch"`
	Start time.Time `json:"estimatedStart"`
	End   time.Time `json:"estimatedEnd"`
	// Attempt at recycling the instance (set by Attempts when the rollout starts).
	Attempt int `json:"attempt,omitempty"`
}

// Estimate is the whole rollout's.
type Estimate struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration Duration  `json:"duration"`
	// Waiting is how much later the windows make it end.
	Waiting Duration `json:"waitingForWindows,omitempty"`
}

// Candidates counts the nodes to replace.
func (p *Plan) Candidates() int {
	n := 0
	for _, g := range p.Groups {
		n += len(g.Items)
	}
	return n
}

// NewPlan orders and estimates a selection. It refuses (with what to do) a group that
// has no room for even one replacement.
func NewPlan(sel *Selected, o Options) (*Plan, error) {
	windows, err := window.ParseAll(o.Windows)
	if err != nil {
		return nil, err
	}
	p := &Plan{CreatedAt: sel.At, Selection: o.Selection, Settings: o.Settings, MaxInFlight: o.MaxInFlight, Skipped: sel.Skipped}
	byGroup := map[string][]Candidate{}
	for _, c := range sel.Candidates {
		byGroup[c.Group] = append(byGroup[c.Group], c)
	}
	var problems []string
	for _, gv := range sel.Groups {
		cands := byGroup[gv.Name]
		gp := GroupPlan{Name: gv.Name, Desired: gv.Desired, MaxSize: gv.MaxSize, Members: gv.Members, UpToDate: gv.UpToDate}
		gp.Boot, gp.Drain = estimates(gv.Activities, o)
		k := max(1, o.MaxInFlight.Of(gv.Desired))
		if room := gv.MaxSize - gv.Live; !o.Request.NoSurge && !o.Request.AllowRaiseMax && len(cands) > 0 && room < k {
			if room < 1 {
				problems = append(problems, fmt.Sprintf("group %s is at MaxSize (%d live of %d): no room for a replacement; raise MaxSize, pass --allow-raise-max, or --no-surge",
					gv.Name, gv.Live, gv.MaxSize))
				continue
			}
			p.Notes = append(p.Notes, fmt.Sprintf("group %s: --max-in-flight %s means %d, limited to %d by MaxSize %d (%d live); raise MaxSize or pass --allow-raise-max for more",
				gv.Name, o.MaxInFlight, k, room, gv.MaxSize, gv.Live))
			k = room
		}
		gp.MaxInFlight = min(k, max(1, len(cands)))
		for i, c := range balanced(cands) {
			gp.Items = append(gp.Items, Item{Candidate: c, Order: i, Batch: i / gp.MaxInFlight})
			if c.NotReady {
				p.Notes = append(p.Notes, fmt.Sprintf("node %s is NotReady: it counts against --max-unhealthy until it is replaced", c.Node))
			}
		}
		if n := len(gp.Items); n > 0 {
			gp.Batches = (n + gp.MaxInFlight - 1) / gp.MaxInFlight
		}
		p.Groups = append(p.Groups, gp)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s (nothing was changed)", strings.Join(problems, "; "))
	}
	if o.MaxSurge > 0 {
		total := 0
		for _, g := range p.Groups {
			total += g.MaxInFlight
		}
		if total > o.MaxSurge {
			p.Notes = append(p.Notes, fmt.Sprintf("--max-surge %d: at most %d recycles at once across groups (the groups allow %d)", o.MaxSurge, o.MaxSurge, total))
		}
	}
	p.Estimate = schedule(p.Groups, o.MaxSurge, windows, sel.At)
	return p, nil
}

// balanced orders candidates so that consecutive ones are in different zones: zones
// take turns (the zone with the most candidates first), oldest instance first within
// a zone. Any window of as many consecutive items as there are zones then touches
// each zone at most once, so the group's zones lose (and regain) capacity evenly.
func balanced(cands []Candidate) []Candidate {
	byAZ := map[string][]Candidate{}
	for _, c := range cands {
		byAZ[c.AZ] = append(byAZ[c.AZ], c)
	}
	zones := make([]string, 0, len(byAZ))
	for z, cs := range byAZ {
		zones = append(zones, z)
		sort.SliceStable(cs, func(i, j int) bool {
			if !cs[i].LaunchTime.Equal(cs[j].LaunchTime) {
				return cs[i].LaunchTime.Before(cs[j].LaunchTime)
			}
			return cs[i].InstanceID < cs[j].InstanceID
		})
	}
	sort.Slice(zones, func(i, j int) bool {
		if len(byAZ[zones[i]]) != len(byAZ[zones[j]]) {
			return len(byAZ[zones[i]]) > len(byAZ[zones[j]])
		}
		return zones[i] < zones[j]
	})
	out := make([]Candidate, 0, len(cands))
	for round := 0; len(out) < len(cands); round++ {
		for _, z := range zones {
			if round < len(byAZ[z]) {
				out = append(out, byAZ[z][round])
			}
		}
	}
	return out
}

// estimates measures a group's boot time (launch activities: start to InService) and
// drain time (our past recycles: standby to detach, minus the boot), unless a flag
// gives them.
func estimates(acts []cloud.ScalingActivity, o Options) (boot, drain Measured) {
	var boots, cycles []time.Duration
	standby := map[string]time.Time{}
	// Activities come newest first; walk oldest first so a standby precedes its detach.
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		id := instanceIn(a.Description)
		switch {
		case strings.HasPrefix(a.Description, "Launching a new EC2 instance: ") && a.Status == "Successful" && a.End.After(a.Start):
			boots = append(boots, a.End.Sub(a.Start))
		case strings.Contains(a.Description, "to Standby") && id != "":
			standby[id] = a.Start
		case strings.HasPrefix(a.Description, "Detaching EC2 instance") && id != "":
			if at, ok := standby[id]; ok && a.Start.After(at) {
				cycles = append(cycles, a.Start.Sub(at))
			}
		}
	}
	switch {
	case o.BootEstimate > 0:
		boot = Measured{Duration(o.BootEstimate), "--boot-estimate"}
	case len(boots) > 0:
		boot = Measured{Duration(median(boots)), fmt.Sprintf("median of the group's last %d launches", len(boots))}
	default:
		boot = Measured{Duration(DefaultBoot), "default: no launch measured in the group's recent activities (set --boot-estimate)"}
	}
	switch {
	case o.DrainEstimate > 0:
		drain = Measured{Duration(o.DrainEstimate), "--drain-estimate"}
	case len(cycles) > 0:
		d := max(0, median(cycles)-time.Duration(boot.Duration))
		drain = Measured{Duration(d), fmt.Sprintf("median of the group's last %d recycles (standby to detach, minus boot)", len(cycles))}
	default:
		drain = Measured{Duration(DefaultDrain), "default: no recycle measured in the group's recent activities (set --drain-estimate)"}
	}
	return boot, drain
}

func instanceIn(desc string) string {
	i := strings.Index(desc, "i-")
	if i < 0 {
		return ""
	}
	j := i + 2
	for j < len(desc) && strings.ContainsRune("0123456789abcdef", rune(desc[j])) {
		j++
	}
	return desc[i:j]
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// schedule simulates the rollout: per group MaxInFlight slots, at most maxSurge
// recycles at once overall (0 = no cap), each taking boot + drain, none starting
// outside the windows. It fills in every item's estimated start and end.
func schedule(groups []GroupPlan, maxSurge int, windows window.Set, now time.Time) Estimate {
	est := simulate(groups, maxSurge, windows, now)
	if len(windows) > 0 {
		free := make([]GroupPlan, len(groups))
		for i, g := range groups {
			free[i] = g
			free[i].Items = slices.Clone(g.Items)
		}
		est.Waiting = Duration(est.End.Sub(simulate(free, maxSurge, nil, now).End))
	}
	return est
}

func simulate(groups []GroupPlan, maxSurge int, windows window.Set, now time.Time) Estimate {
	est := Estimate{Start: now, End: now}
	slots := make([]*timeHeap, len(groups))
	next := make([]int, len(groups))
	for i, g := range groups {
		slots[i] = newTimeHeap(g.MaxInFlight, now)
	}
	var global *timeHeap
	if maxSurge > 0 {
		global = newTimeHeap(maxSurge, now)
	}
	for {
		best, bestAt := -1, time.Time{}
		for i, g := range groups {
			if next[i] >= len(g.Items) {
				continue
			}
			at := (*slots[i])[0]
			if global != nil && (*global)[0].After(at) {
				at = (*global)[0]
			}
			if best < 0 || at.Before(bestAt) {
				best, bestAt = i, at
			}
		}
		if best < 0 {
			break
		}
		start := windows.NextOpen(bestAt)
		g := &groups[best]
		end := start.Add(time.Duration(g.Boot.Duration) + time.Duration(g.Drain.Duration))
		it := &g.Items[next[best]]
		it.Start, it.End = start, end
		next[best]++
		heap.Pop(slots[best])
		heap.Push(slots[best], end)
		if global != nil {
			heap.Pop(global)
			heap.Push(global, end)
		}
		if end.After(est.End) {
			est.End = end
		}
	}
	est.Duration = Duration(est.End.Sub(est.Start))
	return est
}

// timeHeap is a min-heap of the times slots become free.
type timeHeap []time.Time

func newTimeHeap(n int, at time.Time) *timeHeap {
	h := make(timeHeap, max(1, n))
	for i := range h {
		h[i] = at
	}
	return &h
}

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *timeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Lister finds executions by name (*engine.Engine).
type Lister interface {
	List(ctx context.Context, f engine.ListFilter) ([]engine.Execution, error)
}

// Attempts numbers each candidate's recycle after the ones the state file already
// holds for its instance (recycle.ExecutionName: "i-…", then "i-…-2", …), and skips a
// candidate whose instance is being recycled right now. Order, batches and the
// estimate are then those of the candidates left.
func (p *Plan) Attempts(ctx context.Context, l Lister) error {
	for gi := range p.Groups {
		g := &p.Groups[gi]
		kept := g.Items[:0]
		for _, it := range g.Items {
			exs, err := l.List(ctx, engine.ListFilter{StateMachine: recycle.StateMachineName, NamePrefix: it.InstanceID})
			if err != nil {
				return fmt.Errorf("earlier recycles of %s: %w", it.InstanceID, err)
			}
			last, running := recycle.Attempts(it.InstanceID, exs)
			if running != nil {
				p.Skipped = append(p.Skipped, Skipped{Node: it.Node, InstanceID: it.InstanceID, Group: g.Name, Reason: "already being recycled by execution " + running.ID})
				continue
			}
			it.Attempt = last + 1
			kept = append(kept, it)
		}
		g.Items = kept
		for i := range g.Items {
			g.Items[i].Order, g.Items[i].Batch = i, i/max(1, g.MaxInFlight)
		}
		g.Batches = (len(g.Items) + max(1, g.MaxInFlight) - 1) / max(1, g.MaxInFlight)
	}
	windows, err := window.ParseAll(p.Settings.Windows)
	if err != nil {
		return err
	}
	p.Estimate = schedule(p.Groups, p.Settings.MaxSurge, windows, p.CreatedAt)
	return nil
}
