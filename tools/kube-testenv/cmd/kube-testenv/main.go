// Command kube-testenv is every binary of the test control plane in one executable, linked
// once (linking is a large part of a cold build): it runs the component named by the name it
// was started under (a symlink kube-apiserver -> kube-testenv runs kube-apiserver) or by its
// first argument (kube-testenv etcd --data-dir ...).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"datalab.local/tools/kube-testenv/internal/apiserver"
	"datalab.local/tools/kube-testenv/internal/controllermanager"
	"datalab.local/tools/kube-testenv/internal/etcd"
	"datalab.local/tools/kube-testenv/internal/kwok"
	"datalab.local/tools/kube-testenv/internal/scheduler"
)

var components = map[string]func() int{
	"kube-apiserver":          apiserver.Main,
	"kube-controller-manager": controllermanager.Main,
	"kube-scheduler":          scheduler.Main,
	"etcd":                    etcd.Main,
	"kwok":                    kwok.Main,
	// Not a binary: prints kwok's default stages (a --config file for kwok).
	"kwok-stages": kwok.Stages,
}

func main() {
	if run, ok := components[filepath.Base(os.Args[0])]; ok {
		os.Exit(run())
	}
	if len(os.Args) > 1 {
		if run, ok := components[os.Args[1]]; ok {
			os.Args = os.Args[1:]
			os.Exit(run())
		}
	}
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: kube-testenv {%s} [flags...] (or start it through a symlink of that name)\n",
		strings.Join(names, "|"))
	os.Exit(2)
}
