use super::*;

#[test]
fn memory_working_set_is_usage_minus_inactive_file() {
    let v1 = cgroup_memory(
        Version::V1,
        "1000000\n",
        "cache 5\nrss 7\ntotal_rss 600000\ntotal_inactive_file 300000\ntotal_pgfault 42\ntotal_pgmajfault 2\n",
        "9223372036854771712\n",
    )
    .unwrap();
    assert_eq!(v1.working_set, 700_000);
    assert_eq!((v1.rss, v1.page_faults, v1.major_page_faults), (600_000, 42, 2));
    assert_eq!(v1.limit, None, "the v1 'no limit' value");
    let v2 = cgroup_memory(
        Version::V2,
        "5000",
        "anon 3000\ninactive_file 1000\npgfault 9\npgmajfault 1\n",
        "8192\n",
    )
    .unwrap();
    assert_eq!((v2.working_set, v2.rss, v2.limit), (4000, 3000, Some(8192)));
    let s = memory_stats("t", &v2, None);
    assert_eq!(s.available_bytes, Some(4192));
    assert_eq!(cgroup_memory(Version::V2, "10", "", "max").unwrap().limit, None);
    assert!(cgroup_memory(Version::V1, "garbage", "", "").is_none());
    // inactive_file larger than usage never underflows.
    assert_eq!(
        cgroup_memory(Version::V2, "5", "inactive_file 10", "max")
            .unwrap()
            .working_set,
        0
    );
}

#[test]
fn cpu_usage_from_v1_v2_and_proc_stat() {
    assert_eq!(cgroup_cpu_ns(Version::V1, "123456789\n"), Some(123_456_789));
    assert_eq!(
        cgroup_cpu_ns(Version::V2, "usage_usec 1500\nuser_usec 1000\n"),
        Some(1_500_000)
    );
    let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4\n";
    // user+nice+system+irq+softirq+steal = 100+5+50+3+2+1 = 161 ticks of 10 ms.
    assert_eq!(proc_stat_cpu_ns(stat), Some(1_610_000_000));
}

#[test]
fn node_memory_from_meminfo() {
    let meminfo = "MemTotal: 1000 kB\nMemFree: 200 kB\nInactive(file): 300 kB\nAnonPages: 100 kB\n";
    let (m, total) = node_memory(meminfo, "pgfault 5\npgmajfault 1\n").unwrap();
    assert_eq!(total, 1_024_000);
    assert_eq!(m.usage, 800 * 1024);
    assert_eq!(m.working_set, 500 * 1024);
    let s = memory_stats("t", &m, Some(total));
    assert_eq!(s.available_bytes, Some(500 * 1024));
    assert_eq!(s.page_faults, Some(5));
}

#[test]
fn net_dev_leaves_out_loopback_and_picks_eth0() {
    let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    2000      20    3    0    0     0          0         0     4000      40    5    0    0     0       0          0\n  veth1:     10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0\n";
    let ifs = parse_net_dev(text);
    assert_eq!(ifs.len(), 2);
    let n = network_stats("t", ifs).unwrap();
    assert_eq!(n.default.name, "eth0");
    assert_eq!(
        (
            n.default.rx_bytes,
            n.default.rx_errors,
            n.default.tx_bytes,
            n.default.tx_errors
        ),
        (Some(2000), Some(3), Some(4000), Some(5))
    );
    let v = serde_json::to_value(&n).unwrap();
    assert_eq!(v["name"], "eth0", "the default interface is inline, as upstream");
    assert_eq!(v["rxBytes"], 2000);
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
    assert!(network_stats("t", vec![]).is_none());
}

#[test]
fn cpu_rate_from_deltas() {
    let r = CpuRates::default();
    assert_eq!(r.observe("c", 0, 0), None, "one sample has no rate");
    // Half a core for 2 s.
    assert_eq!(r.observe("c", 2_000_000_000, 1_000_000_000), Some(500_000_000));
    // A quick second look keeps the rate.
    assert_eq!(r.observe("c", 2_100_000_000, 1_000_000_001), Some(500_000_000));
    // A reset counter (new cgroup) starts over.
    assert_eq!(r.observe("c", 5_000_000_000, 10), None);
    r.retain(&std::collections::BTreeSet::new());
    assert_eq!(r.observe("c", 9_000_000_000, 20), None);
}

#[test]
fn summary_serializes_in_upstream_shape() {
    let s = Summary {
        node: NodeStats {
            node_name: "n1".into(),
            start_time: "2024-01-01T00:00:00Z".into(),
            ..Default::default()
        },
        pods: vec![PodStats {
            pod_ref: PodReference::new("ns", "p", "u"),
            ephemeral_storage: Some(FsStats {
                used_bytes: Some(5),
                ..Default::default()
            }),
            volume: vec![VolumeStats {
                fs: FsStats {
                    used_bytes: Some(1),
                    ..Default::default()
                },
                name: "data".into(),
            }],
            process_stats: Some(ProcessStats {
                process_count: Some(1),
            }),
            ..Default::default()
        }],
    };
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["node"]["nodeName"], "n1");
    assert_eq!(v["pods"][0]["podRef"]["uid"], "u");
    assert_eq!(v["pods"][0]["ephemeral-storage"]["usedBytes"], 5);
    assert_eq!(v["pods"][0]["volume"][0]["name"], "data");
    assert_eq!(v["pods"][0]["volume"][0]["usedBytes"], 1);
    assert_eq!(v["pods"][0]["process_stats"]["process_count"], 1);
    let back: Summary = serde_json::from_value(v).unwrap();
    assert_eq!(back, s);
}
