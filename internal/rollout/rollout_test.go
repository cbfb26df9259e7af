package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/recycler/recycler/internal/asl"
	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/window"
)

func TestDefinitionsPassTheStatesLanguageValidators(t *testing.T) {
	defs := map[string][]byte{"rollout": Definition(), "pause": PauseDefinition(), "abort": AbortDefinition()}
	for name, def := range defs {
		if _, err := asl.Parse(def); err != nil {
			t.Errorf("%s: our parser rejects it: %v", name, err)
		}
	}
	nodeDir, _ := filepath.Abs("../../tools/node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "asl-validator")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("asl-validator missing: run `make node-deps`")
		}
		t.Skip("asl-validator missing: run `make node-deps`")
	}
	for name, def := range defs {
		script := `const v = require("asl-validator"); const d = JSON.parse(require("fs").readFileSync(0, "utf8"));
const r = v(d, { checkArn: false, checkPaths: true }); if (!r.isValid) { console.log(JSON.stringify(r.errors)); process.exit(1); }`
		cmd := exec.Command("node", "-e", script)
		cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(nodeDir, "node_modules"))
		cmd.Stdin = strings.NewReader(string(def))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("asl-validator rejects the %s definition: %v\n%s", name, err, out)
		}
	}
}

// gateScript answers the gate per item, in turn (the last answer repeats): the ASL
// wiring of each decision, not the gate itself (that runs against the real control
// plane and simulated AWS in internal/scenario).
type gateScript struct {
	mu      sync.Mutex
	answers map[string][]GateResult
	recycle map[string]error // instance → the child's failure (nil: it succeeds)
	calls   []string
	n       map[string]int
}

func (g *gateScript) registry() asl.Registry {
	g.n = map[string]int{}
	return asl.Registry{
		recycle.FunctionPlaceholder: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
			var p struct {
				Task  string    `json:"task"`
				State IterState `json:"state"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, err
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			id := p.State.Item.InstanceID
			g.calls = append(g.calls, fmt.Sprintf("%s:gate(failure=%v)", id, p.State.Failure != nil))
			as := g.answers[id]
			a := as[min(g.n[id], len(as)-1)]
			g.n[id]++
			a.InstanceID = id
			return json.Marshal(a)
		},
		ResourceStartSync: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
			var p struct{ StateMachineArn, Name string }
			_ = json.Unmarshal(raw, &p)
			g.mu.Lock()
			defer g.mu.Unlock()
			g.calls = append(g.calls, "sync:"+p.Name)
			for id, err := range g.recycle {
				if strings.HasSuffix(p.Name, id) && err != nil {
					return nil, err
				}
			}
			return json.Marshal(map[string]string{"ExecutionArn": "x:" + p.Name, "Status": "SUCCEEDED"})
		},
		ResourceStop: func(context.Context, json.RawMessage) (json.RawMessage, error) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.calls = append(g.calls, "stop")
			return json.RawMessage(`{}`), nil
		},
	}
}

func TestMachinePaths(t *testing.T) {
	child := &ExecRef{Name: "r-i-1", Input: json.RawMessage(`{}`)}
	pause := &ExecRef{Name: "r-pause-i-1", Input: json.RawMessage(`{}`)}
	soon := time.Now().Add(-time.Second) // a due Wait: the runner goes on at once
	for _, tc := range []struct {
		name      string
		answers   []GateResult
		fail      error
		wantErr   string
		outcome   string // the item's state in the rollout's progress at the end
		wantCalls string
	}{
		{"go: the recycle runs and the node is replaced",
			[]GateResult{{Decision: DecisionGo, Child: child}}, nil, "", "replaced", "i-1:gate(failure=false) sync:r-i-1"},
		{"wait: held, then asked again",
			[]GateResult{{Decision: DecisionWait, Until: soon}, {Decision: DecisionWait, Until: soon}, {Decision: DecisionGo, Child: child}}, nil, "", "replaced",
			"i-1:gate(failure=false) i-1:gate(failure=false) i-1:gate(failure=false) sync:r-i-1"},
		{"paused: waits for the pause, then asks again",
			[]GateResult{{Decision: DecisionPaused, Pause: pause}, {Decision: DecisionGo, Child: child}}, nil, "", "replaced",
			"i-1:gate(failure=false) sync:r-pause-i-1 i-1:gate(failure=false) sync:r-i-1"},
		{"skip", []GateResult{{Decision: DecisionSkip, Reason: "gone"}}, nil, "", "skipped", "i-1:gate(failure=false)"},
		{"a failed recycle goes back to the gate with the failure, which decides",
			[]GateResult{{Decision: DecisionGo, Child: child}, {Decision: DecisionFailed, Reason: "rolled back"}},
			asl.Errorf("States.TaskFailed", `{"Status":"FAILED"}`), "", "failed",
			"i-1:gate(failure=false) sync:r-i-1 i-1:gate(failure=true)"},
		{"abort stops the rollout",
			[]GateResult{{Decision: DecisionAbort, Reason: "boom"}}, nil, "Recycler.RolloutAborted", "", "i-1:gate(failure=false) stop"},
		{"an unknown decision fails closed",
			[]GateResult{{Decision: "maybe"}}, nil, "Recycler.GateFailed", "", "i-1:gate(failure=false)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gateScript{answers: map[string][]GateResult{"i-1": tc.answers}, recycle: map[string]error{"i-1": tc.fail}}
			eng, err := engine.Open(context.Background(), engine.Options{Path: filepath.Join(t.TempDir(), "db"), Registry: g.registry()})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			in, err := StartInput("r", Input{Groups: []GroupInput{{Name: "ng", MaxInFlight: 1, Items: []ItemInput{{InstanceID: "i-1", Node: "n1"}}}}})
			if err != nil {
				t.Fatal(err)
			}
			ex, err := eng.Start(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			fin, err := eng.Wait(ctx, ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && fin.Error != tc.wantErr || tc.wantErr == "" && fin.Status != engine.StatusSucceeded {
				t.Fatalf("rollout ended %s %s (%s), want error %q", fin.Status, fin.Error, fin.Cause, tc.wantErr)
			}
			g.mu.Lock()
			calls := strings.Join(g.calls, " ")
			g.mu.Unlock()
			if calls != tc.wantCalls {
				t.Errorf("calls:\n got %s\nwant %s", calls, tc.wantCalls)
			}
			p, err := ReadProgress(ctx, eng, ex.ID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if tc.outcome != "" && p.Nodes[0].State != tc.outcome {
				t.Errorf("node state %q, want %q", p.Nodes[0].State, tc.outcome)
			}
		})
	}
}

func TestMaxInFlightPerGroupAcrossGroups(t *testing.T) {
	m, err := asl.Parse(Definition())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	running := map[string]int{}
	peak := map[string]int{}
	reg := asl.Registry{
		recycle.FunctionPlaceholder: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
			var p struct {
				State IterState `json:"state"`
			}
			_ = json.Unmarshal(raw, &p)
			return json.Marshal(GateResult{Decision: DecisionGo, InstanceID: p.State.Item.InstanceID,
				Child: &ExecRef{Name: p.State.Group + "/" + p.State.Item.InstanceID, Input: json.RawMessage(`{}`)}})
		},
		ResourceStartSync: func(_ context.Context, raw json.RawMessage) (json.RawMessage, error) {
			var p struct{ Name string }
			_ = json.Unmarshal(raw, &p)
			g := strings.Split(p.Name, "/")[0]
			mu.Lock()
			running[g]++
			peak[g] = max(peak[g], running[g])
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			running[g]--
			mu.Unlock()
			return json.RawMessage(`{"ExecutionArn":"x","Status":"SUCCEEDED"}`), nil
		},
	}
	var groups []GroupInput
	for gi, k := range []int{1, 3} {
		g := GroupInput{Name: fmt.Sprintf("g%d", gi), MaxInFlight: k}
		for i := range 9 {
			g.Items = append(g.Items, ItemInput{InstanceID: fmt.Sprintf("i-%d%d", gi, i)})
		}
		groups = append(groups, g)
	}
	in, _ := json.Marshal(Input{Groups: groups})
	if _, err := (&asl.Runner{Registry: reg, Clock: clock.RealClock{}, Name: "r"}).Run(context.Background(), m, in); err != nil {
		t.Fatal(err)
	}
	if peak["g0"] != 1 || peak["g1"] != 3 {
		t.Errorf("peak recycles in flight per group %v, want g0=1 g1=3", peak)
	}
}

func TestBalancedOrderLetsZonesTakeTurns(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var cands []Candidate
	// 5 in a, 3 in b, 2 in c; within a zone the oldest goes first.
	for i, z := range []string{"a", "a", "b", "a", "c", "b", "a", "c", "b", "a"} {
		cands = append(cands, Candidate{InstanceID: fmt.Sprintf("i-%02d", i), AZ: z, LaunchTime: t0.Add(time.Duration(10-i) * time.Hour)})
	}
	got := balanced(cands)
	var zones []string
	for _, c := range got {
		zones = append(zones, c.AZ)
	}
	if s := strings.Join(zones, ""); s != "abcabcabaa" {
		t.Errorf("zone order %s, want abcabcabaa", s)
	}
	if got[0].InstanceID != "i-09" || got[1].InstanceID != "i-08" {
		t.Errorf("oldest first within a zone: got %s, %s", got[0].InstanceID, got[1].InstanceID)
	}
}

func TestEstimatesFromActivitiesOrFlags(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// Newest first, as DescribeScalingActivities lists them.
	acts := []cloud.ScalingActivity{
		{Description: "Detaching EC2 instance: i-0000000a", Status: "Successful", Start: at(400), End: at(400)},
		{Description: "Launching a new EC2 instance: i-0000000c", Status: "Successful", Start: at(100), End: at(140)},
		{Description: "Moving EC2 instance to Standby: i-0000000a", Status: "Successful", Start: at(100), End: at(100)},
		{Description: "Launching a new EC2 instance: i-0000000b", Status: "Successful", Start: at(0), End: at(50)},
		{Description: "Launching a new EC2 instance.  Status Reason: no capacity", Status: "Failed", Start: at(0), End: at(1)},
		{Description: "Launching a new EC2 instance: i-0000000d", Status: "Successful", Start: at(0), End: at(30)},
	}
	boot, drain := estimates(acts, Options{})
	if time.Duration(boot.Duration) != 40*time.Second || !strings.Contains(boot.Source, "3 launches") {
		t.Errorf("boot %+v, want the median 40s of 3 launches", boot)
	}
	// Standby at 100 s, detach at 400 s: 300 s cycle minus the 40 s boot.
	if time.Duration(drain.Duration) != 260*time.Second || !strings.Contains(drain.Source, "1 recycles") {
		t.Errorf("drain %+v, want 260s from 1 recycle", drain)
	}
	boot, drain = estimates(nil, Options{DrainEstimate: time.Minute})
	if time.Duration(boot.Duration) != DefaultBoot || !strings.Contains(boot.Source, "--boot-estimate") || time.Duration(drain.Duration) != time.Minute {
		t.Errorf("without activities: boot %+v drain %+v", boot, drain)
	}
}

func TestScheduleRespectsSlotsCapAndWindows(t *testing.T) {
	// Monday 2026-11-30 00:50 UTC; window 01:00-01:25 daily; each recycle takes 10 min.
	now := time.Date(2026, 11, 30, 0, 50, 0, 0, time.UTC)
	g := func(name string, n, k int) GroupPlan {
		gp := GroupPlan{Name: name, MaxInFlight: k, Boot: Measured{Duration: Duration(4 * time.Minute)}, Drain: Measured{Duration: Duration(6 * time.Minute)}}
		for i := range n {
			gp.Items = append(gp.Items, Item{Order: i})
		}
		return gp
	}
	set, err := window.ParseAll([]string{"daily 01:00-01:25 UTC"})
	if err != nil {
		t.Fatal(err)
	}
	groups := []GroupPlan{g("a", 4, 2)}
	est := schedule(groups, 0, set, now)
	starts := func(gp GroupPlan) string {
		var s []string
		for _, it := range gp.Items {
			s = append(s, it.Start.Format("Jan2 15:04"))
		}
		return strings.Join(s, ",")
	}
	// Two slots: 01:00, 01:00, 01:10, 01:10 (all inside the window).
	if got := starts(groups[0]); got != "Nov30 01:00,Nov30 01:00,Nov30 01:10,Nov30 01:10" {
		t.Errorf("starts %s", got)
	}
	if time.Duration(est.Waiting) != 10*time.Minute || !est.End.Equal(time.Date(2026, 11, 30, 1, 20, 0, 0, time.UTC)) {
		t.Errorf("estimate %+v", est)
	}
	// Seven items: the fifth and sixth start at 01:20 (inside); the seventh, due at
	// 01:30, waits for the next day's window.
	groups = []GroupPlan{g("a", 7, 2)}
	schedule(groups, 0, set, now)
	if got := groups[0].Items[6].Start; !got.Equal(time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)) {
		t.Errorf("7th item starts %s, want the next window", got)
	}
	// A cap of 2 across two groups of 2 slots each halves the pace.
	groups = []GroupPlan{g("a", 2, 2), g("b", 2, 2)}
	est = schedule(groups, 2, nil, now)
	if time.Duration(est.Duration) != 20*time.Minute {
		t.Errorf("capped duration %s, want 20m", time.Duration(est.Duration))
	}
}

func TestAmountsAgesAndOptions(t *testing.T) {
	for s, want := range map[string]Amount{"3": {N: 3}, "25%": {N: 25, Percent: true}, " 0 ": {N: 0}} {
		if got, err := ParseAmount(s); err != nil || got != want {
			t.Errorf("ParseAmount(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"-1", "101%", "x", "2.5", "%"} {
		if _, err := ParseAmount(s); err == nil {
			t.Errorf("ParseAmount(%q) accepted", s)
		}
	}
	if got := (Amount{N: 10, Percent: true}).Of(5); got != 1 {
		t.Errorf("10%% of 5 = %d, want 1 (rounded up)", got)
	}
	// --max-unhealthy 10% of 10 nodes: one unhealthy is allowed, two are more.
	if a := (Amount{N: 10, Percent: true}); a.Exceeded(1, 10) || !a.Exceeded(2, 10) {
		t.Error("10% of 10: 1 must pass, 2 must exceed")
	}
	for s, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParseAge(s); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %s, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "d", "-3d", "30x", "0d"} {
		if _, err := ParseAge(s); err == nil {
			t.Errorf("ParseAge(%q) accepted", s)
		}
	}
	good := Options{Selection: Selection{Groups: []string{"ng-1"}, All: true}, MaxInFlight: Amount{N: 1},
		Settings: Settings{OnFailure: OnFailurePause, PauseTimeout: Duration(time.Hour), CheckSeconds: 5}, Request: recycle.NewRequest("")}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	bad := good
	bad.Groups, bad.All, bad.OnFailure, bad.Windows, bad.MaxInFlight = nil, false, "retry", []string{"Mon 25:00-26:00"}, Amount{}
	err := bad.Validate()
	for _, want := range []string{"no target", "no policy", "--on-failure \"retry\"", "--window", "--max-in-flight"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	both := good
	both.Drifted = true
	if err := both.Validate(); err == nil || !strings.Contains(err.Error(), "--all") {
		t.Errorf("--all with --drifted: %v", err)
	}
}
