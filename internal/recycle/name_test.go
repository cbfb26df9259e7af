package recycle

import (
	"testing"

	"github.com/recycler/recycler/internal/engine"
)

// The attempts of one instance: the highest number counts for the next name; a
// running execution named after the instance blocks a new one, whatever scheme
// named it, while another instance's (a longer id with this one as prefix) does not.
func TestAttemptsOfAnInstance(t *testing.T) {
	const id = "i-0123abcd"
	exs := []engine.Execution{
		{Name: id, Status: engine.StatusFailed},
		{Name: id + "-3", Status: engine.StatusAborted},
		{Name: id + "0000000001", Status: engine.StatusRunning}, // i-0123abcd0000000001: another instance
		{Name: id + "-x", Status: engine.StatusSucceeded},
	}
	if last, running := Attempts(id, exs); last != 3 || running != nil {
		t.Errorf("Attempts = %d, %v; want 3 and none running", last, running)
	}
	exs = append(exs, engine.Execution{Name: id + "-alarm-00ce7929e5", Status: engine.StatusRunning})
	if last, running := Attempts(id, exs); last != 3 || running == nil || running.Name != id+"-alarm-00ce7929e5" {
		t.Errorf("Attempts = %d, %v; want 3 and the alarm-named recycle running", last, running)
	}
	if got := ExecutionName(id, 4); got != id+"-4" {
		t.Errorf("ExecutionName(%s, 4) = %s", id, got)
	}
}
