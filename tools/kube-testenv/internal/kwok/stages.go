package kwok

import (
	"fmt"
	"strings"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodeheartbeatwithlease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

// Stages prints kwok's default stages, the ones kwokctl gives a cluster whose nodes keep a
// lease (nodes become Ready and renew their lease; pods become Running and Ready at once,
// complete, and are deleted), as one YAML stream for kwok's --config.
func Stages() int {
	docs := []string{
		nodefast.DefaultNodeInit,
		nodeheartbeatwithlease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	}
	for i, doc := range docs {
		docs[i] = strings.TrimSpace(doc)
	}
	fmt.Println(strings.Join(docs, "\n---\n"))
	return 0
}
