// Package testenv builds and runs a real, local Kubernetes control plane:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
// pinned Go modules (tools/), with kwok playing the kubelets. Tests use it
// through RunMain, Shared and Namespace; `recycler controlplane up` and the
// simulator use Start directly. See docs/testenv.md.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Options configure EnsureBinaries and Start. The zero value works inside the
// repository.
type Options struct {
	// CacheDir is the root of the binary cache. Default: $RECYCLER_CACHE, else
	// <repo>/.cache inside the repository, else os.UserCacheDir()/recycler.
	CacheDir string
	// ToolsDir holds the tools modules (kube, etcd, kwok). Default:
	// $RECYCLER_TOOLS_DIR, else <repo>/tools.
	ToolsDir string
	// Progress receives human-readable progress lines (builds, startup).
	// Nil discards them.
	Progress io.Writer
	// TempDir is where Start creates the environment's directory.
	// Default: os.TempDir().
	TempDir string
	// KeepDir keeps the environment's directory (logs, kubeconfig) after Stop.
	// Also set by RECYCLER_KEEP_TESTENV=1.
	KeepDir bool
	// StartTimeout bounds Start after the binaries exist. Default: 2 minutes.
	StartTimeout time.Duration
	// TokenWebhookConfig, when set, is the kubeconfig of a webhook token
	// authenticator the apiserver asks about bearer tokens it does not know
	// (--authentication-token-webhook-config-file), as EKS asks
	// aws-iam-authenticator. The static admin token keeps working.
	TokenWebhookConfig string
}

// Binaries are the absolute paths of the built control-plane binaries.
type Binaries struct {
	Dir                   string
	Etcd                  string
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kwok                  string
}

const repoModule = "github.com/recycler/recycler"

// buildGroup is one tools module and the binaries built from it in one
// `go build` (one invocation shares the compile graph of its binaries).
type buildGroup struct {
	module string // directory under the tools dir
	pkgs   []string
	bins   []string
	// download, when set, is a module required by the tools module's go.mod
	// that is built inside its own downloaded folder (for modules whose replace
	// directives only apply there, like OpenTofu's); pkgs are relative to it.
	download string
	slow     bool // say that the first build takes minutes
	// ldflags are added to buildFlags' -ldflags (e.g. a release marker).
	ldflags string
}

var buildGroups = []buildGroup{
	{module: "etcd", pkgs: []string{"./cmd/etcd"}, bins: []string{"etcd"}},
	{module: "kwok", pkgs: []string{"sigs.k8s.io/kwok/cmd/kwok"}, bins: []string{"kwok"}},
	{module: "kube", pkgs: []string{
		"k8s.io/kubernetes/cmd/kube-apiserver",
		"k8s.io/kubernetes/cmd/kube-controller-manager",
		"k8s.io/kubernetes/cmd/kube-scheduler",
	}, bins: []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}, slow: true},
}

// buildFlags keep the binaries small and fast to link; part of the cache key.
var buildFlags = []string{"-trimpath", "-ldflags=-s -w"}

// buildEnv is appended to the environment of `go build`; part of the cache key.
var buildEnv = []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false"}

// EnsureBinaries returns the control-plane binaries, building the missing ones
// into the cache. The cache folder is keyed by the tools modules' go.mod/go.sum
// and the Go version, so a version bump builds anew and an unchanged setup
// never rebuilds. Concurrent callers (parallel test packages) serialise on a
// file lock: one builds, the others wait and reuse.
func EnsureBinaries(ctx context.Context, opts Options) (Binaries, error) {
	b, err := resolveBuild(opts)
	if err != nil {
		return Binaries{}, err
	}
	key, err := cacheKey(ctx, b.goBin, b.toolsDir)
	if err != nil {
		return Binaries{}, err
	}
	dir := filepath.Join(b.cacheRoot, "controlplane", key)
	if err := b.ensure(ctx, dir, buildGroups, "the control plane", opts.Progress); err != nil {
		return Binaries{}, err
	}
	return binariesIn(dir), nil
}

// build is where builds come from and go to.
type build struct {
	toolsDir, cacheRoot, goBin string
}

func resolveBuild(opts Options) (build, error) {
	toolsDir, err := resolveToolsDir(opts)
	if err != nil {
		return build{}, err
	}
	cacheRoot, err := resolveCacheDir(opts)
	if err != nil {
		return build{}, err
	}
	goBin, err := findGo()
	if err != nil {
		return build{}, err
	}
	return build{toolsDir: toolsDir, cacheRoot: cacheRoot, goBin: goBin}, nil
}

// ensure builds the missing binaries of groups into dir, under an exclusive
// lock on dir.lock; what names them in progress lines.
func (b build) ensure(ctx context.Context, dir string, groups []buildGroup, what string, progress io.Writer) error {
	if len(missingGroups(dir, groups)) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create cache %s: %w", filepath.Dir(dir), err)
	}
	unlock, err := lockFile(ctx, dir+".lock", what, progress)
	if err != nil {
		return err
	}
	defer unlock()

	// Another process may have built while we waited for the lock.
	missing := missingGroups(dir, groups)
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cache %s: %w", dir, err)
	}
	progressf(progress, "testenv: building %s into %s", what, dir)
	for _, g := range missing {
		if err := b.buildGroupInto(ctx, dir, g, progress); err != nil {
			return err
		}
	}
	return nil
}

func binariesIn(dir string) Binaries {
	return Binaries{
		Dir:                   dir,
		Etcd:                  filepath.Join(dir, "etcd"),
		KubeAPIServer:         filepath.Join(dir, "kube-apiserver"),
		KubeControllerManager: filepath.Join(dir, "kube-controller-manager"),
		KubeScheduler:         filepath.Join(dir, "kube-scheduler"),
		Kwok:                  filepath.Join(dir, "kwok"),
	}
}

func missingGroups(dir string, groups []buildGroup) []buildGroup {
	var missing []buildGroup
	for _, g := range groups {
		for _, b := range g.bins {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || !fi.Mode().IsRegular() {
				missing = append(missing, g)
				break
			}
		}
	}
	return missing
}

// buildGroupInto builds one module's binaries into a temporary folder next to
// dir and renames them into place, so a killed build never leaves a partial
// binary under its final name.
func (b build) buildGroupInto(ctx context.Context, dir string, g buildGroup, progress io.Writer) error {
	src, err := b.sourceDir(ctx, g)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		return fmt.Errorf("build %s: %w", strings.Join(g.bins, ", "), err)
	}
	defer os.RemoveAll(tmp)

	what := strings.Join(g.bins, ", ")
	note := ""
	if g.slow {
		note = " (first build takes minutes)"
	}
	progressf(progress, "testenv: building %s%s…", what, note)
	start := time.Now()

	args := append([]string{"build"}, buildFlags...)
	if g.ldflags != "" {
		args = append(args, "-ldflags=-s -w "+g.ldflags)
	}
	args = append(args, "-o", tmp+string(filepath.Separator))
	args = append(args, g.pkgs...)
	cmd := exec.Command(b.goBin, args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), buildEnv...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("build %s: start go: %w", what, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-tick.C:
			progressf(progress, "testenv: still building %s… %s", what, time.Since(start).Round(time.Second))
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			killed := <-done
			return fmt.Errorf("build %s: %w (go build: %w)", what, ctx.Err(), killed)
		}
	}
	if err != nil {
		return fmt.Errorf("build %s in %s: %w\n%s", what, cmd.Dir, err, tail(out.String(), 40))
	}
	for _, b := range g.bins {
		if err := os.Rename(filepath.Join(tmp, b), filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("build %s: install: %w", b, err)
		}
	}
	progressf(progress, "testenv: building %s… done in %s", what, time.Since(start).Round(time.Second))
	return nil
}

// cacheKey hashes everything that decides the binaries' content: the tools
// modules' go.mod/go.sum and Go files, the build flags and the Go toolchain.
func cacheKey(ctx context.Context, goBin, toolsDir string) (string, error) {
	return cacheKeyOf(ctx, goBin, toolsDir, buildGroups)
}

func cacheKeyOf(ctx context.Context, goBin, toolsDir string, groups []buildGroup) (string, error) {
	h := sha256.New()
	for _, g := range groups {
		modDir := filepath.Join(toolsDir, g.module)
		files := []string{"go.mod", "go.sum"}
		goFiles, err := filepath.Glob(filepath.Join(modDir, "cmd", "*", "*.go"))
		if err != nil {
			return "", fmt.Errorf("hash tools module %s: %w", modDir, err)
		}
		for _, f := range goFiles {
			rel, _ := filepath.Rel(modDir, f)
			files = append(files, rel)
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(modDir, f))
			if err != nil {
				return "", fmt.Errorf("hash tools module %s: %w (is RECYCLER_TOOLS_DIR right?)", modDir, err)
			}
			fmt.Fprintf(h, "%s/%s %d\n", g.module, f, len(b))
			h.Write(b)
		}
	}
	fmt.Fprintf(h, "flags %q env %q\n", buildFlags, buildEnv)
	for _, g := range groups {
		if g.ldflags != "" {
			fmt.Fprintf(h, "ldflags %s %q\n", g.module, g.ldflags)
		}
	}
	fmt.Fprintf(h, "go %s %s/%s\n", goVersion(ctx, goBin), runtime.GOOS, runtime.GOARCH)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func goVersion(ctx context.Context, goBin string) string {
	cmd := exec.CommandContext(ctx, goBin, "env", "GOVERSION")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return runtime.Version()
}

func findGo() (string, error) {
	// `go test` puts its own GOROOT/bin first on the test binary's PATH.
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	return "", errors.New("the go command is needed to build the control plane: install Go 1.26 and put it on PATH")
}

// lockFile takes an exclusive flock on path, telling progress when it has to
// wait for another process. The lock dies with the process.
func lockFile(ctx context.Context, path, what string, progress io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		return func() { f.Close() }, nil
	}
	progressf(progress, "testenv: another process is building %s; waiting for %s", what, path)
	got := make(chan error, 1)
	go func() { got <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file releases the lock should the goroutine still get it.
		f.Close()
		return nil, fmt.Errorf("wait for build lock %s: %w", path, ctx.Err())
	}
}

func resolveToolsDir(opts Options) (string, error) {
	if opts.ToolsDir != "" {
		return filepath.Abs(opts.ToolsDir)
	}
	if d := os.Getenv("RECYCLER_TOOLS_DIR"); d != "" {
		return filepath.Abs(d)
	}
	if root, ok := repoRoot(); ok {
		return filepath.Join(root, "tools"), nil
	}
	return "", errors.New("cannot find the control-plane tools modules: run inside the recycler repository or set RECYCLER_TOOLS_DIR to its tools/ folder")
}

func resolveCacheDir(opts Options) (string, error) {
	if opts.CacheDir != "" {
		return filepath.Abs(opts.CacheDir)
	}
	if d := os.Getenv("RECYCLER_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	if root, ok := repoRoot(); ok {
		return filepath.Join(root, ".cache"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for the control plane (set RECYCLER_CACHE): %w", err)
	}
	return filepath.Join(d, "recycler"), nil
}

// repoRoot walks up from the working directory to the go.mod of this module;
// tests run in their package folders.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if modulePath(filepath.Join(dir, "go.mod")) == repoModule {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func modulePath(goMod string) string {
	f, err := os.Open(goMod)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

func progressf(w io.Writer, format string, args ...any) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, format+"\n", args...)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
