//! knode's end-to-end suite. The tests live in `tests/`; each starts its own private containerd,
//! registry and namespaces through `knode-harness`, so they run as root, repeatedly, side by side.
