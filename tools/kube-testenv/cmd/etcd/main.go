// Command etcd: one binary of the test control plane (see ../../README.md).
package main

import (
	"os"

	"datalab.local/tools/kube-testenv/internal/etcd"
)

func main() {
	os.Exit(etcd.Main())
}
