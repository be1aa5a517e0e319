//go:build tools

// CoreDNS, the test cluster's DNS (Services by name from pods).
package tools

import (
	_ "github.com/coredns/coredns"
)
