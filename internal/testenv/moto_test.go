package testenv_test

import (
	"net/http"
	"syscall"
	"testing"

	"github.com/recycler/recycler/internal/testenv"
)

func TestMotoStartsAnswersAndStops(t *testing.T) {
	m := testenv.MotoFor(t)
	resp, err := http.Get(m.URL + "/moto-api/data.json")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("moto at %s: %v %v", m.URL, resp, err)
	}
	resp.Body.Close()
	if err := m.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid := m.Pid()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("moto (pid %d) still runs after Stop", pid)
	}
	if resp, err := http.Get(m.URL + "/moto-api/data.json"); err == nil {
		resp.Body.Close()
		t.Errorf("moto still answers at %s after Stop", m.URL)
	}
}
