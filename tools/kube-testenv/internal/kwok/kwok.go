// Package kwok is upstream's sigs.k8s.io/kwok/cmd/kwok main, as a function: fake nodes whose
// pods become Running without a container runtime.
package kwok

import (
	"os"

	"github.com/spf13/pflag"

	"sigs.k8s.io/kwok/pkg/config"
	"sigs.k8s.io/kwok/pkg/kwok/cmd"
	"sigs.k8s.io/kwok/pkg/log"
	"sigs.k8s.io/kwok/pkg/utils/signals"
)

// Main runs kwok with os.Args and returns its exit code.
func Main() int {
	dropKubernetesVersionFlag()
	flagset := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flagset.ParseErrorsAllowlist.UnknownFlags = true
	flagset.Usage = func() {}

	ctx := signals.SetupSignalContext()
	ctx, logger := log.InitFlags(ctx, flagset)

	ctx, err := config.InitFlags(ctx, flagset)
	if err != nil {
		_, _ = os.Stderr.Write([]byte(flagset.FlagUsages()))
		logger.Error("Init config flags", "err", err)
		return 1
	}

	command := cmd.NewCommand(ctx)
	command.PersistentFlags().AddFlagSet(flagset)
	if err := command.ExecuteContext(ctx); err != nil {
		logger.Error("Execute exit", "err", err)
		return 1
	}
	return 0
}

// dropKubernetesVersionFlag removes from pflag's global flags the --version that
// k8s.io/component-base/version/verflag registers when it is linked in (it is, in the
// multi-call kube-testenv): cobra merges the global flags into kwok's and then reads its own
// --version as a bool, which that one is not.
func dropKubernetesVersionFlag() {
	kept := pflag.NewFlagSet(os.Args[0], pflag.ExitOnError)
	pflag.CommandLine.VisitAll(func(flag *pflag.Flag) {
		if flag.Name != "version" {
			kept.AddFlag(flag)
		}
	})
	pflag.CommandLine = kept
}
