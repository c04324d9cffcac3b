//go:build tools

// Package upstream only names the commands scripts/build-upstream.sh builds, so that `go mod tidy`
// keeps every module they need in go.mod and go.sum. It is never compiled (build tag "tools").
package upstream

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
