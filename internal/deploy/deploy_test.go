package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/recycler/recycler/internal/cli"
	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/recycle"
	"github.com/recycler/recycler/internal/testenv"
)

const (
	moduleDir    = "../../deploy/terraform"
	documentsDir = moduleDir + "/modules/documents"
	functionARN  = "arn:aws:lambda:eu-west-1:123456789012:function:prod-recycler"
)

// run runs a tool and fails the test with its output when it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// tofuEnv keeps tofu away from the user's configuration and any network plugin cache.
func tofuEnv(t *testing.T) []string {
	rc := filepath.Join(t.TempDir(), "tofurc")
	if err := os.WriteFile(rc, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"TF_CLI_CONFIG_FILE=" + rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1", "TF_DATA_DIR=" + filepath.Join(t.TempDir(), "tfdata")}
}

// render applies the documents submodule with inputs (HCL expressions by name) in a
// throwaway root and returns its outputs. It needs no provider, so it runs offline.
func render(t *testing.T, inputs map[string]string) map[string]json.RawMessage {
	t.Helper()
	tofu := testenv.NeedTool(t, testenv.ToolTofu)
	src, err := filepath.Abs(documentsDir)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var hcl strings.Builder
	fmt.Fprintf(&hcl, "module \"docs\" {\n  source = %q\n", src)
	for k, v := range inputs {
		fmt.Fprintf(&hcl, "  %s = %s\n", k, v)
	}
	hcl.WriteString("}\n")
	for _, o := range []string{"recycle_definition", "rollback_definition", "lambda_policy", "states_policy", "events_policy", "rbac_rules"} {
		fmt.Fprintf(&hcl, "output %q {\n  value = module.docs.%s\n}\n", o, o)
	}
	if err := os.WriteFile(filepath.Join(root, "main.tf"), []byte(hcl.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	env := tofuEnv(t)
	run(t, root, env, tofu, "init", "-input=false", "-no-color")
	run(t, root, env, tofu, "apply", "-auto-approve", "-input=false", "-no-color")
	var outs map[string]struct{ Value json.RawMessage }
	if err := json.Unmarshal(run(t, root, env, tofu, "output", "-json", "-no-color"), &outs); err != nil {
		t.Fatal(err)
	}
	res := map[string]json.RawMessage{}
	for k, v := range outs {
		res[k] = v.Value
	}
	return res
}

// str decodes a string output.
func str(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("output %s is not a string: %v", raw, err)
	}
	return s
}

var byName = map[string]string{
	"partition": `"aws"`, "region": `"eu-west-1"`, "account_id": `"123456789012"`, "cluster_name": `"prod"`,
	"group_names": `["prod-workers-a", "prod-workers-b"]`, "function_arn": strconv.Quote(functionARN),
	"lambda_log_group_arn":      `"arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/prod-recycler"`,
	"recycle_state_machine_arn": `"arn:aws:states:eu-west-1:123456789012:stateMachine:prod-recycle"`,
}

func withInputs(base map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// cliOutput is what `recycler args…` prints.
func cliOutput(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := cli.Execute(context.Background(), args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("recycler %v: exit %d: %s", args, code, stderr.String())
	}
	return stdout.String()
}

// TestModuleDeploysWhatTheCLIPrints: the module's state machines are byte for byte
// what `recycler asl [--rollback] --function-arn ARN` prints for its Lambda, and its
// ClusterRole's rules are what `recycler rbac -o json` prints.
func TestModuleDeploysWhatTheCLIPrints(t *testing.T) {
	out := render(t, byName)
	var granted, printed []rbacv1.PolicyRule
	if err := json.Unmarshal(out["rbac_rules"], &granted); err != nil {
		t.Fatalf("rbac_rules %s: %v", out["rbac_rules"], err)
	}
	if err := json.Unmarshal([]byte(cliOutput(t, "rbac", "-o", "json")), &printed); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(granted, printed) || len(granted) == 0 {
		t.Errorf("the module grants the Lambda's group %+v; `recycler rbac -o json` prints %+v", granted, printed)
	}
	if got, want := str(t, out["recycle_definition"]), cliOutput(t, "asl", "--function-arn", functionARN); got != want {
		t.Errorf("the module deploys a recycle state machine that differs from `recycler asl --function-arn`:\n%s", firstDiff(got, want))
	}
	if got, want := str(t, out["rollback_definition"]), cliOutput(t, "asl", "--rollback", "--function-arn", functionARN); got != want {
		t.Errorf("the module deploys a rollback state machine that differs from `recycler asl --rollback --function-arn`:\n%s", firstDiff(got, want))
	}
}

// TestModuleDocumentsAreTheCode: the module's copies of the definitions are the
// embedded ones, and its ClusterRole's rules are kube.RBAC (the module is published
// alone, so it cannot read internal/).
func TestModuleDocumentsAreTheCode(t *testing.T) {
	for file, want := range map[string][]byte{"recycle.asl.json": mustDef(t), "rollback.asl.json": recycle.RollbackDefinition(), "rbac.json": kube.RulesJSON(kube.RBAC())} {
		got, err := os.ReadFile(filepath.Join(documentsDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s/%s differs from the code: run `make deploy-documents`\n%s", documentsDir, file, firstDiff(string(got), string(want)))
		}
	}
}

func mustDef(t *testing.T) []byte {
	d, err := recycle.Definition("")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n  module: %s\n  code:   %s", i+1, gl, wl)
		}
	}
	return "(same lines, different bytes)"
}

// TestLambdaTimesOutAfterEveryTask: the module's Lambda timeout is above every Task's
// TimeoutSeconds, so a hung call is a States.Timeout (retried), never Lambda.Unknown.
func TestLambdaTimesOutAfterEveryTask(t *testing.T) {
	main, err := os.ReadFile(filepath.Join(moduleDir, "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)resource "aws_lambda_function" "recycler" \{.*?\n\}`).Find(main)
	m := regexp.MustCompile(`(?m)^\s*timeout\s*=\s*(\d+)`).FindSubmatch(block)
	if m == nil {
		t.Fatal("no timeout in the module's aws_lambda_function")
	}
	if timeout, _ := strconv.Atoi(string(m[1])); timeout <= recycle.MaxTaskSeconds || timeout > 900 {
		t.Errorf("the module's Lambda timeout is %d s; want above every Task's TimeoutSeconds (≤ %d) and at most Lambda's 900", timeout, recycle.MaxTaskSeconds)
	}
}

// TestModuleIsFormattedAndLintClean: tofu fmt and tflint's built-in Terraform rules
// (preset "all", deploy/terraform/.tflint.hcl) over the module, its submodule and the example.
func TestModuleIsFormattedAndLintClean(t *testing.T) {
	tofu := testenv.NeedTool(t, testenv.ToolTofu)
	tflint := testenv.NeedTool(t, testenv.ToolTFLint)
	dir, _ := filepath.Abs(moduleDir)
	run(t, dir, tofuEnv(t), tofu, "fmt", "-check", "-recursive", "-diff", "-no-color")
	run(t, dir, []string{"TFLINT_PLUGIN_DIR=" + t.TempDir()}, tflint, "--recursive", "--no-color", "--config", filepath.Join(dir, ".tflint.hcl"))
}

type moduleInterface struct {
	Variables map[string]struct {
		Type        string
		Description string
		Required    bool
	}
	Outputs map[string]struct {
		Description string
	}
	RequiredProviders map[string]struct {
		Source string
	} `json:"required_providers"`
	ProviderConfigs map[string]any `json:"provider_configs"`
	Diagnostics     []struct {
		Severity, Summary, Detail string
	}
}

// TestModuleInterface reads the module (and its documents submodule) as
// terraform-config-inspect does: every variable typed and described, every output
// described, required_providers declared, no provider block inside the module.
func TestModuleInterface(t *testing.T) {
	inspect := testenv.NeedTool(t, testenv.ToolTerraformConfigInspect)
	for dir, providers := range map[string][]string{moduleDir: {"aws", "kubernetes"}, documentsDir: nil} {
		var mi moduleInterface
		if err := json.Unmarshal(run(t, ".", nil, inspect, "--json", dir), &mi); err != nil {
			t.Fatal(err)
		}
		for _, d := range mi.Diagnostics {
			t.Errorf("%s: %s: %s: %s", dir, d.Severity, d.Summary, d.Detail)
		}
		for name, v := range mi.Variables {
			if v.Type == "" || strings.TrimSpace(v.Description) == "" {
				t.Errorf("%s: variable %s: type %q, description %q; want both", dir, name, v.Type, v.Description)
			}
		}
		for name, o := range mi.Outputs {
			if strings.TrimSpace(o.Description) == "" {
				t.Errorf("%s: output %s has no description", dir, name)
			}
		}
		if len(mi.ProviderConfigs) > 0 {
			t.Errorf("%s: provider blocks inside the module (%v): the caller configures providers", dir, mi.ProviderConfigs)
		}
		for _, p := range providers {
			if rp, ok := mi.RequiredProviders[p]; !ok || rp.Source != "hashicorp/"+p {
				t.Errorf("%s: required_providers lacks %s (hashicorp/%s): %+v", dir, p, p, mi.RequiredProviders)
			}
		}
		if len(mi.RequiredProviders) != len(providers) {
			t.Errorf("%s: required providers %v, want exactly %v", dir, mi.RequiredProviders, providers)
		}
	}
	var root moduleInterface
	_ = json.Unmarshal(run(t, ".", nil, inspect, "--json", moduleDir), &root)
	for _, want := range []string{"recycle_state_machine_arn", "rollback_state_machine_arn", "lambda_function_arn", "lambda_role_arn", "states_role_arn"} {
		if _, ok := root.Outputs[want]; !ok {
			t.Errorf("the module has no output %s", want)
		}
	}
	for _, v := range []string{"cluster_name", "lambda_zip"} {
		if !root.Variables[v].Required {
			t.Errorf("variable %s should be required", v)
		}
	}
}
