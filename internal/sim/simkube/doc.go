// Package simkube holds the simulator's tests against a real control plane
// (internal/testenv): Nodes follow instances, and sim.Up seeds a working
// cluster-plus-cloud. It has no code of its own.
package simkube
