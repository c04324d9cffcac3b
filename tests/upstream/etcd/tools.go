//go:build tools

// Package etcd only names the command scripts/build-upstream.sh builds, so that `go mod tidy` keeps
// every module it needs in go.mod and go.sum. It is never compiled (build tag "tools").
package etcd

import _ "go.etcd.io/etcd/server/v3"
