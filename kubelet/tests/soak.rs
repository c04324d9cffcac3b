#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Leak soak: waves of pods created and deleted on one knode node of an upstream cluster for
//! `KNODE_SOAK_SECS` (300 by default, the CI's quick mode; 1800 for the long run). Every wave has
//! init containers, emptyDir / configMap / secret / projected-token volumes, readiness and liveness
//! probes, one restart per pod, pod networking, and a Service of its own carrying TCP and UDP
//! traffic from the node. The node's traces and the daemons' resources are counted after a
//! warm-up wave and after the soak (printed side by side): no cgroup, netns pin, IPAM reservation,
//! snapshot, mount, log dir, pod dir, nft element, UDP conntrack entry, daemon file descriptor or
//! thread may be left over, and the kubelet's and kube-proxy's RSS stay within 10 % of warm-up.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::leaks::{dirs_named, mount_points};
use knode_harness::cluster::{ClusterNode, ClusterOptions, KnodeCluster};
use knode_harness::netns::in_netns;
use serde_json::Value;

const PODS_PER_WAVE: usize = 5;
const T: Duration = Duration::from_secs(180);

fn apply(c: &KnodeCluster, yaml: &str) {
    c.cp.run_kubectl(&["apply", "-f", "-"], Some(yaml))
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
}

fn wave_yaml(wave: usize, img: &str) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: wave-{wave}}}\nspec:\n  selector: {{wave: \"{wave}\"}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n  - {{name: echo, port: 53, targetPort: 8081, protocol: UDP}}\n"
    );
    for i in 0..PODS_PER_WAVE {
        // The main container's first start exits 1 (one restart per pod), the second serves.
        y.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: w{wave}-{i}, labels: {{app: soak, wave: "{wave}"}}}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {{name: init, image: {img}, command: [sh, -c, "echo init > /data/init"],
     volumeMounts: [{{name: data, mountPath: /data}}]}}
  containers:
  - name: main
    image: {img}
    command: [sh, -c, "if [ ! -e /data/started ]; then touch /data/started; exit 1; fi; exec /testimg serve --udp-port 8081"]
    ports: [{{containerPort: 8080}}, {{containerPort: 8081, protocol: UDP}}]
    readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
  volumes:
  - {{name: data, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: soak}}}}
  - {{name: sec, secret: {{secretName: soak}}}}
"#
        ));
    }
    y
}

/// One wave: create, wait until every pod is Ready after its restart, send TCP and UDP through
/// the wave's ClusterIP from the node, delete everything and wait until the API has none of it.
/// Returns the wave's ClusterIP.
fn wave(c: &KnodeCluster, n: usize) -> String {
    let node = &c.nodes[0];
    apply(c, &wave_yaml(n, &c.images.testimg.reference));
    let selector = format!("wave={n}");
    c.wait_for(&format!("wave {n} Ready"), T, || {
        let pods: Value = serde_json::from_str(&c.kubectl(&["get", "pods", "-l", &selector, "-o", "json"]))
            .unwrap_or(Value::Null);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        items.len() == PODS_PER_WAVE
            && items.iter().all(|p| {
                let s = &p["status"]["containerStatuses"][0];
                s["ready"] == true && s["restartCount"].as_i64() >= Some(1)
            })
    })
    .unwrap();
    let ip = c.kubectl(&[
        "get",
        "svc",
        &format!("wave-{n}"),
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let addr: Ipv4Addr = ip.parse().unwrap();
    let answered = in_netns(&node.netns.name, move || {
        let mut ok = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while ok < 10 && Instant::now() < deadline {
            if knode_harness::registry::http_status_at(addr, 80, "/hostname") == Some(200) {
                ok += 1;
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut udp = 0;
        while udp < 3 && Instant::now() < deadline {
            let _ = sock.send_to(b"hostname", (addr, 53));
            let mut buf = [0u8; 256];
            if let Ok((len, _)) = sock.recv_from(&mut buf)
                && String::from_utf8_lossy(&buf[..len]).starts_with('w')
            {
                udp += 1;
            }
        }
        (ok, udp)
    })
    .unwrap();
    assert_eq!(answered, (10, 3), "wave {n}: answers through {ip} (TCP, UDP)");
    c.kubectl(&["delete", "svc", &format!("wave-{n}")]);
    c.kubectl(&["delete", "pods", "-l", &selector, "--wait=false"]);
    c.wait_for(&format!("wave {n} gone"), T, || {
        c.kubectl(&["get", "pods", "-l", &selector, "-o", "name"])
            .is_empty()
    })
    .unwrap();
    ip
}

fn entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().count() as u64)
        .unwrap_or(0)
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn in_node(node: &ClusterNode, args: &[&str]) -> String {
    let o = node.netns.command(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Elements of kube-proxy's sets and maps in the node's namespace.
fn nft_elements(node: &ClusterNode) -> u64 {
    let v: Value =
        serde_json::from_str(&in_node(node, &["nft", "-j", "list", "ruleset"])).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .filter(|s| s["table"] == "kube-proxy")
        .map(|s| s["elem"].as_array().map(|e| e.len() as u64).unwrap_or(0))
        .sum()
}

/// conntrack entries in the node's namespace: (all, UDP ones towards any of `ips`).
fn conntrack(node: &ClusterNode, ips: &[String]) -> (u64, u64) {
    let out = in_node(node, &["conntrack", "-L"]);
    let udp_to: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("udp") && ips.iter().any(|ip| l.contains(&format!("dst={ip} "))))
        .collect();
    (out.lines().count() as u64, udp_to.len() as u64)
}

/// Everything counted, by name.
fn counts(c: &KnodeCluster, wave_ips: &[String]) -> BTreeMap<&'static str, u64> {
    let node = &c.nodes[0];
    let dir = node.dir();
    let ctr = |args: &[&str]| -> Vec<String> {
        let o = node.containerd().ctr(&node.ns).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    let ipam: u64 = std::fs::read_dir(dir.join("ipam"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
                .count() as u64
        })
        .sum();
    let (ct_all, ct_udp) = conntrack(node, wave_ips);
    let kubelet = node.kubelet_pid().unwrap();
    let proxy = node.proxy_pid().unwrap();
    BTreeMap::from([
        ("containers", ctr(&["containers", "ls", "-q"]).len() as u64),
        (
            "snapshots (active)",
            ctr(&["snapshots", "ls"])
                .iter()
                .filter(|l| l.split_whitespace().nth(2) == Some("Active"))
                .count() as u64,
        ),
        (
            "pod cgroups",
            dirs_named(
                &Path::new("/sys/fs/cgroup/memory").join(node.cgroup_root().trim_start_matches('/')),
                "pod",
            ) as u64,
        ),
        (
            "netns pins",
            mount_points(&dir.join("root/sandboxes")).len() as u64,
        ),
        ("mounts", mount_points(dir).len() as u64),
        ("IPAM reservations", ipam),
        ("log dirs", entries(&dir.join("logs"))),
        ("pod dirs", entries(&dir.join("root/pods"))),
        ("nft elements", nft_elements(node)),
        ("conntrack entries (all)", ct_all),
        ("conntrack UDP to wave Services", ct_udp),
        ("kubelet fds", entries(Path::new(&format!("/proc/{kubelet}/fd")))),
        ("kubelet threads", proc_status(kubelet, "Threads:")),
        ("kubelet RSS KiB", proc_status(kubelet, "VmRSS:")),
        ("kube-proxy fds", entries(Path::new(&format!("/proc/{proxy}/fd")))),
        ("kube-proxy threads", proc_status(proxy, "Threads:")),
        ("kube-proxy RSS KiB", proc_status(proxy, "VmRSS:")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_pods_leave_nothing_behind() {
    let secs: u64 = std::env::var("KNODE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let c = KnodeCluster::start(ClusterOptions {
        nodes: 1,
        coredns: false,
        // Restarts come back after 1 s (not upstream's 10 s) so a wave takes seconds.
        kubelet_config: "crashLoopBackOff:\n  maxContainerRestartPeriod: 1s\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.kubectl(&["create", "configmap", "soak", "--from-literal=k=v"]);
    c.kubectl(&["create", "secret", "generic", "soak", "--from-literal=k=v"]);
    // Daemons settle (idle blocking threads retire after 10 s) before each count, and the UDP
    // flows towards deleted Services age out of conntrack (30 s for a flow that was never
    // "assured"; upstream's kube-proxy, like knode's, deletes only entries of Services that still
    // exist): an entry that never goes away would be a leak.
    let settle = |ips: &[String]| {
        std::thread::sleep(Duration::from_secs(15));
        c.wait_for("UDP conntrack entries towards deleted Services gone", T, || {
            conntrack(&c.nodes[0], ips).1 == 0
        })
        .unwrap();
    };

    let mut ips = vec![wave(&c, 0)];
    settle(&ips);
    let warm = counts(&c, &ips);
    let start = Instant::now();
    let mut waves = 1;
    while start.elapsed() < Duration::from_secs(secs) {
        ips.push(wave(&c, waves));
        waves += 1;
    }
    settle(&ips);
    let after = counts(&c, &ips);

    eprintln!(
        "soak: {waves} waves of {PODS_PER_WAVE} pods in {:?}\n{:<34} {:>12} {:>12}",
        start.elapsed(),
        "",
        "after warm-up",
        "after soak"
    );
    for (k, w) in &warm {
        eprintln!("{k:<34} {w:>12} {:>12}", after[k]);
    }
    // Traces must be back to their warm-up count exactly. A daemon's descriptors and threads
    // may differ by a pooled connection or an idle worker between two counts; a leak grows
    // with the number of waves, so two is the slack.
    let slack = |k: &str| u64::from(k.ends_with(" fds") || k.ends_with(" threads")) * 2;
    let leaks: Vec<String> = warm
        .iter()
        .filter(|(k, _)| !k.contains("RSS") && **k != "conntrack entries (all)")
        .filter(|(k, w)| after[*k] > **w + slack(k))
        .map(|(k, w)| format!("{k}: {w} -> {}", after[*k]))
        .collect();
    assert!(
        leaks.is_empty(),
        "left over after the soak: {leaks:?}\n{}",
        c.log_tails(30)
    );
    for k in ["kubelet RSS KiB", "kube-proxy RSS KiB"] {
        assert!(
            after[k] * 10 <= warm[k] * 11,
            "{k}: {} after warm-up, {} after the soak (more than 10 % growth)",
            warm[k],
            after[k]
        );
    }
}
