package kube

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors; the typed errors below match them with errors.Is, and carry
// the details for errors.As.
var (
	ErrNodeNotFound      = errors.New("node not found")
	ErrInvalidNodeName   = errors.New("invalid node name")
	ErrInvalidProviderID = errors.New("invalid provider id")
	ErrInvalidInstanceID = errors.New("invalid instance id")
	ErrInvalidSelector   = errors.New("invalid pod selector")
	ErrNodeHeld          = errors.New("node is held by another recycle")
	ErrEvictionBlocked   = errors.New("eviction blocked by a PodDisruptionBudget")
	// ErrAmbiguousInstance: several Nodes carry the same instance's providerID.
	ErrAmbiguousInstance = errors.New("several nodes claim the instance")
	// ErrNotFenced: DeleteNode refuses a node that Recycler has not fenced.
	ErrNotFenced = errors.New("node is not fenced by Recycler; refusing to delete it")
)

// NodeNotFoundError says no Node has the given name or instance ID.
type NodeNotFoundError struct {
	Name       string // set when looked up by name
	InstanceID string // set when looked up by instance ID
}

func (e *NodeNotFoundError) Error() string {
	if e.InstanceID != "" {
		return fmt.Sprintf("no node has providerID for instance %s: check the instance ID, or wait until the instance has joined the cluster", e.InstanceID)
	}
	return fmt.Sprintf("node %q not found: check the name with `kubectl get nodes`", e.Name)
}

func (e *NodeNotFoundError) Is(target error) bool { return target == ErrNodeNotFound }

// ProviderIDError says a spec.providerID (or an instance ID) is malformed.
type ProviderIDError struct {
	Value  string
	Reason string
}

func (e *ProviderIDError) Error() string {
	return fmt.Sprintf("malformed provider id %q: %s (want aws:///<availability-zone>/<instance-id>, e.g. aws:///us-east-1a/i-0123456789abcdef0)", e.Value, e.Reason)
}

func (e *ProviderIDError) Is(target error) bool { return target == ErrInvalidProviderID }

// InstanceIDError says a string is not an EC2 instance ID.
type InstanceIDError struct{ Value string }

func (e *InstanceIDError) Error() string {
	return fmt.Sprintf("malformed instance id %q: want i- followed by 8 or 17 lowercase hex digits, e.g. i-0123456789abcdef0", e.Value)
}

func (e *InstanceIDError) Is(target error) bool { return target == ErrInvalidInstanceID }

// SelectorError says a pod label selector or namespace given by the user is invalid.
type SelectorError struct {
	Field  string // "selector" or "namespace"
	Value  string
	Reason string
}

func (e *SelectorError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *SelectorError) Is(target error) bool { return target == ErrInvalidSelector }

// NodeHeldError says another execution has fenced the node (it is being recycled).
type NodeHeldError struct {
	Node        string
	HeldBy      string // execution ID recorded on the node
	Since       time.Time
	ExecutionID string // the execution that asked
}

func (e *NodeHeldError) Error() string {
	return fmt.Sprintf("node %s is already being recycled by execution %s (fenced since %s); execution %s leaves it alone",
		e.Node, e.HeldBy, e.Since.UTC().Format(time.RFC3339), e.ExecutionID)
}

func (e *NodeHeldError) Is(target error) bool { return target == ErrNodeHeld }

// EvictionBlockedError says a PodDisruptionBudget refused an eviction. It is not
// final: retry the eviction at NotBefore (RetryAfter from the time of the refusal).
type EvictionBlockedError struct {
	Namespace, Pod string
	PDBs           []string // names of the budgets (in Namespace) that select the pod
	Message        string   // the API server's explanation
	Attempt        int      // the attempt that was refused (0 = first)
	RetryAfter     time.Duration
	NotBefore      time.Time
}

func (e *EvictionBlockedError) Error() string {
	pdbs := "an unknown PodDisruptionBudget"
	if len(e.PDBs) > 0 {
		pdbs = "PodDisruptionBudget " + strings.Join(e.PDBs, ", ")
	}
	msg := fmt.Sprintf("eviction of pod %s/%s blocked by %s", e.Namespace, e.Pod, pdbs)
	if e.Message != "" {
		msg += " (" + e.Message + ")"
	}
	return fmt.Sprintf("%s; retry after %s", msg, e.RetryAfter.Round(time.Millisecond))
}

func (e *EvictionBlockedError) Is(target error) bool { return target == ErrEvictionBlocked }
