package rollout

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/recycle"
)

// State machine names, in both engines.
const (
	StateMachineName      = "recycler-rollout"
	PauseStateMachineName = "recycler-rollout-pause"
	AbortStateMachineName = "recycler-rollout-abort"
)

// ErrResumed is the error a pause execution is stopped with when a person resumes
// the rollout.
const ErrResumed = "Recycler.Resumed"

// Resources the rollout definitions name besides the recycle's function: Step
// Functions' own integrations, so the definitions deploy unchanged. The embedded
// engine registers functions under the same strings (Tasks.Registry).
const (
	// ResourceStartSync starts a child execution and waits for it to end (":2": the
	// child's output as JSON).
	ResourceStartSync = "arn:aws:states:::states:startExecution.sync:2"
	// ResourceStop stops an execution (the AWS SDK integration for StopExecution).
	ResourceStop = "arn:aws:states:::aws-sdk:sfn:stopExecution"
	// StateMachineARNPrefix stands where a deployment puts its region and account.
	StateMachineARNPrefix = "arn:aws:states:${Region}:${AccountId}:stateMachine:"
)

var (
	//go:embed rollout.asl.json
	definition []byte
	//go:embed pause.asl.json
	pauseDefinition []byte
	//go:embed abort.asl.json
	abortDefinition []byte
)

// Definition returns the rollout state machine (ASL JSON).
func Definition() []byte { return definition }

// PauseDefinition returns the machine of one pause of a rollout.
func PauseDefinition() []byte { return pauseDefinition }

// AbortDefinition returns the machine run when a rollout is aborted.
func AbortDefinition() []byte { return abortDefinition }

// machines are the state machines a rollout starts as children, by name.
func machines() map[string]engine.StartInput {
	def, _ := recycle.Definition("")
	return map[string]engine.StartInput{
		recycle.StateMachineName: {Definition: def,
			OnAbort: &engine.Rollback{StateMachine: recycle.RollbackStateMachineName, Definition: recycle.RollbackDefinition()}},
		PauseStateMachineName: {Definition: pauseDefinition},
	}
}

// StartInput is the rollout's execution: the plan as input, the abort machine on abort.
func StartInput(name string, in Input) (engine.StartInput, error) {
	raw, err := json.Marshal(in)
	if err != nil {
		return engine.StartInput{}, fmt.Errorf("encode rollout input: %w", err)
	}
	return engine.StartInput{StateMachine: StateMachineName, Name: name, Definition: definition, Input: raw,
		OnAbort: &engine.Rollback{StateMachine: AbortStateMachineName, Definition: abortDefinition}}, nil
}

// Input is the rollout execution's input: the gates' settings, the recycle every node
// gets, and per group the candidates in order.
type Input struct {
	Rollout Settings        `json:"rollout"`
	Request recycle.Request `json:"request"`
	Groups  []GroupInput    `json:"groups"`
}

// GroupInput is one group of the rollout.
type GroupInput struct {
	Name        string      `json:"name"`
	MaxInFlight int         `json:"maxInFlight"`
	Members     []string    `json:"members"` // instance ids when the plan was made
	Items       []ItemInput `json:"items"`
}

// ItemInput is one node to replace.
type ItemInput struct {
	InstanceID string `json:"instanceId"`
	Node       string `json:"node"`
	AZ         string `json:"az"`
	Batch      int    `json:"batch"`
	Reason     string `json:"reason"`
	// Attempt is which attempt at recycling the instance this is (1 = the first; see
	// recycle.ExecutionName), fixed when the rollout starts.
	Attempt int `json:"attempt,omitempty"`
}

// ChildName is the name of the item's recycle: the same name a `recycler recycle` of
// the instance would get (recycle.ExecutionName), so the two can never both run, and a
// restarted rollout finds (never repeats) the recycle it started.
func (it ItemInput) ChildName() string {
	return recycle.ExecutionName(it.InstanceID, max(1, it.Attempt))
}

// RecycleNames are the names of the recycles the rollout ex runs (one per node).
func RecycleNames(ex engine.Execution) []string {
	var in Input
	if json.Unmarshal(ex.Input, &in) != nil {
		return nil
	}
	var out []string
	for name := range in.children() {
		out = append(out, name)
	}
	return out
}

// children maps the names of the rollout's recycles to their items.
func (in *Input) children() map[string]ItemInput {
	out := map[string]ItemInput{}
	for _, g := range in.Groups {
		for _, it := range g.Items {
			out[it.ChildName()] = it
		}
	}
	return out
}

// Input returns the rollout's execution input for the plan.
func (p *Plan) Input(req recycle.Request) Input {
	in := Input{Rollout: p.Settings, Request: req}
	in.Request.Node, in.Request.InstanceID = "", ""
	for _, g := range p.Groups {
		if len(g.Items) == 0 {
			continue
		}
		gi := GroupInput{Name: g.Name, MaxInFlight: g.MaxInFlight, Members: g.Members}
		for _, it := range g.Items {
			gi.Items = append(gi.Items, ItemInput{InstanceID: it.InstanceID, Node: it.Node, AZ: it.AZ, Batch: it.Batch,
				Reason: strings.Join(it.Reasons, "; "), Attempt: it.Attempt})
		}
		in.Groups = append(in.Groups, gi)
	}
	return in
}

// pauseName names a pause of a rollout; key says what paused it (an instance whose
// recycle failed, a group over its health budget).
func pauseName(rollout, key string) string { return rollout + "-pause-" + key }

var (
	recycleARN = StateMachineARNPrefix + recycle.StateMachineName
	pauseARN   = StateMachineARNPrefix + PauseStateMachineName
)

// shortHash is 8 hex digits of s's SHA-256, for names that must stay short.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// pausePrefix finds a rollout's pauses among all executions.
func pausePrefix(rollout string) string { return rollout + "-pause-" }
