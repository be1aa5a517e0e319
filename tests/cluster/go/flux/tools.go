//go:build tools

// Package tools pins Flux's source-controller and kustomize-controller for the GitOps tests;
// tests/cluster/build.py builds their main packages from this module's go.mod.
package tools

import (
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
