package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// copyToolModule copies one tools module (go.mod, go.sum) into a fresh tools dir.
func copyToolModule(t *testing.T, module string) string {
	t.Helper()
	root, ok := repoRoot()
	if !ok {
		t.Fatal("test must run inside the repository")
	}
	dst := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dst, module), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", module, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, module, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// The smallest real tool (terraform-config-inspect, a few seconds with a warm Go
// build cache) stands for all: built once by concurrent callers, reused, rebuilt
// into a new folder when its pinned module changes.
func TestToolIsBuiltOnceAndKeyedByItsModule(t *testing.T) {
	ctx := context.Background()
	tools := copyToolModule(t, "tfinspect")
	opts := Options{ToolsDir: tools, CacheDir: t.TempDir()}

	var progress SyncBuffer
	opts.Progress = &progress
	paths := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = EnsureTool(ctx, opts, ToolTerraformConfigInspect) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v\nprogress:\n%s", i, err, progress.String())
		}
	}
	if paths[0] != paths[1] {
		t.Fatalf("two callers got two paths: %s, %s", paths[0], paths[1])
	}
	if n := strings.Count(progress.String(), "building terraform-config-inspect…\n"); n != 1 {
		t.Fatalf("tool built %d times by two concurrent callers, want once; progress:\n%s", n, progress.String())
	}
	// The binary is real: it reads a module's interface.
	mod := t.TempDir()
	if err := os.WriteFile(filepath.Join(mod, "main.tf"), []byte("variable \"cluster_name\" {\n  type        = string\n  description = \"EKS cluster\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(paths[0], "--json", mod).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"cluster_name"`) {
		t.Fatalf("terraform-config-inspect --json: %v\n%s", err, out)
	}

	var again bytes.Buffer
	opts.Progress = &again
	if p, err := EnsureTool(ctx, opts, ToolTerraformConfigInspect); err != nil || p != paths[0] {
		t.Fatalf("second call: %s, %v; want %s", p, err, paths[0])
	}
	if again.Len() != 0 {
		t.Errorf("a cached tool printed progress (rebuilt?):\n%s", again.String())
	}

	goMod := filepath.Join(tools, "tfinspect", "go.mod")
	b, _ := os.ReadFile(goMod)
	if err := os.WriteFile(goMod, append(b, "\n// bumped\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Progress = nil
	p, err := EnsureTool(ctx, opts, ToolTerraformConfigInspect)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) == filepath.Dir(paths[0]) {
		t.Errorf("a changed tools module reused the folder %s", filepath.Dir(p))
	}
}

func TestUnknownToolNamesTheKnownOnes(t *testing.T) {
	_, err := EnsureTool(context.Background(), Options{}, "terraform")
	if err == nil || !strings.Contains(err.Error(), ToolTofu) {
		t.Fatalf("err = %v, want the list of known tools", err)
	}
}
