//! The README's main command (`scripts/up.sh`) end to end, so it cannot rot: run inside a
//! test-created network namespace (its own loopback, bridge and nftables; the host's network is
//! untouched) with a private state dir, it must bring up containerd, the control plane, the
//! kubelet and kube-proxy, serve the demo through its Service, and `--down` must remove it all —
//! with knode's control plane (the default) and with the upstream one (`--control-plane upstream`,
//! the node joining by bootstrap token).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use knode_harness::netns::NodeNetns;

struct Down<'a> {
    ns: &'a NodeNetns,
    up: String,
    dir: String,
    env: Vec<(&'static str, String)>,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match self.ns.run(&[&self.up, "--down", "--dir", &self.dir], &env) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("up.sh --down: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("up.sh --down: {e}"),
        }
    }
}

#[test]
fn readme_main_command_brings_up_a_cluster_serving_the_demo_and_tears_it_down() {
    up_demo_down("knode", "10.201.0.1");
}

#[test]
fn readme_main_command_with_the_upstream_control_plane() {
    up_demo_down("upstream", "10.201.1.1");
}

fn up_demo_down(mode: &str, node_ip: &str) {
    knode_harness::require_root().unwrap();
    let root = knode_harness::workspace_root();
    let up = root.join("scripts/up.sh").display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster").display().to_string();
    let ns = NodeNetns::create(&format!("kn-up{mode:.1}-{}", std::process::id()), node_ip, true).unwrap();
    let bin_dir = knode_harness::control_plane::target_bin("kubelet")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let cgroup = format!("/knode-up-test-{mode}-{}", std::process::id());
    let env_owned: Vec<(&'static str, String)> =
        vec![("KNODE_BIN_DIR", bin_dir), ("KNODE_CGROUP_ROOT", cgroup.clone())];
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let guard = Down {
        ns: &ns,
        up: up.clone(),
        dir: dir.clone(),
        env: env_owned.clone(),
    };
    let out = ns
        .run(
            &[
                &up,
                "--dir",
                &dir,
                "--no-setup",
                "--no-build",
                "--node-ip",
                node_ip,
                "--control-plane",
                mode,
            ],
            &env,
        )
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let logs = || {
        ["kubelet", "kube-proxy", "control-plane"]
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(format!("{dir}/{f}.log")).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                format!(
                    "--- {f}.log\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.status.success(),
        "up.sh failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    assert!(stdout.contains("knode single-node cluster is up"), "{stdout}");
    assert!(stdout.contains("The demo pod answered \"demo\""), "{stdout}");
    // The printed kubectl lines work (upstream mode: with the built kubectl it prints).
    let kc = format!("{dir}/admin.conf");
    let kubectl = if mode == "upstream" {
        format!("{dir}/cp/kubectl")
    } else {
        "kubectl".to_string()
    };
    let kubectl = kubectl.as_str();
    if mode == "upstream" {
        assert!(stdout.contains(&format!("alias kubectl={kubectl}")), "{stdout}");
        let nodes = ns
            .run(&[kubectl, "--kubeconfig", &kc, "get", "csr"], &[])
            .unwrap();
        let csrs = String::from_utf8_lossy(&nodes.stdout).into_owned();
        assert!(
            csrs.contains("kube-apiserver-client-kubelet") && csrs.contains("kubelet-serving"),
            "the node joined by CSRs: {csrs}"
        );
        // Cluster DNS: up.sh showed the Service resolved from the pod; the printed lines work.
        let cluster_ip = ns
            .run(
                &[
                    kubectl,
                    "--kubeconfig",
                    &kc,
                    "get",
                    "svc",
                    "demo",
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ],
                &[],
            )
            .unwrap();
        let cluster_ip = String::from_utf8_lossy(&cluster_ip.stdout).into_owned();
        let shown = stdout
            .split("cluster DNS (CoreDNS at 10.96.0.10) answers for the Service:")
            .nth(1)
            .unwrap_or_else(|| panic!("no nslookup shown: {stdout}"));
        assert!(!cluster_ip.is_empty() && shown.contains(&cluster_ip), "{stdout}");
        for line in [
            "kubectl exec demo -- nslookup demo.default.svc.cluster.local",
            "kubectl exec demo -- wget -qO- http://demo.default/hostname",
        ] {
            assert!(stdout.contains(line), "{stdout}");
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            let mut args = vec![kubectl, "--kubeconfig", &kc];
            args.extend(words);
            let o = ns.run(&args, &[]).unwrap();
            let answer = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success() && (answer.contains(&cluster_ip) || answer == "demo"),
                "{line}: {answer} {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let pods = ns
        .run(&[kubectl, "--kubeconfig", &kc, "get", "pods", "-o", "wide"], &[])
        .unwrap();
    let pods = String::from_utf8_lossy(&pods.stdout).into_owned();
    assert!(
        pods.contains("demo") && pods.contains("Running") && pods.contains("10.244.0."),
        "{pods}"
    );
    let logs = ns
        .run(&[kubectl, "--kubeconfig", &kc, "logs", "demo"], &[])
        .unwrap();
    assert!(
        logs.status.success(),
        "kubectl logs demo: {}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let slices = ns
        .run(
            &[
                kubectl,
                "--kubeconfig",
                &kc,
                "get",
                "endpointslices",
                "-o",
                "name",
            ],
            &[],
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&slices.stdout).contains("endpointslice"),
        "{slices:?}"
    );
    drop(guard);
    assert!(
        !std::path::Path::new(&dir).exists(),
        "--down removed the state dir"
    );
    let tables = ns.run(&["nft", "list", "tables"], &[]).unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(
        !tables.contains("kube-proxy") && !tables.contains("knode-cni"),
        "{tables}"
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", &dir])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        assert!(
            !ctl.path().join(cgroup.trim_start_matches('/')).exists(),
            "cgroups removed"
        );
    }
}
