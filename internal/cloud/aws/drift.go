package aws

import (
	"context"
	"fmt"

	"github.com/recycler/recycler/internal/cloud"
)

// Drift implements cloud.DriftChecker.
func (p *Provider) Drift(ctx context.Context, inst cloud.Instance) (cloud.Drift, error) {
	if inst.Group == "" {
		return cloud.Drift{}, fmt.Errorf("drift of %s: instance is in no Auto Scaling group: %w", inst.ID, cloud.ErrNotInGroup)
	}
	g, err := p.describeGroup(ctx, inst.Group)
	if err != nil {
		return cloud.Drift{}, fmt.Errorf("drift of %s: %w", inst.ID, err)
	}
	if err := p.resolveTemplates(ctx, &g); err != nil {
		return cloud.Drift{}, fmt.Errorf("drift of %s: %w", inst.ID, err)
	}
	return compareLaunch(inst, g), nil
}

// wanted is what the group would launch today for an instance of this type.
func wanted(g cloud.Group, instanceType string) cloud.LaunchSpec {
	switch {
	case g.MixedInstances != nil:
		for _, o := range g.MixedInstances.Overrides {
			if o.InstanceType == instanceType && o.LaunchTemplate != nil {
				return cloud.LaunchSpec{LaunchTemplate: o.LaunchTemplate}
			}
		}
		lt := g.MixedInstances.LaunchTemplate
		return cloud.LaunchSpec{LaunchTemplate: &lt}
	case g.LaunchTemplate != nil:
		return cloud.LaunchSpec{LaunchTemplate: g.LaunchTemplate}
	}
	return cloud.LaunchSpec{LaunchConfiguration: g.LaunchConfiguration}
}

func sameTemplate(a, b *cloud.LaunchTemplate) bool {
	if a.ID != "" && b.ID != "" {
		return a.ID == b.ID
	}
	return a.Name != "" && a.Name == b.Name
}

func describeLT(lt *cloud.LaunchTemplate) string {
	name := lt.ID
	if name == "" {
		name = lt.Name
	}
	return fmt.Sprintf("launch template %s version %d", name, lt.ResolvedVersion)
}

func compareLaunch(inst cloud.Instance, g cloud.Group) cloud.Drift {
	d := cloud.Drift{
		Instance: cloud.LaunchSpec{LaunchTemplate: inst.LaunchTemplate, LaunchConfiguration: inst.LaunchConfiguration},
		Group:    wanted(g, inst.InstanceType),
	}
	have, want := d.Instance, d.Group
	switch {
	case want.LaunchTemplate != nil && have.LaunchTemplate == nil:
		d.Drifted = true
		d.Reason = fmt.Sprintf("instance uses launch configuration %q, group uses %s", have.LaunchConfiguration, describeLT(want.LaunchTemplate))
	case want.LaunchTemplate == nil && have.LaunchTemplate != nil:
		d.Drifted = true
		d.Reason = fmt.Sprintf("instance uses %s, group uses launch configuration %q", describeLT(have.LaunchTemplate), want.LaunchConfiguration)
	case want.LaunchTemplate == nil:
		d.Drifted = have.LaunchConfiguration != want.LaunchConfiguration
		if d.Drifted {
			d.Reason = fmt.Sprintf("instance uses launch configuration %q, group uses %q", have.LaunchConfiguration, want.LaunchConfiguration)
		}
	case !sameTemplate(have.LaunchTemplate, want.LaunchTemplate):
		d.Drifted = true
		d.Reason = fmt.Sprintf("instance uses %s, group uses %s", describeLT(have.LaunchTemplate), describeLT(want.LaunchTemplate))
	case have.LaunchTemplate.ResolvedVersion != want.LaunchTemplate.ResolvedVersion:
		d.Drifted = true
		d.Reason = fmt.Sprintf("instance uses %s, group uses version %d (%s)", describeLT(have.LaunchTemplate), want.LaunchTemplate.ResolvedVersion, want.LaunchTemplate.Version)
	}
	return d
}
