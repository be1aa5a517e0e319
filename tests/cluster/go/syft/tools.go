//go:build tools

// Builds syft, which writes each image's SBOM (SPDX JSON) from the image in the registry, as a
// release does before it signs.
package tools

import _ "github.com/anchore/syft/cmd/syft"
