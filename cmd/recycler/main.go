// Command recycler replaces Kubernetes worker nodes with zero downtime.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/recycler/recycler/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
