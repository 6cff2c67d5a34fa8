//go:build tools

// Build-only module: compiles the pinned gVisor (runsc and its containerd
// shim) for the local cluster. See cluster/build-gvisor.sh.
package tools

import (
	_ "gvisor.dev/gvisor/runsc"
	_ "gvisor.dev/gvisor/shim"
)
