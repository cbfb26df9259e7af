package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recycler/recycler/internal/cli"
)

// Bad serve flags are refused, all at once, with exit 2, before anything is
// started: no state file, no metrics listener, no AWS or Kubernetes call.
func TestServeRefusesBadFlagsBeforeStarting(t *testing.T) {
	state := filepath.Join(t.TempDir(), "sub", "recycler.db")
	cases := map[string]struct {
		args []string
		want []string
	}{
		"queue URL":     {[]string{"--sqs-queue-url", "recycler-events"}, []string{`--sqs-queue-url "recycler-events" is not a queue URL`}},
		"webhook":       {[]string{"--notify-webhook", "ftp://hooks.example.com/x"}, []string{"is not an http(s) URL"}},
		"SNS topic":     {[]string{"--notify-sns-topic", "recycler-topic"}, []string{`--notify-sns-topic "recycler-topic" is not a topic ARN`}},
		"blocked after": {[]string{"--notify-blocked-after", "-5m"}, []string{"--notify-blocked-after must not be negative"}},
		"everything at once": {[]string{"--notify-sns-topic", "arn:aws:sqs:eu-west-1:123456789012:q", "--cooldown", "-1s", "--metrics-addr", "9090"},
			[]string{"--notify-sns-topic", "--cooldown must not be negative", "--metrics-addr"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var stderr strings.Builder
			args := append([]string{"serve", "--state", state, "--identity", "t"}, c.args...)
			if code := cli.Execute(context.Background(), args, strings.NewReader(""), &strings.Builder{}, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range c.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr.String())
				}
			}
			if _, err := os.Stat(filepath.Dir(state)); !os.IsNotExist(err) {
				t.Errorf("the state directory was created (%v): a refused serve must change nothing", err)
			}
		})
	}
}
