package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyTools copies the tools modules' key files into a temp dir.
func copyTools(t *testing.T) string {
	t.Helper()
	root, ok := repoRoot()
	if !ok {
		t.Fatal("test must run inside the repository")
	}
	dst := t.TempDir()
	for _, g := range buildGroups {
		for _, f := range []string{"go.mod", "go.sum"} {
			b, err := os.ReadFile(filepath.Join(root, "tools", g.module, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dst, g.module), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, g.module, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

func TestCacheKeyChangesWithPinnedVersionsOnly(t *testing.T) {
	goBin, err := findGo()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tools := copyTools(t)
	k1, err := cacheKey(ctx, goBin, tools)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := cacheKey(ctx, goBin, tools)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatalf("same tools, different keys %s %s", k1, k2)
	}
	mod := filepath.Join(tools, "kube", "go.mod")
	b, _ := os.ReadFile(mod)
	if err := os.WriteFile(mod, []byte(strings.Replace(string(b), "k8s.io/kubernetes v1.37.2", "k8s.io/kubernetes v1.37.3", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	k3, err := cacheKey(ctx, goBin, tools)
	if err != nil {
		t.Fatal(err)
	}
	if k3 == k1 {
		t.Fatalf("kubernetes version bump kept key %s: binaries would not be rebuilt", k1)
	}
}

func TestEnsureBinariesWithoutToolsSourceSaysWhatToDo(t *testing.T) {
	cache := t.TempDir()
	_, err := EnsureBinaries(context.Background(), Options{ToolsDir: t.TempDir(), CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "RECYCLER_TOOLS_DIR") {
		t.Fatalf("err = %v, want a hint about RECYCLER_TOOLS_DIR", err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("cache %s got %d entries after a failed call, want none", cache, len(entries))
	}
}

func TestCacheDirPrecedence(t *testing.T) {
	root, ok := repoRoot()
	if !ok {
		t.Fatal("test must run inside the repository")
	}
	t.Setenv("RECYCLER_CACHE", "")
	if got, _ := resolveCacheDir(Options{}); got != filepath.Join(root, ".cache") {
		t.Errorf("inside the repo: %s, want %s", got, filepath.Join(root, ".cache"))
	}
	t.Setenv("RECYCLER_CACHE", "/tmp/x-cache")
	if got, _ := resolveCacheDir(Options{}); got != "/tmp/x-cache" {
		t.Errorf("with RECYCLER_CACHE: %s", got)
	}
	if got, _ := resolveCacheDir(Options{CacheDir: "/tmp/y"}); got != "/tmp/y" {
		t.Errorf("with Options.CacheDir: %s", got)
	}
}
