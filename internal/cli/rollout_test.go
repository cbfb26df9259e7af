package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/recycler/recycler/internal/rollout"
	"github.com/recycler/recycler/internal/sim"
)

// inService lists the group's InService instances now (earlier tests change the group).
func inService(f fixture) []sim.InstanceStatus {
	var out []sim.InstanceStatus
	for _, in := range f.env.AWS.Status().Groups[0].Instances {
		if in.Lifecycle == "InService" {
			out = append(out, in)
		}
	}
	return out
}

func TestPlanAndRolloutRefuseBadInput(t *testing.T) {
	f := simEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no target", []string{"--all"}, []string{"no target", "--group NAME", "--nodes"}},
		{"no policy", []string{"--group", f.group}, []string{"no policy", "--drifted", "--older-than 30d", "--all"}},
		{"all with drifted", []string{"--group", f.group, "--all", "--drifted"}, []string{"do not combine it with --drifted"}},
		{"max-in-flight zero", []string{"--group", f.group, "--all", "--max-in-flight", "0"}, []string{"--max-in-flight must be at least 1"}},
		{"max-in-flight garbage", []string{"--group", f.group, "--all", "--max-in-flight", "lots"}, []string{`--max-in-flight "lots"`, "25%"}},
		{"max-unhealthy over 100%", []string{"--group", f.group, "--all", "--max-unhealthy", "120%"}, []string{"--max-unhealthy", "0% to 100%"}},
		{"window out of range", []string{"--group", f.group, "--all", "--window", "Mon-Fri 01:00-25:00 Europe/Berlin"}, []string{"--window", `end: "25:00"`}},
		{"window zone unknown", []string{"--group", f.group, "--all", "--window", "Mon 01:00-02:00 Mars/Olympus"}, []string{`time zone "Mars/Olympus" is not in the tz database`}},
		{"on-failure unknown", []string{"--group", f.group, "--all", "--on-failure", "retry"}, []string{`--on-failure "retry" is not one of pause, continue, abort`}},
		{"older-than garbage", []string{"--group", f.group, "--older-than", "3x"}, []string{"--older-than", "30d, 2w"}},
		{"node selector unparsable", []string{"--nodes", "a in (", "--all"}, []string{`--nodes "a in (" is not a valid label selector`}},
		{"recycle option passes through and is checked", []string{"--group", f.group, "--all", "--max-wait", "0"}, []string{"--max-wait must be a positive duration"}},
		{"output yaml", []string{"--group", f.group, "--all", "-o", "yaml"}, []string{`-o "yaml": use text or json`}},
		{"unknown group", []string{"--group", "no-such-group", "--all"}, []string{`"no-such-group" does not exist`, "nothing was changed"}},
		{"no group with the tag", []string{"--group-tag", "team=nobody", "--all"}, []string{"no Auto Scaling group carries the tags", "nothing was changed"}},
	} {
		for _, cmd := range []string{"plan", "rollout"} {
			t.Run(cmd+" "+tc.name, func(t *testing.T) {
				state := filepath.Join(t.TempDir(), "recycler.db")
				before := observe(t, f)
				res := runCLI(t, append([]string{cmd, "--state", state}, tc.args...)...)
				if res.code != ExitBadInput {
					t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.code, ExitBadInput, res.stdout, res.stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
					}
				}
				assertUnchanged(t, before, observe(t, f))
				if _, err := os.Stat(state); err == nil {
					t.Errorf("a state file was created")
				}
			})
		}
	}
}

func TestPlanShowsCandidatesOrderBatchesAndChangesNothing(t *testing.T) {
	f := simEnv(t)
	nodes := inService(f)
	before := observe(t, f)
	res := runCLI(t, "plan", "--group", f.group, "--all", "--max-in-flight", "2", "--window", "daily 00:00-24:00 UTC", "--boot-estimate", "40s", "--drain-estimate", "2m", "-o", "json")
	if res.code != ExitOK {
		t.Fatalf("plan: exit %d\n%s", res.code, res.stderr)
	}
	var p rollout.Plan
	if err := json.Unmarshal([]byte(res.stdout), &p); err != nil {
		t.Fatalf("plan -o json is not a plan: %v\n%s", err, res.stdout)
	}
	g := p.Groups[0]
	if p.Candidates() != len(nodes) || g.MaxInFlight != min(2, len(nodes)) || g.Batches != (len(nodes)+1)/2 {
		t.Errorf("plan: %d candidates (want %d), %d at a time, %d batches", p.Candidates(), len(nodes), g.MaxInFlight, g.Batches)
	}
	for _, it := range g.Items {
		if !slices.ContainsFunc(nodes, func(n sim.InstanceStatus) bool { return n.ID == it.InstanceID && n.NodeName == it.Node }) || it.Reasons[0] != "--all" {
			t.Errorf("item %+v is not one of the group's InService nodes with its reason", it)
		}
	}
	// 40 s boot + 2 m drain per node, two at a time.
	if want := rollout.Duration(int64(g.Batches) * int64(160e9)); p.Estimate.Duration != want {
		t.Errorf("estimate %s, want %s", p.Estimate.Duration, want)
	}
	res = runCLI(t, "plan", "--group", f.group, "--all", "--max-in-flight", "2", "--window", "daily 00:00-24:00 UTC")
	for _, want := range []string{fmt.Sprintf("Plan: replace %d node(s) in 1 group(s) (--all)", len(nodes)), "Windows: daily 00:00-24:00 UTC (open now",
		"Group " + f.group, "BATCH", nodes[0].NodeName, "Estimate:"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("plan text lacks %q:\n%s", want, res.stdout)
		}
	}
	assertUnchanged(t, before, observe(t, f))
}

// Last in this file: it replaces nodes of the shared environment.
func TestRolloutPausedExitsThenResumeFinishes(t *testing.T) {
	f := simEnv(t)
	nodes := inService(f)
	if len(nodes) < 2 {
		t.Fatalf("need 2 InService nodes, have %d", len(nodes))
	}
	state := filepath.Join(t.TempDir(), "recycler.db")
	// The first replacement never turns Ready: that recycle fails and the rollout pauses.
	faults := f.env.AWS.Faults()
	faults.NeverReadyNext = 1
	if err := f.env.AWS.SetFaults(faults); err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf("topology.kubernetes.io/zone in (%s,%s)", nodes[0].AZ, nodes[1].AZ)
	res := runCLI(t, "rollout", "--state", state, "--group", f.group, "--nodes", sel, "--all", "--replacement-timeout", "4s", "-o", "json")
	if res.code != ExitNeedsPerson {
		t.Fatalf("rollout: exit %d, want %d (paused)\nstdout: %s\nstderr: %s", res.code, ExitNeedsPerson, res.stdout, res.stderr)
	}
	var out rolloutResult
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("-o json: %v\n%s", err, res.stdout)
	}
	if out.Outcome != "paused" || !out.Summary.Paused || out.Summary.Failed != 1 || !strings.Contains(res.stderr, "recycler resume "+out.ExecutionID) ||
		!strings.Contains(res.stderr, "Recycler.ReplacementTimeout") {
		t.Fatalf("paused result %+v\nstderr: %s", out, res.stderr)
	}
	st := runCLI(t, "status", "--state", state, out.ExecutionID)
	if st.code != ExitOK || !strings.Contains(st.stdout, "PAUSED") || !strings.Contains(st.stdout, "recycler resume "+out.ExecutionID) {
		t.Errorf("status of the paused rollout: exit %d\n%s%s", st.code, st.stdout, st.stderr)
	}
	res = runCLI(t, "resume", "--state", state, out.ExecutionID)
	// One node failed (rolled back), the other is replaced: done with failures.
	if res.code != ExitFailed || !strings.Contains(res.stderr, "1 replaced, 1 failed") {
		t.Fatalf("resume: exit %d, want %d\nstderr: %s", res.code, ExitFailed, res.stderr)
	}
	h := runCLI(t, "history", "--state", state, out.ExecutionID)
	for _, want := range []string{"rollout " + out.Name + " started: 2 node(s)", "paused: the recycle of", "replaced", "rollout Succeeded"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, h.stdout)
		}
	}
	st = runCLI(t, "status", "--state", state, out.ExecutionID)
	if !strings.Contains(st.stdout, "replaced") || !strings.Contains(st.stdout, "failed") || !strings.Contains(st.stdout, "(recycle ") {
		t.Errorf("status after the rollout:\n%s", st.stdout)
	}
}
