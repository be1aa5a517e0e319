//go:build tools

// runc (see go.mod).
package tools

import _ "github.com/opencontainers/runc"
