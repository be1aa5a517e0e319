//go:build tools

// crictl, to look at the test node's containers the way a node's admin does.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
