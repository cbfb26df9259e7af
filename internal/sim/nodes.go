package sim

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/recycler/recycler/internal/testenv"
)

// Labels the simulated cloud puts on its Nodes (as EKS and the cloud controller do).
const (
	LabelNodegroup = "eks.amazonaws.com/nodegroup"
)

// nodeEnv is what KwokNodes needs from the control plane (*testenv.Env has it).
type nodeEnv interface {
	CreateNode(ctx context.Context, spec testenv.NodeSpec) (*corev1.Node, error)
	DeleteNode(ctx context.Context, name string) error
}

// KwokNodes is the NodeRegistry of the local control plane: one kwok-managed Node
// per running instance, deleted when the instance stops or terminates.
type KwokNodes struct {
	Env nodeEnv
}

// Register creates the instance's Node; an existing Node of that name counts as done.
func (k KwokNodes) Register(ctx context.Context, inst Instance) error {
	labels := map[string]string{
		corev1.LabelTopologyZone:       inst.AZ,
		corev1.LabelTopologyRegion:     inst.Region,
		corev1.LabelInstanceTypeStable: inst.InstanceType,
	}
	if inst.Group != "" {
		labels[LabelNodegroup] = inst.Group
	}
	_, err := k.Env.CreateNode(ctx, testenv.NodeSpec{
		Name:       inst.Name,
		ProviderID: inst.ProviderID,
		Labels:     labels,
		NotReady:   inst.NeverReady,
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node for instance %s: %w", inst.ID, err)
	}
	return nil
}

// Deregister deletes the instance's Node (like the cloud controller's node lifecycle).
func (k KwokNodes) Deregister(ctx context.Context, inst Instance) error {
	if err := k.Env.DeleteNode(ctx, inst.Name); err != nil {
		return fmt.Errorf("deregister node of instance %s: %w", inst.ID, err)
	}
	return nil
}
