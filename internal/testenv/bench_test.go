package testenv_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/recycler/recycler/internal/testenv"
)

// BenchmarkStart measures a warm start (binaries cached): Start until the
// apiserver is ready and the default service account exists. It does its
// own fixed number of starts so that -benchtime 1x gives a usable figure.
func BenchmarkStart(b *testing.B) {
	testenv.Shared(b) // skips with RECYCLER_SKIP_CONTROLPLANE=1; binaries are built
	const starts = 3
	var took []time.Duration
	for range b.N {
		for range starts {
			began := time.Now()
			env, err := testenv.Start(context.Background(), testenv.Options{})
			if err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(began))
			if err := env.Stop(); err != nil {
				b.Fatal(err)
			}
		}
	}
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	b.ReportMetric((sum / time.Duration(len(took))).Seconds(), "start-s")
	b.ReportMetric(slices.Max(took).Seconds(), "max-start-s")
	b.ReportMetric(0, "ns/op") // the per-op time mixes starts and stops: not meaningful
}
