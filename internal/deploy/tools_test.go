package deploy_test

import (
	"os"
	"path/filepath"
	"testing"
)

// needTool finds a test tool built into the shared cache.
// TODO(terraform): testenv.NeedTool once the tool builds land on main.
func needTool(t *testing.T, name string) string {
	t.Helper()
	cache := os.Getenv("RECYCLER_CACHE")
	if cache == "" {
		cache = "../../.cache"
	}
	m, _ := filepath.Glob(filepath.Join(cache, "tools", name+"-*", name))
	if len(m) == 0 {
		t.Skipf("%s not built (make tools)", name)
	}
	return m[0]
}
