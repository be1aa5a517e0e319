//go:build tools

// Builds the image tests' registry and its client: distribution's registry (the reference OCI
// distribution server, filesystem storage) serves the images and the chart on loopback; crane
// (go-containerregistry) makes the Debian base image from its root filesystem and reads digests,
// as users mirror images into a private registry.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "github.com/google/go-containerregistry/cmd/crane"
)
