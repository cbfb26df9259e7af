package aws_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// iamPrefix maps the SDK's service id (the first half of a Metrics operation) to the
// IAM action prefix.
var iamPrefix = map[string]string{"Auto Scaling": "autoscaling", "EC2": "ec2"}

// checkLambdaPolicy compares the Auto Scaling and EC2 actions the Terraform module
// grants the Lambda (deploy/terraform/modules/documents/actions.json) with the
// operations the provider made: none missing (a recycle would be denied), none extra
// (least privilege).
func checkLambdaPolicy(t *testing.T, ops []string) {
	if len(ops) == 0 {
		t.Skip("the contract suite's cases did not run (-run filtered them): nothing to compare")
	}
	raw, err := os.ReadFile("../../../deploy/terraform/modules/documents/actions.json")
	if err != nil {
		t.Fatal(err)
	}
	var groups map[string][]string
	if err := json.Unmarshal(raw, &groups); err != nil {
		t.Fatal(err)
	}
	var granted []string
	for name, actions := range groups {
		// The provider's share; eks, logs and vpc are the EKS auth's and the Lambda
		// service's own (checked where they are made).
		if strings.HasPrefix(name, "autoscaling_") || strings.HasPrefix(name, "ec2_") {
			granted = append(granted, actions...)
		}
	}
	var called []string
	for _, op := range ops {
		svc, name, _ := strings.Cut(op, "/")
		prefix, ok := iamPrefix[svc]
		if !ok {
			t.Errorf("operation %s: no IAM prefix known for service %q", op, svc)
			continue
		}
		called = append(called, prefix+":"+name)
	}
	slices.Sort(granted)
	slices.Sort(called)
	for _, a := range called {
		if !slices.Contains(granted, a) {
			t.Errorf("the code calls %s but the module's Lambda policy does not allow it: add it to actions.json", a)
		}
	}
	for _, a := range granted {
		if !slices.Contains(called, a) {
			t.Errorf("the module's Lambda policy allows %s, which the code never calls: remove it from actions.json", a)
		}
	}
	if t.Failed() {
		t.Logf("called: %s", strings.Join(called, " "))
	}
}
