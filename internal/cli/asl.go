package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/recycler/recycler/internal/recycle"
)

func newASLCmd(stdout io.Writer) *cobra.Command {
	var (
		functionARN string
		rollback    bool
	)
	cmd := &cobra.Command{
		Use:   "asl",
		Short: "Print the recycle state machine (Amazon States Language JSON)",
		Long: `Print the recycle workflow as Amazon States Language JSON: the definition the embedded
engine runs and the one deployed to AWS Step Functions. With --function-arn, the Lambda
placeholder ` + recycle.FunctionPlaceholder + ` is replaced by that ARN; with --rollback it prints
the rollback state machine an abort starts. deploy/terraform deploys exactly these.`,
		Example: "  recycler asl --function-arn arn:aws:lambda:eu-west-1:123456789012:function:recycler > recycle.asl.json",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			def, err := recycle.Definition(functionARN)
			if rollback {
				def, err = recycle.DeployedRollbackDefinition(functionARN)
			}
			if err != nil {
				return usageError{err}
			}
			_, err = stdout.Write(def)
			return err
		},
	}
	cmd.Flags().BoolVar(&rollback, "rollback", false, "print the rollback state machine (started by an abort) instead; needs --function-arn")
	cmd.Flags().StringVar(&functionARN, "function-arn", "", "Lambda function ARN to put in place of "+recycle.FunctionPlaceholder)
	return cmd
}
