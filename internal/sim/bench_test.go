package sim

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// BenchmarkSimulatedCalls measures what one SDK call costs against the simulator
// (100 instances in 5 groups), so tests and benchmarks elsewhere know the
// simulator is not their bottleneck. Fixed iteration count: meaningful with -benchtime 1x.
func BenchmarkSimulatedCalls(b *testing.B) {
	h := newHarness(b, Options{})
	for g := range 5 {
		if err := h.sim.CreateGroup(GroupSpec{Name: "ng-" + string(rune('a'+g)), Min: 0, Max: 40, Desired: 20}); err != nil {
			b.Fatal(err)
		}
	}
	h.step(time.Minute)
	const calls = 200
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for i := range calls {
			var err error
			if i%2 == 0 {
				_, err = h.asg.DescribeAutoScalingGroups(h.ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
			} else {
				_, err = h.ec2.DescribeInstances(h.ctx, &ec2.DescribeInstancesInput{})
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(elapsed.Microseconds())/float64(calls*b.N), "µs/call")
	b.ReportMetric(0, "ns/op")
}
