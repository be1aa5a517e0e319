//go:build tools

// Builds actionlint, which checks the release workflow (.github/workflows/release.yml): the
// workflow cannot run here, so its syntax, expressions and shell steps are what the tests check.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
