package cli

import (
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/testenv"
)

func newControlPlaneCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Build or run the local Kubernetes control plane used by tests and the simulator",
		Long: `The local control plane is etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from pinned Go modules (tools/), with kwok playing the kubelets.
Binaries are cached per version under $RECYCLER_CACHE (default: <repo>/.cache).`,
		Args: cobra.NoArgs,
	}
	var opts testenv.Options
	cmd.PersistentFlags().StringVar(&opts.CacheDir, "cache-dir", "", "binary cache root (default $RECYCLER_CACHE, else <repo>/.cache)")
	cmd.PersistentFlags().StringVar(&opts.ToolsDir, "tools-dir", "", "tools modules to build from (default $RECYCLER_TOOLS_DIR, else <repo>/tools)")

	cmd.AddCommand(&cobra.Command{
		Use:   "build",
		Short: "Build the control-plane binaries into the cache (only what is missing)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o := opts
			o.Progress = stderr
			bins, err := testenv.EnsureBinaries(c.Context(), o)
			if err != nil {
				return fmt.Errorf("build control plane: %w", err)
			}
			_, err = fmt.Fprintln(stdout, bins.Dir)
			return err
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "tools [NAME…]",
		Short: "Build the test tools (Lambda emulator, aws-iam-authenticator, tofu, tflint, terraform-config-inspect) into the cache",
		Long: "Builds the named test tools, or all of them, into the cache (only what is missing) and prints NAME PATH lines.\nKnown: " +
			strings.Join(testenv.ToolNames(), ", ") + ".",
		RunE: func(c *cobra.Command, args []string) error {
			o := opts
			o.Progress = stderr
			if len(args) == 0 {
				args = testenv.ToolNames()
			}
			for _, name := range args {
				p, err := testenv.EnsureTool(c.Context(), o, name)
				if err != nil {
					return fmt.Errorf("build test tools: %w", err)
				}
				if _, err := fmt.Fprintln(stdout, name, p); err != nil {
					return err
				}
			}
			return nil
		},
	})

	var keep bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Start the control plane and keep it running until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			o := opts
			o.Progress = stderr
			o.KeepDir = keep
			env, err := testenv.Start(ctx, o)
			if err != nil {
				return fmt.Errorf("start control plane: %w", err)
			}
			fmt.Fprintf(stdout, "export KUBECONFIG=%s\n", env.Kubeconfig)
			fmt.Fprintf(stderr, "control plane running (logs in %s); nodes annotated %s=%s are played by kwok. Ctrl-C stops it.\n",
				env.Dir, testenv.KwokNodeAnnotation, testenv.KwokNodeAnnotationValue)
			<-ctx.Done()
			fmt.Fprintln(stderr, "stopping the control plane")
			if err := env.Stop(); err != nil {
				return fmt.Errorf("stop control plane: %w", err)
			}
			return nil
		},
	}
	up.Flags().BoolVar(&keep, "keep", false, "keep the control plane's directory (logs, kubeconfig) after stopping")
	cmd.AddCommand(up)
	return cmd
}
