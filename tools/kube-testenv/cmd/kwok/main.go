// Command kwok: one binary of the test control plane (see ../../README.md).
package main

import (
	"os"

	"datalab.local/tools/kube-testenv/internal/kwok"
)

func main() {
	os.Exit(kwok.Main())
}
