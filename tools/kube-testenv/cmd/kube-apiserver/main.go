// Command kube-apiserver: one binary of the test control plane (see ../../README.md).
package main

import (
	"os"

	"datalab.local/tools/kube-testenv/internal/apiserver"
)

func main() {
	os.Exit(apiserver.Main())
}
