package aws_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/recycler/recycler/internal/cloud"
	"github.com/recycler/recycler/internal/cloud/cloudtest"
)

// BenchmarkRecycleCycleAPICalls measures the AWS API calls of one full standby →
// wait for replacement → detach → terminate cycle, as a workflow makes them (group
// setup and test assertions excluded). The simulated boot takes 30 s and the wait
// checks every cloudtest.Step (5 s). Reported: all calls per cycle, the calls that do
// not depend on how long the boot takes, and the checks per cycle (each one
// DescribeAutoScalingGroups). Runs a fixed number of cycles whatever b.N is.
func BenchmarkRecycleCycleAPICalls(b *testing.B) {
	const cycles = 5
	e := startSim(b)
	name := e.CreateGroup(b, cloudtest.GroupSpec{Min: 1, Max: 6, Desired: 3})
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		m := e.prov.Metrics()
		var total, polls int64
		perOp := map[string]int64{}
		for range cycles {
			g, err := e.prov.Group(ctx, name) // the workflow's Resolve step already knows the instance
			if err != nil {
				b.Fatal(err)
			}
			var old string
			for _, in := range g.Instances {
				if in.Lifecycle == cloud.LifecycleInService {
					old = in.ID
					break
				}
			}
			m.Reset()
			rec, err := e.prov.Surge(ctx, name, []string{old}, cloud.SurgeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			for {
				polls++
				r, err := e.prov.FindReplacement(ctx, rec)
				if err != nil {
					b.Fatal(err)
				}
				if r.Ready {
					break
				}
				e.Advance(b, cloudtest.Step)
			}
			if _, err := e.prov.Retire(ctx, old, cloud.RetireOptions{Surge: &rec}); err != nil {
				b.Fatal(err)
			}
			total += m.TotalCalls()
			for op, n := range m.Calls() {
				perOp[op] += n
			}
			e.Advance(b, cloudtest.Step)
		}
		b.ReportMetric(float64(total)/cycles, "api-calls/cycle")
		b.ReportMetric(float64(total-polls)/cycles, "fixed-api-calls/cycle")
		b.ReportMetric(float64(polls)/cycles, "polls/cycle")
		for _, op := range slices.Sorted(maps.Keys(perOp)) {
			b.Logf("%-45s %4.1f calls/cycle", op, float64(perOp[op])/cycles)
		}
	}
}
