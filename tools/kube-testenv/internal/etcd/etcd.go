// Package etcd is the etcd server's main (go.etcd.io/etcd/server/v3, at the version that
// k8s.io/kubernetes requires), as a function.
package etcd

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

// Main runs etcd with os.Args; etcd exits the process itself when it stops.
func Main() int {
	etcdmain.Main(os.Args)
	return 0
}
