package asl

import (
	"encoding/json"
	"runtime"
	"testing"
	"time"
)

// BenchmarkTransition measures the pure transition functions the durable engine
// calls for every step: Enter on a Pass with Parameters, and TaskDone applying
// ResultSelector/ResultPath/OutputPath. It runs a fixed number of iterations per
// b.N so `-benchtime 1x` still reports stable ns/op and allocs/op.
func BenchmarkTransition(b *testing.B) {
	m := mustParse(b, `{"StartAt":"P","States":{
		"P":{"Type":"Pass","Parameters":{"id.$":"$.node.id","zone.$":"$.node.zone","static":{"k":"v"},"n.$":"States.MathAdd($.count, 1)"},"ResultPath":"$.params","Next":"T"},
		"T":{"Type":"Task","Resource":"r","ResultSelector":{"status.$":"$.Status"},"ResultPath":"$.result","OutputPath":"$","End":true}}}`)
	input := json.RawMessage(`{"node":{"id":"i-0123456789abcdef0","zone":"eu-west-1a","labels":{"a":"b","c":"d"}},"count":3,"history":[1,2,3,4,5,6,7,8]}`)
	result := json.RawMessage(`{"Status":"InService","Extra":{"x":1}}`)
	c := Context{ExecutionName: "bench", Now: time.Unix(0, 0)}
	const iters = 2000
	bench := func(name string, step func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var total time.Duration
			var allocs uint64
			for range b.N {
				before := testingAllocs()
				start := time.Now()
				for range iters {
					if err := step(); err != nil {
						b.Fatal(err)
					}
				}
				total += time.Since(start)
				allocs += testingAllocs() - before
			}
			n := float64(b.N * iters)
			b.ReportMetric(float64(total.Nanoseconds())/n, "ns/transition")
			b.ReportMetric(float64(allocs)/n, "allocs/transition")
		})
	}
	bench("EnterPassParameters", func() error {
		act, err := m.Enter(Cursor{State: "P", Input: input}, c)
		if err == nil && act.Kind != ActNext {
			b.Fatalf("got %v %s", act.Kind, act.Cause)
		}
		return err
	})
	bench("TaskDoneResultPath", func() error {
		act, err := m.TaskDone(Cursor{State: "T", Input: input}, c, result, nil)
		if err == nil && act.Kind != ActSucceed {
			b.Fatalf("got %v %s", act.Kind, act.Cause)
		}
		return err
	})
}

// testingAllocs returns the process's cumulative heap allocation count.
func testingAllocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
