// Command lambda is Recycler's AWS Lambda function (the `bootstrap` of a
// provided.al2023 runtime; build with -tags lambda.norpc: `make lambda-zip`).
package main

import (
	"context"
	"os"

	"github.com/recycler/recycler/internal/lambda"
)

func main() {
	os.Exit(lambda.Main(context.Background(), os.Getenv, os.Stdout))
}
