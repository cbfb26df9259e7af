package cli

import (
	"context"
	"errors"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/recycler/recycler/internal/eksauth"
)

// kubeConfig is the Kubernetes client configuration the flags ask for. With
// --cluster (RECYCLER_CLUSTER): native EKS auth — endpoint and CA from
// eks:DescribeCluster, a token signed with the AWS credentials — after checking
// that the cluster is in the AWS configuration's region and account. Otherwise
// the kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config).
func (s *stateFlags) kubeConfig(ctx context.Context, cfg sdkaws.Config) (*rest.Config, error) {
	if s.cluster == "" {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if s.kubeconfig != "" {
			rules.ExplicitPath = s.kubeconfig
		}
		rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, usageError{fmt.Errorf("kubeconfig: %w (set --kubeconfig or KUBECONFIG, or --cluster NAME for an EKS cluster)", err)}
		}
		return rc, nil
	}
	if s.kubeconfig != "" {
		return nil, usageError{errors.New("--cluster and --kubeconfig both given: pass one (--cluster connects to an EKS cluster without a kubeconfig)")}
	}
	if err := eksauth.ValidateClusterName(s.cluster); err != nil {
		return nil, usageError{fmt.Errorf("--cluster: %w", err)}
	}
	auth, err := eksauth.New(cfg, eksauth.Options{})
	if err != nil {
		return nil, usageError{fmt.Errorf("--cluster %s: %w", s.cluster, err)}
	}
	c, err := auth.Cluster(ctx, s.cluster)
	if errors.Is(err, eksauth.ErrClusterNotFound) {
		return nil, usageError{fmt.Errorf("--cluster: %w", err)}
	}
	if err != nil {
		return nil, err
	}
	account, err := auth.CallerAccount(ctx)
	if err != nil {
		return nil, fmt.Errorf("--cluster %s: %w", s.cluster, err)
	}
	if err := c.CheckAccount(cfg.Region, account); err != nil {
		return nil, usageError{err}
	}
	return auth.RESTConfig(ctx, s.cluster)
}
