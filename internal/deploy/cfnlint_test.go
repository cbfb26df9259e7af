package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDocumentsPassCfnLint wraps the rendered policies and state machines in a
// throwaway CloudFormation template and runs cfn-lint on it, which checks every IAM
// action name against AWS's service authorization reference (W3037) and the state
// machines against the States Language schema (E3601) — AWS's own specs, not ours.
// Both ways of choosing groups are rendered (by name with a VPC, and by tag).
func TestDocumentsPassCfnLint(t *testing.T) {
	cfnLint, err := exec.LookPath("cfn-lint")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cfn-lint missing: pip install cfn-lint")
		}
		t.Skip("cfn-lint missing: pip install cfn-lint")
	}
	for mode, inputs := range map[string]map[string]string{
		"by-name-in-a-vpc": withInputs(byName, map[string]string{"vpc": "true"}),
		"by-tag":           withInputs(byName, map[string]string{"group_names": "[]", "group_tag": `{ key = "recycler.io/allowed", value = "true" }`}),
	} {
		t.Run(mode, func(t *testing.T) {
			out := render(t, inputs)
			doc := func(name string) any {
				var v any
				if err := json.Unmarshal([]byte(str(t, out[name])), &v); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return v
			}
			role := func(service, policy string) map[string]any {
				return map[string]any{"Type": "AWS::IAM::Role", "Properties": map[string]any{
					"AssumeRolePolicyDocument": map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
						"Effect": "Allow", "Principal": map[string]any{"Service": service}, "Action": "sts:AssumeRole"}}},
					"Policies": []any{map[string]any{"PolicyName": "recycler", "PolicyDocument": doc(policy)}},
				}}
			}
			machine := func(def string) map[string]any {
				return map[string]any{"Type": "AWS::StepFunctions::StateMachine", "Properties": map[string]any{
					"RoleArn": map[string]any{"Fn::GetAtt": []string{"StatesRole", "Arn"}}, "StateMachineType": "STANDARD", "Definition": doc(def)}}
			}
			tmpl := map[string]any{
				"AWSTemplateFormatVersion": "2010-09-09",
				"Resources": map[string]any{
					"LambdaRole": role("lambda.amazonaws.com", "lambda_policy"),
					"StatesRole": role("states.amazonaws.com", "states_policy"),
					"EventsRole": role("events.amazonaws.com", "events_policy"),
					"Recycle":    machine("recycle_definition"),
					"Rollback":   machine("rollback_definition"),
				},
			}
			b, err := json.MarshalIndent(tmpl, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "recycler.template.json")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			// Any finding (error, warning or informational) fails: exit code ≠ 0.
			cmd := exec.CommandContext(t.Context(), cfnLint, "--format", "parseable", "--include-checks", "I", "--", path)
			if res, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("cfn-lint finds problems in the module's documents (%v):\n%s", err, res)
			}
		})
	}
}
