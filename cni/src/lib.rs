//! CNI 1.0 library (network config, results, plugin invocation) shared by the kubelet and
//! knode's own `knode-bridge` plugin. Not implemented yet: see the project's open issues.
