//go:build tools

// Builds BuildKit (buildkitd with its runc worker, and buildctl) for the image tests: the
// Dockerfile's images are built as users build them, from this module's pinned version.
package tools

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
