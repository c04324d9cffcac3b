//go:build tools

// Package coredns only names the command scripts/build-upstream.sh builds, so that `go mod tidy` keeps
// every module it needs in go.mod and go.sum. It is never compiled (build tag "tools").
package coredns

import _ "github.com/coredns/coredns"
