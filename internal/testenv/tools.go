package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Test tools: programs that tests run beside the control plane. Each is built
// from its own module under tools/ (its versions pinned in that go.mod), so none
// lifts another's dependencies, and cached like the control plane.
const (
	// ToolLambdaRIE is the AWS Lambda Runtime Interface Emulator: it runs a
	// `bootstrap` behind the Lambda Runtime API and invokes it over HTTP.
	ToolLambdaRIE = "aws-lambda-rie"
	// ToolIAMAuthenticator is aws-iam-authenticator: EKS's token verifier and
	// webhook server.
	ToolIAMAuthenticator = "aws-iam-authenticator"
	// ToolTofu is OpenTofu.
	ToolTofu = "tofu"
	// ToolTFLint is tflint with its built-in rules.
	ToolTFLint = "tflint"
	// ToolTerraformConfigInspect reads a Terraform module's interface as JSON.
	ToolTerraformConfigInspect = "terraform-config-inspect"
	// ToolGolangciLint is golangci-lint, run by `make lint` with .golangci.yaml.
	ToolGolangciLint = "golangci-lint"
)

var testTools = map[string]buildGroup{
	ToolLambdaRIE: {module: "rie",
		pkgs: []string{"github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"}, bins: []string{ToolLambdaRIE}},
	ToolIAMAuthenticator: {module: "iamauth",
		pkgs: []string{"sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator"}, bins: []string{ToolIAMAuthenticator}, slow: true},
	ToolTofu: {module: "tofu", download: "github.com/opentofu/opentofu",
		pkgs: []string{"./cmd/tofu"}, bins: []string{ToolTofu}, slow: true,
		// A release build: `tofu version` says v1.12.6, not v1.12.6-dev.
		ldflags: "-X github.com/opentofu/opentofu/version.dev=no"},
	ToolTFLint: {module: "tflint",
		pkgs: []string{"github.com/terraform-linters/tflint"}, bins: []string{ToolTFLint}, slow: true},
	ToolGolangciLint: {module: "lint",
		pkgs: []string{"github.com/golangci/golangci-lint/v2/cmd/golangci-lint"}, bins: []string{ToolGolangciLint}, slow: true},
	ToolTerraformConfigInspect: {module: "tfinspect",
		pkgs: []string{"github.com/hashicorp/terraform-config-inspect"}, bins: []string{ToolTerraformConfigInspect}},
}

// ToolNames lists the test tools EnsureTool knows, sorted.
func ToolNames() []string {
	names := make([]string, 0, len(testTools))
	for n := range testTools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Tool returns the absolute path of a test tool (ToolTofu, …), building it into
// the cache on first use with progress on stderr. Inside the repository the
// zero Options work; see EnsureTool.
func Tool(ctx context.Context, name string) (string, error) {
	return EnsureTool(ctx, Options{Progress: os.Stderr}, name)
}

// EnsureTool returns the path of a test tool, building it when missing into
// <cache>/tools/<name>-<key>/, where key hashes its tools module, the build
// flags and the Go version (as EnsureBinaries does for the control plane).
// Builders of one tool serialise on a file lock; different tools build in
// parallel.
func EnsureTool(ctx context.Context, opts Options, name string) (string, error) {
	g, ok := testTools[name]
	if !ok {
		return "", fmt.Errorf("unknown test tool %q (known: %s)", name, strings.Join(ToolNames(), ", "))
	}
	b, err := resolveBuild(opts)
	if err != nil {
		return "", err
	}
	key, err := cacheKeyOf(ctx, b.goBin, b.toolsDir, []buildGroup{g})
	if err != nil {
		return "", err
	}
	dir := filepath.Join(b.cacheRoot, "tools", name+"-"+key)
	if err := b.ensure(ctx, dir, []buildGroup{g}, name, opts.Progress); err != nil {
		return "", err
	}
	return filepath.Join(dir, g.bins[0]), nil
}

// sourceDir is where g is built: its tools module, or for a downloaded module
// that module's own folder in the module cache, at the version the tools
// module's go.mod requires (go.sum checks it).
func (b build) sourceDir(ctx context.Context, g buildGroup) (string, error) {
	modDir := filepath.Join(b.toolsDir, g.module)
	if g.download == "" {
		return modDir, nil
	}
	cmd := exec.CommandContext(ctx, b.goBin, "mod", "download", "-json", g.download)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), buildEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Version, Error string }
	if err == nil {
		err = json.Unmarshal(out, &info)
	}
	if err == nil && info.Error != "" {
		err = fmt.Errorf("%s", info.Error)
	}
	if err == nil && info.Dir == "" {
		err = fmt.Errorf("go mod download printed no folder")
	}
	if err != nil {
		return "", fmt.Errorf("download %s (pinned in %s): %w\n%s", g.download, filepath.Join(modDir, "go.mod"), err, tail(stderr.String(), 20))
	}
	return info.Dir, nil
}

// EnsureTools builds every test tool that is missing (make tools) and returns
// their paths by name.
func EnsureTools(ctx context.Context, opts Options) (map[string]string, error) {
	paths := map[string]string{}
	for _, n := range ToolNames() {
		p, err := EnsureTool(ctx, opts, n)
		if err != nil {
			return nil, err
		}
		paths[n] = p
	}
	return paths, nil
}

// NeedTool returns the path of a test tool for a test, building it if needed;
// the test fails when the tool cannot be built.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := Tool(t.Context(), name)
	if err != nil {
		t.Fatalf("test tool %s: %v", name, err)
	}
	return p
}
