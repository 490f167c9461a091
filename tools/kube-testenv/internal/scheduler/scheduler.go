// Package scheduler is upstream's cmd/kube-scheduler main, as a function.
package scheduler

import (
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version" // for version metric registration
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// Main runs kube-scheduler with os.Args and returns its exit code.
func Main() int {
	return cli.Run(app.NewSchedulerCommand())
}
