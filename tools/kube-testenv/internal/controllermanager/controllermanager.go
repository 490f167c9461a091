// Package controllermanager is upstream's cmd/kube-controller-manager main, as a function.
package controllermanager

import (
	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// Main runs kube-controller-manager with os.Args and returns its exit code.
func Main() int {
	return cli.Run(app.NewControllerManagerCommand())
}
