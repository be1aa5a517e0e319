// Argo CD's health-script engine for the GitOps tests: gopher-lua, the Lua VM Argo CD's
// controller embeds (Argo CD's own util/lua package does not build here).
module rtdetr-edge.test/argocd-lua

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
