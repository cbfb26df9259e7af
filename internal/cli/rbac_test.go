package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/serve"
)

// `recycler rbac` prints the one source (what make deploy-documents writes), and
// refuses what it cannot print with exit 2.
func TestRBACPrintsTheOneSourceAndRefusesBadFlags(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Execute(context.Background(), append([]string{"rbac"}, args...), strings.NewReader(""), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	for _, tc := range []struct {
		args []string
		want []byte
	}{
		{nil, kube.RoleYAML("recycler", "", kube.RBAC())},
		{[]string{"-o", "json"}, kube.RulesJSON(kube.RBAC())},
		{[]string{"--serve", "--serve-namespace", "ops"}, serve.RBACManifests("ops", "recycler")},
	} {
		if code, out, errOut := run(tc.args...); code != ExitOK || out != string(tc.want) {
			t.Errorf("rbac %v: exit %d, %q\nstdout:\n%s\nwant:\n%s", tc.args, code, errOut, out, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "xml"}, `--output "xml": want yaml or json`},
		{[]string{"--serve", "-o", "json"}, "--serve prints manifests"},
		{[]string{"--serve", "--serve-namespace", "Not_A_Namespace"}, "not a namespace name"},
	} {
		if code, out, errOut := run(tc.args...); code != ExitBadInput || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("rbac %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}
