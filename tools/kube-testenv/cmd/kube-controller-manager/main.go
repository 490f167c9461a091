// Command kube-controller-manager: one binary of the test control plane (see ../../README.md).
package main

import (
	"os"

	"datalab.local/tools/kube-testenv/internal/controllermanager"
)

func main() {
	os.Exit(controllermanager.Main())
}
