//! Containers and tasks on real parts (private containerd + registry, runc, the pinned pod sandbox):
//! overridden command/args/env/workingDir with CRI log lines read back, two containers sharing one
//! sandbox's loopback and hostname but not PIDs, exec output/exit code/timeout, TaskExit/TaskOOM events, a SIGTERM-ignoring PID 1 killed after the grace, and
//! nothing left in containerd or on disk afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{ListContainersRequest, ListRequest, ListTasksRequest};
use containerd_client::with_namespace;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use knode_harness::cleanup::{mounts_under, unmount_under};
use knode_harness::containerd::PrivateContainerd;
use knode_harness::image::push_test_images;
use knode_harness::registry::PrivateRegistry;
use kubelet::runtime::Containerd;
use kubelet::runtime::container::{
    ContainerMeta, ContainerService, CreateContainer, CreatedContainer, ExitStatus, LogRotation, TaskState,
};
use kubelet::runtime::events::{TaskEvent, subscribe};
use kubelet::runtime::exec::exec;
use kubelet::runtime::image::{ImageInfo, ImageService};
use kubelet::sandbox::{self, Sandbox, SandboxConfig};
use kubelet::spec::{ImageConfig, PodNamespaces, SpecInput, container_spec};
use oci_client::secrets::RegistryAuth;
use tonic::Request;

struct Env {
    _registry: PrivateRegistry,
    containerd: PrivateContainerd,
    ns: String,
    dir: tempfile::TempDir,
    images: ImageService,
    svc: ContainerService,
    image: ImageInfo,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Containers outlive a killed containerd: unmount whatever a failed test left under our dir,
        // and remove the cgroup directories a failed test left (deepest first; runc made them).
        unmount_under(self.dir.path());
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let base = ctl.path().join("knode-test").join(&self.ns);
            for leaf in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(leaf.path());
            }
            let _ = std::fs::remove_dir(&base);
            let _ = std::fs::remove_dir(ctl.path().join("knode-test"));
        }
    }
}

async fn env(prefix: &str) -> Env {
    knode_harness::require_root().unwrap();
    let registry = PrivateRegistry::start().unwrap();
    let containerd = PrivateContainerd::start().await.unwrap();
    let ns = containerd.unique_namespace(prefix);
    let pushed = push_test_images(&registry.host()).await.unwrap();
    let c = Containerd::new(containerd.channel().await.unwrap(), &ns).unwrap();
    let images = ImageService::new(c.clone(), vec![registry.host()]);
    let image = images
        .pull(&pushed.testimg.reference, &RegistryAuth::Anonymous, &|_| {})
        .await
        .unwrap();
    Env {
        _registry: registry,
        containerd,
        ns,
        dir: tempfile::tempdir().unwrap(),
        images,
        svc: ContainerService::new(c),
        image,
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        ..Default::default()
    }
}

fn container(name: &str, command: &[&str], args: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some("testimg".into()),
        command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
        args: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

impl Env {
    fn cgroup(&self, id: &str) -> String {
        format!("/knode-test/{}/{id}", self.ns)
    }

    async fn create(
        &self,
        pod: &Pod,
        c: &Container,
        namespaces: PodNamespaces,
        id: &str,
    ) -> CreatedContainer {
        self.create_with(pod, c, namespaces, id, None).await
    }

    async fn create_with(
        &self,
        pod: &Pod,
        c: &Container,
        namespaces: PodNamespaces,
        id: &str,
        resources: Option<oci_spec::runtime::LinuxResources>,
    ) -> CreatedContainer {
        let img = ImageConfig::from_json(&self.image.config);
        let input = SpecInput {
            pod,
            container: c,
            image: &img,
            env: c
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect(),
            namespaces,
            hostname: pod.metadata.name.clone().unwrap(),
            mounts: vec![],
            passwd: None,
            group: None,
            cgroups_path: self.cgroup(id),
            oom_score_adj: 1000,
            resources,
            rootfs: "rootfs".into(),
        };
        let spec = container_spec(&input).unwrap();
        self.svc
            .create(CreateContainer {
                id: id.into(),
                meta: ContainerMeta {
                    pod_uid: pod.metadata.uid.clone().unwrap(),
                    pod_namespace: "default".into(),
                    pod_name: pod.metadata.name.clone().unwrap(),
                    container_name: c.name.clone(),
                    restart_count: 0,
                    spec_hash: "h".into(),
                },
                image: self.image.name.clone(),
                parent_snapshot: self.image.top_chain_id.clone(),
                spec,
                log_dir: self.dir.path().join("logs"),
                fifo_dir: self.dir.path().join("fifo"),
                log_rotation: LogRotation::default(),
                stdin: Default::default(),
            })
            .await
            .unwrap()
    }

    /// Flushes a container's log writers (blocking, off the runtime) and removes the container.
    async fn remove(&self, mut created: CreatedContainer) {
        let created = tokio::task::spawn_blocking(move || {
            created.flush_logs();
            created
        })
        .await
        .unwrap();
        self.svc.remove(&created).await.unwrap();
    }

    /// Tears the sandbox down and asserts nothing of the test is left.
    async fn finish(&self, sb: &Sandbox) {
        sandbox::teardown(&self.dir.path().join("sandboxes"), &sb.id).unwrap();
        self.assert_clean().await;
    }

    async fn run_to_exit(&self, created: CreatedContainer, id: &str) -> (ExitStatus, String) {
        self.svc.start(id).await.unwrap();
        let status = self.svc.wait_container(&created).await.unwrap();
        let log_path = created.log_path.clone();
        self.remove(created).await;
        (status, std::fs::read_to_string(log_path).unwrap())
    }

    async fn count<F, Fut>(&self, f: F) -> usize
    where
        F: FnOnce(tonic::transport::Channel, String) -> Fut,
        Fut: std::future::Future<Output = usize>,
    {
        f(self.containerd.channel().await.unwrap(), self.ns.clone()).await
    }

    /// Removes the image and asserts containerd and the disk hold nothing of this test.
    async fn assert_clean(&self) {
        let ns = self.ns.as_str();
        let ch = self.containerd.channel().await.unwrap();
        let containers = listed(
            ContainersClient::new(ch.clone())
                .list(with_namespace!(ListContainersRequest { filters: vec![] }, ns)),
        )
        .await
        .containers;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let tasks = TasksClient::new(ch.clone())
            .list(with_namespace!(
                ListTasksRequest {
                    filter: String::new()
                },
                ns
            ))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        assert!(tasks.is_empty(), "tasks left: {tasks:?}");
        self.images.remove(&self.image.name).await.unwrap();
        let n = self
            .count(|ch, ns| async move {
                let mut s = SnapshotsClient::new(ch)
                    .list(with_namespace!(
                        ListSnapshotsRequest {
                            snapshotter: "overlayfs".into(),
                            filters: vec![]
                        },
                        ns.as_str()
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                let mut n = 0;
                while let Some(r) = s.message().await.unwrap() {
                    n += r.info.len();
                }
                n
            })
            .await;
        assert_eq!(n, 0, "snapshots left");
        let leases = listed(LeasesClient::new(ch).list(with_namespace!(ListRequest { filters: vec![] }, ns)))
            .await
            .leases;
        assert!(leases.is_empty(), "leases left: {leases:?}");
        assert!(mounts_under(self.dir.path()).is_empty());
        for ctl in ["memory", "cpu", "pids", "blkio"] {
            let p = PathBuf::from(format!("/sys/fs/cgroup/{ctl}/knode-test/{}", self.ns));
            assert!(!p.exists(), "cgroup dir left: {}", p.display());
        }
    }
}

/// The answer of a containerd call (the test fails on an error).
async fn listed<T>(call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> T {
    call.await.unwrap().into_inner()
}

/// A sandbox for pod `name`, and the pod.
fn pinned(env: &Env, name: &str) -> (Sandbox, Pod) {
    let sb = sandbox::create(
        &env.dir.path().join("sandboxes"),
        &SandboxConfig {
            id: name.into(),
            hostname: name.into(),
            host_network: false,
            host_ipc: false,
            host_pid: false,
        },
    )
    .unwrap();
    (sb, pod(name))
}

fn stdout_lines(log: &str, stream: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_ts, s, tag, msg) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next().unwrap_or(""),
            );
            assert_eq!(tag, "F", "{l}");
            (s == stream).then(|| msg.to_string())
        })
        .collect()
}

#[tokio::test]
async fn overridden_command_env_and_workdir_reach_the_cri_log() {
    let env = env("knode-ctr").await;
    let (sb, pod) = pinned(&env, "logpod");
    let mut c = container(
        "app",
        &["/bin/sh", "-c"],
        &["echo out; echo err >&2; pwd; echo \"$FOO\"; exit 3"],
    );
    c.env = Some(vec![EnvVar {
        name: "FOO".into(),
        value: Some("bar baz".into()),
        ..Default::default()
    }]);
    c.working_dir = Some("/tmp".into());
    let created = env.create(&pod, &c, sb.namespaces(), "app-1").await;
    let log_path = created.log_path.clone();
    assert_eq!(log_path, env.dir.path().join("logs/app/0.log"));
    let (status, log) = env.run_to_exit(created, "app-1").await;
    assert_eq!(status.code, 3);
    assert_eq!(stdout_lines(&log, "stdout"), ["out", "/tmp", "bar baz"]);
    assert_eq!(stdout_lines(&log, "stderr"), ["err"]);
    // Timestamps are RFC3339Nano UTC.
    let ts = log.lines().next().unwrap().split(' ').next().unwrap();
    assert!(ts.ends_with('Z') && ts.len() >= 20 && &ts[10..11] == "T", "{ts}");
    env.finish(&sb).await;
}

#[tokio::test]
async fn containers_in_one_sandbox_share_loopback_and_hostname_not_pids() {
    let env = env("knode-ctr").await;
    let (sb, pod) = pinned(&env, "shared");
    let server = container("server", &[], &["serve", "--http-port", "8080"]);
    let created = env.create(&pod, &server, sb.namespaces(), "server-1").await;
    env.svc.start("server-1").await.unwrap();
    let client = container(
        "client",
        &["/bin/sh", "-c"],
        &[
            "echo pid=$$; hostname; for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/hostname && exit 0; sleep 0.1; done; exit 1",
        ],
    );
    let c2 = env.create(&pod, &client, sb.namespaces(), "client-1").await;
    // Relisting finds both by their labels, with their task states.
    let mut listed = env.svc.list().await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, "client-1");
    assert_eq!(listed[0].state, TaskState::Created);
    assert_eq!(listed[0].meta.container_name, "client");
    assert_eq!(listed[0].meta.pod_uid, "uid-shared");
    assert!(matches!(listed[1].state, TaskState::Running { pid } if pid > 0));
    assert_eq!(listed[1].image, env.image.name);
    let (status, log) = env.run_to_exit(c2, "client-1").await;
    let out = stdout_lines(&log, "stdout");
    assert_eq!(status.code, 0, "{log}");
    // Own PID namespace: the client's shell is its PID 1 (the server's PID 1 is not visible).
    assert_eq!(out[0], "pid=1");
    assert_eq!(out[1], "shared");
    assert_eq!(
        out[2].trim(),
        "shared",
        "server answered over the shared loopback: {log}"
    );

    // Exec in the running server: output of both streams and the exit code.
    let c = Containerd::new(env.containerd.channel().await.unwrap(), &env.ns).unwrap();
    let fifo = env.dir.path().join("fifo");
    let cmd: Vec<String> = ["/bin/sh", "-c", "echo hi; echo oops >&2; hostname; exit 7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = exec(&c, "server-1", "e1", &cmd, &fifo, None).await.unwrap();
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nshared\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // A command outliving its timeout is killed and reports no exit code.
    let cmd: Vec<String> = ["sleep", "30"].iter().map(|s| s.to_string()).collect();
    let out = exec(
        &c,
        "server-1",
        "e2",
        &cmd,
        &fifo,
        Some(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, None);
    // The exec ID is free again (the process was deleted from the task).
    let cmd: Vec<String> = vec!["true".into()];
    let out = exec(&c, "server-1", "e1", &cmd, &fifo, None).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(exec(&c, "server-1", "e3", &[], &fifo, None).await.is_err());

    let (st, killed) = env
        .svc
        .stop("server-1", 15, Duration::from_secs(2))
        .await
        .unwrap();
    // `testimg serve` as PID 1 may or may not handle SIGTERM; either way the task is gone.
    assert_eq!(st.code, if killed { 137 } else { st.code });
    assert!(
        env.svc.kill("server-1", 0, false).await.is_err(),
        "no process left to signal"
    );
    env.remove(created).await;
    env.finish(&sb).await;
}

/// Create+start+stop+delete N containers through this layer vs `ctr run --rm` (the floor), one after
/// another. N=3 by default (quick; still prints the ratio), `KNODE_BENCH=1` → N=20.
#[tokio::test]
async fn bench_lifecycle_against_ctr_run() {
    let n: usize = if std::env::var("KNODE_BENCH").as_deref() == Ok("1") {
        20
    } else {
        3
    };
    let env = env("knode-bench").await;
    let (sb, pod) = pinned(&env, "bench");
    let c = container("b", &[], &["exit", "0"]);
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let id = format!("b-{i}");
        let created = env.create(&pod, &c, sb.namespaces(), &id).await;
        env.svc.start(&id).await.unwrap();
        // Wait first: a SIGTERM right after Start can still hit runc's Go init before it execs the
        // program (exit code 2), which would make the comparison with `ctr run --rm` unfair.
        assert_eq!(env.svc.wait(&id).await.unwrap().code, 0);
        let (status, killed) = env.svc.stop(&id, 15, Duration::from_secs(5)).await.unwrap();
        assert_eq!((status.code, killed), (0, false), "stopping an exited task");
        env.remove(created).await;
    }
    let ours = t0.elapsed();
    let t1 = std::time::Instant::now();
    for i in 0..n {
        let out = env
            .containerd
            .ctr(&env.ns)
            .args([
                "run",
                "--rm",
                &env.image.name,
                &format!("ctr-{i}"),
                "/testimg",
                "exit",
                "0",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "ctr run: {out:?}");
    }
    let floor = t1.elapsed();
    // ctr puts its containers in cgroup /<ns>/<id> and runc leaves the parent behind.
    kubelet::runtime::container::remove_cgroup_dirs(&format!("/{}", env.ns));
    println!(
        "bench: {n} containers create+start+stop+delete: knode {:.3}s ({:.1} ms each), ctr run --rm {:.3}s ({:.1} ms each), ratio {:.2}",
        ours.as_secs_f64(),
        ours.as_secs_f64() * 1000.0 / n as f64,
        floor.as_secs_f64(),
        floor.as_secs_f64() * 1000.0 / n as f64,
        ours.as_secs_f64() / floor.as_secs_f64()
    );

    // The same N at once: what a node does when a burst of pods lands.
    let t2 = std::time::Instant::now();
    let ours_par = futures::future::join_all((0..n).map(|i| {
        let (env, pod, c, sb) = (&env, &pod, &c, &sb);
        async move {
            let id = format!("p-{i}");
            let created = env.create(pod, c, sb.namespaces(), &id).await;
            env.svc.start(&id).await.unwrap();
            assert_eq!(env.svc.wait(&id).await.unwrap().code, 0);
            let (status, killed) = env.svc.stop(&id, 15, Duration::from_secs(5)).await.unwrap();
            assert_eq!((status.code, killed), (0, false));
            env.remove(created).await;
        }
    }));
    ours_par.await;
    let ours_par = t2.elapsed();
    let t3 = std::time::Instant::now();
    let children: Vec<_> = (0..n)
        .map(|i| {
            env.containerd
                .ctr(&env.ns)
                .args(["run", "--rm", &env.image.name])
                .arg(format!("ctrp-{i}"))
                .args(["/testimg", "exit", "0"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "concurrent ctr run failed");
    }
    let floor_par = t3.elapsed();
    kubelet::runtime::container::remove_cgroup_dirs(&format!("/{}", env.ns));
    println!(
        "bench: {n} containers concurrently create+start+stop+delete: knode {:.3}s, ctr run --rm {:.3}s, ratio {:.2}",
        ours_par.as_secs_f64(),
        floor_par.as_secs_f64(),
        ours_par.as_secs_f64() / floor_par.as_secs_f64()
    );
    env.finish(&sb).await;
    for ctl in ["memory", "cpu", "pids"] {
        let p = PathBuf::from(format!("/sys/fs/cgroup/{ctl}/{}", env.ns));
        assert!(!p.exists(), "cgroup dir left: {}", p.display());
    }
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<TaskEvent>) -> TaskEvent {
    // Generous bound only so a broken subscription fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no task event within 60 s")
        .expect("event subscription ended")
}

#[tokio::test]
async fn task_exit_and_oom_events_arrive() {
    let env = env("knode-ev").await;
    let c = Containerd::new(env.containerd.channel().await.unwrap(), &env.ns).unwrap();
    let mut events = subscribe(c);
    // Every exit from now on is delivered.
    assert_eq!(next_event(&mut events).await, TaskEvent::Subscribed);
    let (sb, pod) = pinned(&env, "events");

    let exiter = container("exiter", &[], &["exit", "5"]);
    let created = env.create(&pod, &exiter, sb.namespaces(), "exiter-1").await;
    let (status, _) = env.run_to_exit(created, "exiter-1").await;
    assert_eq!((status.code, status.oom_killed), (5, false));
    assert_eq!(
        next_event(&mut events).await,
        TaskEvent::Exit {
            container_id: "exiter-1".into(),
            exec_id: String::new(),
            exit_code: 5
        }
    );

    // 16 MiB limit, 64 MiB allocated: the kernel OOM-kills it (no swap on this machine).
    let limit = 16 * 1024 * 1024;
    let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // The shim watches the cgroup for OOM only once the process has started (containerd 1.6
    // runc shim: `ep.Add` after Start); allocating at once could OOM before that and send no
    // event on a loaded machine, so the hog waits a moment first.
    let hog = container(
        "hog",
        &[],
        &["alloc-mem", "64", "--hold", "30", "--delay-ms", "1000"],
    );
    let created = env
        .create_with(&pod, &hog, sb.namespaces(), "hog-1", Some(resources))
        .await;
    let (status, _) = env.run_to_exit(created, "hog-1").await;
    assert_eq!((status.code, status.oom_killed), (137, true));
    // Both arrive, in either order (the shim's OOM watcher and its exit path race).
    let mut seen = Vec::new();
    while !(seen.iter().any(|e| matches!(e, TaskEvent::Exit { .. }))
        && seen.iter().any(|e| matches!(e, TaskEvent::Oom { .. })))
    {
        seen.push(next_event(&mut events).await);
    }
    assert!(
        seen.contains(&TaskEvent::Oom {
            container_id: "hog-1".into()
        }),
        "{seen:?}"
    );
    assert!(seen.contains(&TaskEvent::Exit {
        container_id: "hog-1".into(),
        exec_id: String::new(),
        exit_code: 137
    }));
    drop(events);
    env.finish(&sb).await;
}

/// A containerd restart breaks the event stream: the subscription reports `Resubscribed` once it
/// is live again (the consumer's cue to relist), an exit during the outage is found by relisting,
/// exits after the cue arrive as events again, and the shims kept the containers running.
#[tokio::test]
async fn events_resubscribe_and_relist_after_a_containerd_restart() {
    let mut env = env("knode-evr").await;
    let c = Containerd::new(env.containerd.channel().await.unwrap(), &env.ns).unwrap();
    let mut events = subscribe(c);
    assert_eq!(next_event(&mut events).await, TaskEvent::Subscribed);
    let (sb, pod) = pinned(&env, "restart");
    let keeper = container("keeper", &[], &["sleep", "infinity", "--exit-on-sigterm"]);
    let keeper_c = env.create(&pod, &keeper, sb.namespaces(), "keeper-1").await;
    env.svc.start("keeper-1").await.unwrap();
    let quitter = container("quitter", &[], &["sleep", "1"]);
    let quitter_c = env.create(&pod, &quitter, sb.namespaces(), "quitter-1").await;
    env.svc.start("quitter-1").await.unwrap();
    let pid_before = env
        .svc
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == "keeper-1")
        .map(|c| c.state)
        .unwrap();
    assert!(matches!(pid_before, TaskState::Running { .. }), "{pid_before:?}");

    env.containerd.stop_daemon();
    // The quitter exits while nobody is listening.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.containerd.respawn().await.unwrap();

    // The cue comes first on the new stream, before anything the shims publish once containerd
    // is back (the quitter's shim retries its exit event).
    assert_eq!(next_event(&mut events).await, TaskEvent::Resubscribed);
    // The relist after the cue finds the exit that happened during the outage.
    let listed = env.svc.list().await.unwrap();
    let state = |id: &str| {
        listed
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.state)
            .unwrap_or_else(|| panic!("{id} not listed after the restart: {listed:?}"))
    };
    assert_eq!(state("quitter-1"), TaskState::Exited { code: 0 });
    assert_eq!(
        state("keeper-1"),
        pid_before,
        "the keeper kept running in its shim"
    );

    let (st, killed) = env
        .svc
        .stop("keeper-1", 15, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((st.code, killed), (0, false), "keeper exits on SIGTERM");
    loop {
        match next_event(&mut events).await {
            TaskEvent::Exit {
                container_id,
                exit_code,
                ..
            } if container_id == "keeper-1" => {
                assert_eq!(exit_code, 0);
                break;
            }
            TaskEvent::Exit { container_id, .. } if container_id == "quitter-1" => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    drop(events);
    for created in [keeper_c, quitter_c] {
        env.remove(created).await;
    }
    env.finish(&sb).await;
}

#[tokio::test]
async fn sigterm_ignoring_pid1_is_killed_after_the_grace() {
    let env = env("knode-ctr").await;
    let (sb, pod) = pinned(&env, "stubborn");
    let c = container("sleeper", &[], &["sleep", "infinity"]);
    let created = env.create(&pod, &c, sb.namespaces(), "sleeper-1").await;
    env.svc.start("sleeper-1").await.unwrap();
    let (status, killed) = env
        .svc
        .stop("sleeper-1", 15, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(killed, "SIGKILL was needed");
    assert_eq!(status.code, 137);
    env.remove(created).await;
    // Deleting again is a no-op.
    env.svc.delete("sleeper-1").await.unwrap();
    env.finish(&sb).await;
}
