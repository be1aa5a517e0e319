//go:build tools

// Builds cosign, which signs the images and the chart by digest with a key pair and verifies
// those signatures before an install (no transparency log: the tests run offline).
package tools

import _ "github.com/sigstore/cosign/v2/cmd/cosign"
