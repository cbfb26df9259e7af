package cli

import (
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/recycler/recycler/internal/kube"
	"github.com/recycler/recycler/internal/serve"
)

// rbacName names the ClusterRole, and serve's ServiceAccount, Lease Role and bindings.
const rbacName = "recycler"

func newRBACCmd(stdout io.Writer) *cobra.Command {
	var (
		output    string
		forServe  bool
		namespace string
	)
	cmd := &cobra.Command{
		Use:   "rbac",
		Short: "Print the Kubernetes RBAC a recycle needs (or recycler serve's)",
		Long: `Print exactly the Kubernetes RBAC rules a recycle calls, whoever drives it: a ClusterRole
named recycler, to bind to the user or group that runs 'recycler recycle' (or the
Lambda's access-entry group). With -o json, the rules alone, as deploy/terraform grants them. With --serve,
recycler serve's manifests: the ClusterRole with the annotation trigger's rules, a Role
for the leader Lease in its namespace, and their bindings to its ServiceAccount, as
deploy/kubernetes/rbac.yaml has them.`,
		Example: `  recycler rbac | kubectl apply -f - && kubectl create clusterrolebinding recycler --clusterrole recycler --group platform-team
  recycler rbac --serve --serve-namespace recycler > rbac.yaml`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			var out []byte
			switch {
			case output != "yaml" && output != "json":
				return badInput("--output %q: want yaml or json", output)
			case forServe && output == "json":
				return badInput("--serve prints manifests: use -o yaml (the default)")
			case forServe && len(validation.IsDNS1123Label(namespace)) > 0:
				return badInput("--serve-namespace %q: not a namespace name (%s)", namespace, strings.Join(validation.IsDNS1123Label(namespace), "; "))
			case forServe:
				out = serve.RBACManifests(namespace, rbacName)
			case output == "json":
				out = kube.RulesJSON(kube.RBAC())
			default:
				out = kube.RoleYAML(rbacName, "", kube.RBAC())
			}
			_, err := stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "yaml (manifests) or json (the rules alone)")
	cmd.Flags().BoolVar(&forServe, "serve", false, "recycler serve's RBAC: ClusterRole, Lease Role and bindings to its ServiceAccount")
	cmd.Flags().StringVar(&namespace, "serve-namespace", "recycler", "with --serve: the namespace of serve's ServiceAccount and Lease")
	return cmd
}
