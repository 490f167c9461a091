// Package apiserver is upstream's cmd/kube-apiserver main, as a function.
package apiserver

import (
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// Main runs kube-apiserver with os.Args and returns its exit code.
func Main() int {
	return cli.Run(app.NewAPIServerCommand())
}
