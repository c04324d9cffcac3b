//! The one Kubernetes version knode reports: the release it is tested against (its upstream control
//! plane and conformance suites are built at this release). The kubelet's `nodeInfo.kubeletVersion`,
//! the probe and hook user agents and the light control plane's `/version` all derive from it.

/// The release as literal tokens, so other constants can `concat!` it (the one place to change).
#[macro_export]
macro_rules! k8s_version {
    (major) => {
        "1"
    };
    (minor) => {
        "37"
    };
    (patch) => {
        "2"
    };
}

/// Major version.
pub const MAJOR: &str = k8s_version!(major);
/// Minor version.
pub const MINOR: &str = k8s_version!(minor);
/// Patch release.
pub const PATCH: &str = k8s_version!(patch);

/// `v1.37.2`: the upstream release knode follows.
pub const UPSTREAM: &str = concat!(
    "v",
    k8s_version!(major),
    ".",
    k8s_version!(minor),
    ".",
    k8s_version!(patch)
);

/// What knode's binaries report: the upstream release with knode's build metadata (semver `+`, so
/// version comparisons treat it as that release, as k3s does with `+k3s1`).
pub fn git_version() -> String {
    format!("{UPSTREAM}+knode.{}", env!("CARGO_PKG_VERSION"))
}

/// `major.minor`, as upstream's user agents carry it (`kube-probe/1.37`).
pub const MAJOR_MINOR: &str = concat!(k8s_version!(major), ".", k8s_version!(minor));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_agree() {
        assert_eq!(UPSTREAM, format!("v{MAJOR}.{MINOR}.{PATCH}"));
        assert_eq!(MAJOR_MINOR, format!("{MAJOR}.{MINOR}"));
        assert!(git_version().starts_with("v1.37.2+knode."));
    }
}
