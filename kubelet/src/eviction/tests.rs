//! Unit tests of the eviction decisions: threshold parsing, quantities, observations, grace
//! periods and the pressure-transition period, ranking, messages, local-storage limits, admission.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, Pod, PodSpec, PodStatus, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::decide::{self, Observation, Observations, State};
use super::*;
use crate::stats::{
    ContainerStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, Summary, VolumeStats,
};

fn config(
    hard: &[(&str, &str)],
    soft: &[(&str, &str)],
    grace: &[(&str, &str)],
) -> Result<EvictionConfig, EvictionError> {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let c = KubeletConfiguration {
        eviction_hard: map(hard),
        eviction_soft: map(soft),
        eviction_soft_grace_period: map(grace),
        eviction_pressure_transition_period: Duration::from_secs(30),
        ..Default::default()
    };
    EvictionConfig::from_kubelet(&c)
}

fn mi(n: i64) -> i64 {
    n << 20
}

#[test]
fn quantities_print_as_kubernetes_does() {
    assert_eq!(Qty::binary(mi(100)).to_string(), "100Mi");
    assert_eq!(Qty::binary(12 * 1024).to_string(), "12Ki");
    assert_eq!(Qty::binary(1536 * 1024).to_string(), "1536Ki");
    assert_eq!(Qty::binary(1500).to_string(), "1500");
    assert_eq!(Qty::binary(512).to_string(), "512");
    assert_eq!(
        Qty::binary(1000).to_string(),
        "1k",
        "below 1Ki binary prints as decimal"
    );
    assert_eq!(Qty::binary(0).to_string(), "0");
    assert_eq!(Qty::decimal(5_000_000).to_string(), "5M");
    assert_eq!(Qty::decimal(838_860).to_string(), "838860");
    assert_eq!(Qty::parse("1.5Gi").unwrap().to_string(), "1536Mi");
    assert_eq!(Qty::parse("100M").unwrap().to_string(), "100M");
    assert_eq!(Qty::parse("1024Ki").unwrap().to_string(), "1Mi");
    assert_eq!(
        Qty::parse("1.5").unwrap().value,
        2,
        "rounded up as Quantity.Value()"
    );
}

#[test]
fn default_thresholds_parse_with_the_allocatable_copy() {
    let c = EvictionConfig::from_kubelet(&KubeletConfiguration::default()).unwrap();
    let names: Vec<&str> = c.thresholds.iter().map(|t| t.signal.name()).collect();
    assert_eq!(
        names,
        [
            "imagefs.available",
            "memory.available",
            "nodefs.available",
            "nodefs.inodesFree",
            "allocatableMemory.available"
        ]
    );
    let mem = c.thresholds[1];
    assert_eq!(mem.value, ThresholdValue::Quantity(Qty::binary(mi(100))));
    assert!(mem.is_hard());
    assert_eq!(c.thresholds[2].value, ThresholdValue::Percentage(0.1));
    assert_eq!(c.thresholds[4].value, mem.value);
}

#[test]
fn soft_thresholds_need_a_grace_period() {
    let c = config(
        &[],
        &[("memory.available", "1Gi")],
        &[("memory.available", "1m30s")],
    )
    .unwrap();
    assert_eq!(c.thresholds.len(), 1, "soft thresholds get no allocatable copy");
    assert_eq!(c.thresholds[0].grace_period, Duration::from_secs(90));
    assert!(!c.thresholds[0].is_hard());
    assert_eq!(
        config(&[], &[("nodefs.available", "20%")], &[]),
        Err(EvictionError::MissingGracePeriod {
            signal: "nodefs.available".into()
        })
    );
}

#[test]
fn bad_thresholds_name_the_field() {
    let e = config(&[("memory.avail", "1Gi")], &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("evictionHard.memory.avail (--eviction-hard): unsupported eviction signal"),
        "{e}"
    );
    let e = config(&[("memory.available", "lots")], &[], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("evictionHard.memory.available") && e.contains("lots"),
        "{e}"
    );
    let e = config(&[("nodefs.available", "150%")], &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be > 0% and < 100%"), "{e}");
    let e = config(&[("memory.available", "-1Mi")], &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be positive"), "{e}");
    let e = config(
        &[],
        &[("memory.available", "1Gi")],
        &[("memory.available", "soon")],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("evictionSoftGracePeriod.memory.available"), "{e}");
    // Upstream ignores 0% and 100%, and knode ignores the containerfs signals.
    let c = config(
        &[
            ("nodefs.available", "0%"),
            ("imagefs.available", "100%"),
            ("containerfs.available", "10%"),
        ],
        &[],
        &[],
    )
    .unwrap();
    assert!(c.thresholds.is_empty());
}

fn obs(signal: Signal, available: i64, capacity: i64, time: &str) -> (Signal, Observation) {
    (
        signal,
        Observation {
            available: Qty::binary(available),
            capacity: Qty::binary(capacity),
            time: time.into(),
        },
    )
}

#[test]
fn observations_come_from_the_summary() {
    let fs = FsStats {
        time: "t1".into(),
        available_bytes: Some(10),
        capacity_bytes: Some(100),
        inodes_free: Some(7),
        inodes: Some(70),
        ..Default::default()
    };
    let summary = Summary {
        node: NodeStats {
            memory: Some(MemoryStats {
                time: "t0".into(),
                available_bytes: Some(300),
                working_set_bytes: Some(700),
                ..Default::default()
            }),
            system_containers: vec![ContainerStats {
                name: "pods".into(),
                memory: Some(MemoryStats {
                    available_bytes: Some(50),
                    working_set_bytes: Some(150),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            fs: Some(fs.clone()),
            runtime: Some(crate::stats::RuntimeStats {
                image_fs: Some(fs),
                container_fs: None,
            }),
            rlimit: Some(crate::stats::RlimitStats {
                time: "t2".into(),
                maxpid: Some(1000),
                curproc: Some(900),
            }),
            ..Default::default()
        },
        pods: vec![],
    };
    let o = decide::observations(&summary);
    assert_eq!(o[&Signal::MemoryAvailable].available.value, 300);
    assert_eq!(o[&Signal::MemoryAvailable].capacity.value, 1000);
    assert_eq!(o[&Signal::AllocatableMemoryAvailable].capacity.value, 200);
    assert_eq!(o[&Signal::NodeFsAvailable].capacity.value, 100);
    assert_eq!(o[&Signal::NodeFsInodesFree].available, Qty::decimal(7));
    assert_eq!(o[&Signal::ImageFsInodesFree].capacity, Qty::decimal(70));
    assert_eq!(o[&Signal::PidAvailable].available, Qty::decimal(100));
    assert_eq!(o.len(), 7);
}

#[test]
fn hard_threshold_sets_pressure_at_once_and_it_lingers_for_the_transition_period() {
    let c = config(&[("nodefs.available", "10%")], &[], &[]).unwrap();
    let mut state = State::default();
    let t0 = Instant::now();
    let low: Observations = [obs(Signal::NodeFsAvailable, 5, 100, "a")].into();
    let d = decide::synchronize(&mut state, &c, &low, t0);
    assert!(d.conditions.disk && !d.conditions.memory);
    assert_eq!(d.to_reclaim().map(|t| t.signal), Some(Signal::NodeFsAvailable));
    // The same stats again: pressure, but nothing to act on (no double eviction on stale stats).
    let d = decide::synchronize(&mut state, &c, &low, t0 + Duration::from_secs(1));
    assert!(d.conditions.disk);
    assert!(d.to_reclaim().is_none());
    // Recovered: the condition holds for the transition period after the last observation.
    let ok: Observations = [obs(Signal::NodeFsAvailable, 50, 100, "b")].into();
    let d = decide::synchronize(&mut state, &c, &ok, t0 + Duration::from_secs(29));
    assert!(d.conditions.disk);
    assert!(d.to_reclaim().is_none());
    let d = decide::synchronize(&mut state, &c, &ok, t0 + Duration::from_secs(31));
    assert!(!d.conditions.disk);
}

#[test]
fn soft_threshold_acts_only_after_its_grace_period() {
    let c = config(&[], &[("memory.available", "1Gi")], &[("memory.available", "1m")]).unwrap();
    let mut state = State::default();
    let t0 = Instant::now();
    let at = |s: &str| -> Observations { [obs(Signal::MemoryAvailable, mi(512), mi(4096), s)].into() };
    let d = decide::synchronize(&mut state, &c, &at("a"), t0);
    assert!(
        d.conditions.memory,
        "the condition does not wait for the grace period"
    );
    assert!(d.to_reclaim().is_none());
    let d = decide::synchronize(&mut state, &c, &at("b"), t0 + Duration::from_secs(59));
    assert!(d.to_reclaim().is_none());
    let d = decide::synchronize(&mut state, &c, &at("c"), t0 + Duration::from_secs(60));
    assert_eq!(d.to_reclaim().map(|t| t.signal), Some(Signal::MemoryAvailable));
    // Crossing again after a recovery restarts the grace period.
    let fine: Observations = [obs(Signal::MemoryAvailable, mi(2048), mi(4096), "d")].into();
    decide::synchronize(&mut state, &c, &fine, t0 + Duration::from_secs(61));
    let d = decide::synchronize(&mut state, &c, &at("e"), t0 + Duration::from_secs(62));
    assert!(d.to_reclaim().is_none());
}

#[test]
fn memory_is_reclaimed_before_disk() {
    let c = config(
        &[("nodefs.available", "10%"), ("memory.available", "100Mi")],
        &[],
        &[],
    )
    .unwrap();
    let o: Observations = [
        obs(Signal::NodeFsAvailable, 1, 100, "a"),
        obs(Signal::MemoryAvailable, mi(10), mi(1000), "a"),
    ]
    .into();
    let d = decide::synchronize(&mut State::default(), &c, &o, Instant::now());
    assert!(d.conditions.memory && d.conditions.disk);
    assert_eq!(d.to_reclaim().map(|t| t.signal), Some(Signal::MemoryAvailable));
}

fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    let q = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, Quantity>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    };
    Container {
        name: name.into(),
        resources: Some(ResourceRequirements {
            requests: q(requests),
            limits: q(limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, priority: Option<i32>, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            priority,
            containers,
            ..Default::default()
        }),
        status: Some(PodStatus::default()),
    }
}

fn fs_used(bytes: u64) -> Option<FsStats> {
    Some(FsStats {
        used_bytes: Some(bytes),
        inodes_used: Some(bytes / 1000),
        ..Default::default()
    })
}

fn stats(p: &Pod, memory: u64, rootfs: u64, logs: u64, volumes: &[(&str, u64)]) -> PodStats {
    PodStats {
        pod_ref: PodReference::new(
            "default",
            p.metadata.name.clone().unwrap(),
            p.metadata.uid.clone().unwrap(),
        ),
        containers: vec![ContainerStats {
            name: "main".into(),
            memory: Some(MemoryStats {
                working_set_bytes: Some(memory),
                ..Default::default()
            }),
            rootfs: fs_used(rootfs),
            logs: fs_used(logs),
            ..Default::default()
        }],
        memory: Some(MemoryStats {
            working_set_bytes: Some(memory),
            ..Default::default()
        }),
        volume: volumes
            .iter()
            .map(|(n, b)| VolumeStats {
                fs: fs_used(*b).unwrap(),
                name: n.to_string(),
            })
            .collect(),
        ephemeral_storage: fs_used(rootfs + logs + volumes.iter().map(|(_, b)| b).sum::<u64>()),
        ..Default::default()
    }
}

fn names(pods: &[Pod]) -> Vec<&str> {
    pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
}

#[test]
fn memory_ranking_puts_pods_over_requests_first_then_priority_then_usage() {
    let guaranteed = pod(
        "guaranteed",
        None,
        vec![container("main", &[("memory", "500Mi")], &[("memory", "500Mi")])],
    );
    let best_small = pod("best-small", None, vec![container("main", &[], &[])]);
    let best_big = pod("best-big", None, vec![container("main", &[], &[])]);
    let important = pod("important", Some(1000), vec![container("main", &[], &[])]);
    let no_stats = pod("no-stats", Some(5000), vec![container("main", &[], &[])]);
    let st: BTreeMap<String, PodStats> = [
        stats(&guaranteed, mi(400) as u64, 0, 0, &[]),
        stats(&best_small, mi(10) as u64, 0, 0, &[]),
        stats(&best_big, mi(200) as u64, 0, 0, &[]),
        stats(&important, mi(300) as u64, 0, 0, &[]),
    ]
    .into_iter()
    .map(|s| (s.pod_ref.uid.clone(), s))
    .collect();
    let mut pods = vec![guaranteed, important, best_small, best_big, no_stats];
    decide::rank(Signal::MemoryAvailable, &mut pods, &st, false);
    assert_eq!(
        names(&pods),
        ["no-stats", "best-big", "best-small", "important", "guaranteed"]
    );
}

#[test]
fn disk_ranking_counts_what_the_filesystems_share() {
    let mut with_volume = pod("volume", None, vec![container("main", &[], &[])]);
    with_volume.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }]);
    let layer = pod("layer", None, vec![container("main", &[], &[])]);
    let requested = pod(
        "requested",
        None,
        vec![container("main", &[("ephemeral-storage", "1Gi")], &[])],
    );
    let st: BTreeMap<String, PodStats> = [
        stats(&with_volume, 0, 1000, 0, &[("scratch", mi(50) as u64)]),
        stats(&layer, 0, mi(20) as u64, 0, &[]),
        stats(&requested, 0, mi(100) as u64, 0, &[]),
    ]
    .into_iter()
    .map(|s| (s.pod_ref.uid.clone(), s))
    .collect();
    let mut pods = vec![layer.clone(), requested.clone(), with_volume.clone()];
    decide::rank(Signal::NodeFsAvailable, &mut pods, &st, false);
    assert_eq!(
        names(&pods),
        ["volume", "layer", "requested"],
        "within its request goes last"
    );
    // With a dedicated image fs, imagefs pressure counts writable layers only.
    let mut pods = vec![with_volume, layer, requested];
    decide::rank(Signal::ImageFsAvailable, &mut pods, &st, true);
    assert_eq!(names(&pods), ["layer", "volume", "requested"]);
}

#[test]
fn eviction_message_is_upstreams() {
    let p = pod("hog", None, vec![container("main", &[("memory", "100Mi")], &[])]);
    let s = stats(&p, mi(200) as u64, 0, 0, &[]);
    let c = config(&[("memory.available", "100Mi")], &[], &[]).unwrap();
    let o: Observations = [obs(Signal::MemoryAvailable, 12 * 1024, mi(1000), "a")].into();
    let m = decide::eviction_message("memory", &p, Some(&s), &c.thresholds, &o);
    assert_eq!(
        m,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 12Ki. \
         Container main was using 200Mi, request is 100Mi, has larger consumption of memory. "
    );
    let p = pod("quiet", None, vec![container("main", &[], &[])]);
    let s = stats(&p, mi(1) as u64, 3 * 1024, 1024, &[]);
    let c = config(&[("nodefs.available", "10%")], &[], &[]).unwrap();
    let o: Observations = [obs(Signal::NodeFsAvailable, mi(5), mi(100), "a")].into();
    let m = decide::eviction_message("ephemeral-storage", &p, Some(&s), &c.thresholds, &o);
    assert_eq!(
        m,
        "The node was low on resource: ephemeral-storage. Threshold quantity: 10Mi, available: 5Mi. \
         Container main was using 4Ki, request is 0, has larger consumption of ephemeral-storage. "
    );
}

#[test]
fn local_storage_limits_evict_with_upstreams_messages() {
    let mut p = pod("writer", None, vec![container("main", &[], &[])]);
    p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let under = stats(&p, 0, 0, 0, &[("data", 1024 * 1024)]);
    assert_eq!(decide::local_storage_violation(&p, &under, false), None);
    let over = stats(&p, 0, 0, 0, &[("data", 2 * 1024 * 1024)]);
    let v = decide::local_storage_violation(&p, &over, false).unwrap();
    assert_eq!(
        v.message,
        "Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". "
    );
    assert_eq!(v.signal, "emptydirfs.limit");

    let p = pod(
        "limited",
        None,
        vec![container("main", &[], &[("ephemeral-storage", "10Mi")])],
    );
    let v = decide::local_storage_violation(&p, &stats(&p, 0, mi(11) as u64, 0, &[]), false).unwrap();
    assert_eq!(
        v.message,
        "Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. "
    );
    assert_eq!(v.signal, "ephemeralpodfs.limit");
    // The writable layer counts for the container only without a dedicated image fs.
    assert_eq!(
        decide::local_storage_violation(&p, &stats(&p, 0, mi(6) as u64, mi(5) as u64, &[]), true)
            .map(|v| v.signal),
        Some("ephemeralpodfs.limit")
    );
    let mut two = pod(
        "two",
        None,
        vec![container("main", &[], &[("ephemeral-storage", "10Mi")])],
    );
    two.spec
        .as_mut()
        .unwrap()
        .containers
        .push(container("side", &[], &[("ephemeral-storage", "90Mi")]));
    let v = decide::local_storage_violation(&two, &stats(&two, 0, mi(11) as u64, 0, &[]), false).unwrap();
    assert_eq!(
        v.message,
        "Container main exceeded its local ephemeral storage limit \"10Mi\". "
    );
    assert_eq!(v.signal, "ephemeralcontainerfs.limit");
}

#[test]
fn admission_under_pressure_is_upstreams() {
    let best = pod("best", None, vec![container("main", &[], &[])]);
    let burstable = pod("burst", None, vec![container("main", &[("memory", "10Mi")], &[])]);
    let critical = pod("critical", Some(2_000_000_000), vec![container("main", &[], &[])]);
    let mut tolerant = best.clone();
    tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/memory-pressure".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    let none = Conditions::default();
    let memory = Conditions {
        memory: true,
        ..Default::default()
    };
    let disk = Conditions {
        disk: true,
        ..Default::default()
    };
    assert!(decide::admit(none, &best).is_ok());
    let r = decide::admit(memory, &best).unwrap_err();
    assert_eq!(r.reason, "Evicted");
    assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
    assert!(decide::admit(memory, &burstable).is_ok());
    assert!(decide::admit(memory, &tolerant).is_ok());
    assert!(decide::admit(memory, &critical).is_ok());
    let r = decide::admit(disk, &burstable).unwrap_err();
    assert_eq!(r.message, "The node had condition: [DiskPressure]. ");
    let both = Conditions {
        memory: true,
        disk: true,
        pid: false,
    };
    assert_eq!(
        decide::admit(both, &burstable).unwrap_err().message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
}

#[test]
fn evicted_status_and_grace_periods() {
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let st = evicted_status(
        PodStatus::default(),
        "The node was low on resource: memory. ",
        true,
        now,
    );
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    let dt = st
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(dt.reason.as_deref(), Some("TerminationByKubelet"));
    assert_eq!(
        dt.message.as_deref(),
        Some("The node was low on resource: memory. ")
    );
    let st = evicted_status(PodStatus::default(), "Usage of EmptyDir volume ...", false, now);
    assert!(
        st.conditions.is_none(),
        "local-storage evictions set no condition, as upstream"
    );

    let mut p = pod("p", None, vec![]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(20);
    let hard = Threshold {
        signal: Signal::MemoryAvailable,
        value: ThresholdValue::Percentage(0.1),
        grace_period: Duration::ZERO,
    };
    let soft = Threshold {
        grace_period: Duration::from_secs(60),
        ..hard
    };
    assert_eq!(decide::grace_seconds(&p, &hard, 5), 1);
    assert_eq!(decide::grace_seconds(&p, &soft, 5), 5);
    assert_eq!(decide::grace_seconds(&p, &soft, 60), 20);
    assert_eq!(decide::grace_seconds(&p, &soft, -1), 20);
}

#[test]
fn critical_pods_are_recognised() {
    let mut p = pod("p", None, vec![]);
    assert!(!decide::is_critical(&p));
    p.metadata.annotations = Some([("kubernetes.io/config.source".to_string(), "file".to_string())].into());
    assert!(decide::is_critical(&p));
    let p = pod("q", Some(2_000_000_000), vec![]);
    assert!(decide::is_critical(&p));
}
