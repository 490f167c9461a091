// Command kube-scheduler: one binary of the test control plane (see ../../README.md).
package main

import (
	"os"

	"datalab.local/tools/kube-testenv/internal/scheduler"
)

func main() {
	os.Exit(scheduler.Main())
}
