//! Image service on real parts: a private containerd and a private registry holding knode's test
//! images. Checks what containerd really holds afterwards (image record, content, snapshots by chain
//! ID, `ctr images ls`), the distinguished pull errors, and that removal leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, StatSnapshotRequest};
use containerd_client::services::v1::{DeleteNamespaceRequest, ListContentRequest, ListRequest};
use containerd_client::with_namespace;
use knode_harness::containerd::PrivateContainerd;
use knode_harness::image::{TestImages, push_test_images};
use knode_harness::registry::PrivateRegistry;
use kubelet::runtime::image::{ImageService, Progress, PullError, PullPolicy, chain_ids};
use kubelet::runtime::{Containerd, SNAPSHOTTER};
use oci_client::secrets::RegistryAuth;
use tonic::Request;

struct Env {
    registry: PrivateRegistry,
    containerd: PrivateContainerd,
    ns: String,
    images: TestImages,
}

async fn env() -> Env {
    knode_harness::require_root().unwrap();
    let registry = PrivateRegistry::start().unwrap();
    let containerd = PrivateContainerd::start().await.unwrap();
    let ns = containerd.unique_namespace("knode-img");
    let images = push_test_images(&registry.host()).await.unwrap();
    Env {
        registry,
        containerd,
        ns,
        images,
    }
}

impl Env {
    async fn service(&self, insecure: bool) -> ImageService {
        let c = Containerd::new(self.containerd.channel().await.unwrap(), &self.ns).unwrap();
        ImageService::new(
            c,
            if insecure {
                vec![self.registry.host()]
            } else {
                vec![]
            },
        )
    }

    async fn snapshots(&self) -> Vec<String> {
        let mut s = SnapshotsClient::new(self.containerd.channel().await.unwrap())
            .list(with_namespace!(
                ListSnapshotsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    filters: vec![]
                },
                self.ns.as_str()
            ))
            .await
            .unwrap()
            .into_inner();
        let mut names = Vec::new();
        while let Some(r) = s.message().await.unwrap() {
            names.extend(r.info.into_iter().map(|i| i.name));
        }
        names
    }

    async fn content(&self) -> Vec<String> {
        let mut s = ContentClient::new(self.containerd.channel().await.unwrap())
            .list(with_namespace!(
                ListContentRequest { filters: vec![] },
                self.ns.as_str()
            ))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = s.message().await.unwrap() {
            out.extend(r.info.into_iter().map(|i| i.digest));
        }
        out
    }

    async fn leases(&self) -> usize {
        LeasesClient::new(self.containerd.channel().await.unwrap())
            .list(with_namespace!(ListRequest { filters: vec![] }, self.ns.as_str()))
            .await
            .unwrap()
            .into_inner()
            .leases
            .len()
    }

    /// Removes every image, checks containerd's GC left nothing, drops the namespace.
    async fn assert_clean_after_remove(&self, svc: &ImageService) {
        for img in svc.list().await.unwrap() {
            svc.remove(&img.name).await.unwrap();
        }
        assert!(svc.list().await.unwrap().is_empty());
        assert_eq!(
            self.snapshots().await,
            Vec::<String>::new(),
            "snapshots left after image removal"
        );
        assert_eq!(
            self.content().await,
            Vec::<String>::new(),
            "content left after image removal"
        );
        assert_eq!(self.leases().await, 0, "leases left");
        // A namespace only exists once something was created in it.
        let deleted = NamespacesClient::new(self.containerd.channel().await.unwrap())
            .delete(with_namespace!(
                DeleteNamespaceRequest {
                    name: self.ns.clone()
                },
                self.ns.as_str()
            ))
            .await;
        if let Err(e) = deleted {
            assert_eq!(e.code(), tonic::Code::NotFound, "deleting namespace: {e}");
        }
    }
}

fn no_progress(_: Progress) {}

#[tokio::test(flavor = "current_thread")]
async fn pull_unpacks_layers_into_chain_id_snapshots_and_registers_the_image() {
    let env = env().await;
    let svc = env.service(true).await;
    let seen = Mutex::new(Vec::<Progress>::new());
    let record = |p: Progress| seen.lock().unwrap().push(p);
    let pushed = env.images.testimg.clone();

    let info = svc
        .pull(&pushed.reference, &RegistryAuth::Anonymous, &record)
        .await
        .unwrap();
    assert_eq!(info.name, pushed.reference);
    assert_eq!(info.manifest_digest, pushed.manifest_digest);
    assert_eq!(info.config_digest, pushed.config_digest);
    assert_eq!(info.config["Entrypoint"], serde_json::json!(["/testimg"]));
    assert_eq!(info.config["User"], "0:0");

    // Chain IDs computed independently from the diff IDs the harness built.
    let diff_ids: Vec<String> = pushed.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    assert_eq!(info.top_chain_id, *chains.last().unwrap());
    let mut snaps = SnapshotsClient::new(env.containerd.channel().await.unwrap());
    for (i, chain) in chains.iter().enumerate() {
        let st = snaps
            .stat(with_namespace!(
                StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: chain.clone()
                },
                env.ns.as_str()
            ))
            .await
            .unwrap_or_else(|e| panic!("snapshot for layer {i} ({chain}) missing: {e}"))
            .into_inner()
            .info
            .unwrap();
        let want_parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].clone()
        };
        assert_eq!(st.parent, want_parent, "layer {i} parent");
    }
    // Every blob is in the content store.
    let content = env.content().await;
    for l in &pushed.layers {
        assert!(
            content.contains(&l.digest),
            "layer {} not in content store",
            l.digest
        );
    }
    assert!(content.contains(&pushed.config_digest));
    assert_eq!(env.leases().await, 0, "the pull's lease is released");

    // Progress ends at the total.
    let seen = seen.lock().unwrap().clone();
    let last = *seen.last().unwrap();
    assert_eq!(last.done, last.total);
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress never goes back"
    );

    // ctr, an independent client, lists it.
    let out = env
        .containerd
        .ctr(&env.ns)
        .args(["images", "ls", "-q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == pushed.reference),
        "ctr images ls: {out:?}"
    );

    // Policies: with the image present, IfNotPresent and Never do not touch the registry (it is down now).
    let calls = AtomicU64::new(0);
    let counting = |_: Progress| {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let mut env = env;
    env.registry.stop();
    for policy in [PullPolicy::IfNotPresent, PullPolicy::Never] {
        let got = svc
            .ensure(&pushed.reference, policy, &RegistryAuth::Anonymous, &counting)
            .await
            .unwrap();
        assert_eq!(got.manifest_digest, pushed.manifest_digest);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no pull for a present image");
    let err = svc
        .ensure(
            &pushed.reference,
            PullPolicy::Always,
            &RegistryAuth::Anonymous,
            &no_progress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::RegistryUnavailable { .. }), "{err}");

    env.assert_clean_after_remove(&svc).await;
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_pulls_of_one_image_share_the_work() {
    let env = env().await;
    let svc = env.service(true).await;
    let r = env.images.busybox.reference.clone();
    let (a, b, c) = tokio::join!(
        svc.pull(&r, &RegistryAuth::Anonymous, &no_progress),
        svc.pull(&r, &RegistryAuth::Anonymous, &no_progress),
        svc.pull(
            &env.images.testimg.reference,
            &RegistryAuth::Anonymous,
            &no_progress
        ),
    );
    assert_eq!(a.unwrap().manifest_digest, env.images.busybox.manifest_digest);
    assert_eq!(b.unwrap().manifest_digest, env.images.busybox.manifest_digest);
    c.unwrap();
    // busybox's two layers are shared with testimg: 3 distinct chains in all.
    assert_eq!(env.snapshots().await.len(), 3);
    assert_eq!(svc.list().await.unwrap().len(), 2);
    env.assert_clean_after_remove(&svc).await;
}

#[tokio::test(flavor = "current_thread")]
async fn pull_failures_are_distinguished() {
    let env = env().await;
    let svc = env.service(true).await;
    let host = env.registry.host();
    let anon = RegistryAuth::Anonymous;

    let e = svc
        .pull(&format!("{host}/knode/does-not-exist:v1"), &anon, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::NotFound { .. }), "unknown repository: {e}");
    assert_eq!(e.reason(), "ErrImagePull");
    let e = svc
        .pull(&format!("{host}/knode/testimg:no-such-tag"), &anon, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::NotFound { .. }), "unknown tag: {e}");
    let e = svc
        .pull("UPPER/Case Bad:tag", &anon, &no_progress)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "InvalidImageName", "{e}");
    let e = svc
        .ensure(
            &format!("{host}/knode/absent:v1"),
            PullPolicy::Never,
            &anon,
            &no_progress,
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "ErrImageNeverPull", "{e}");
    // Nothing listens on port 1 of loopback.
    let e = svc
        .pull("127.0.0.1:1/knode/testimg:latest", &anon, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::RegistryUnavailable { .. }), "{e}");
    // A registry not configured as insecure is spoken to over HTTPS only: the plain-HTTP one fails.
    let strict = env.service(false).await;
    let e = strict
        .pull(&env.images.busybox.reference, &anon, &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(e, PullError::RegistryUnavailable { .. }),
        "plain HTTP must not be used: {e}"
    );
    assert!(
        svc.list().await.unwrap().is_empty(),
        "failed pulls store no image"
    );
    env.assert_clean_after_remove(&svc).await;
}

#[tokio::test(flavor = "current_thread")]
async fn private_registry_needs_the_pull_secrets_credentials() {
    knode_harness::require_root().unwrap();
    let registry = PrivateRegistry::start_with_auth("alice", "s3cret").unwrap();
    let containerd = PrivateContainerd::start().await.unwrap();
    let ns = containerd.unique_namespace("knode-auth");
    let good = RegistryAuth::Basic("alice".into(), "s3cret".into());
    let images = knode_harness::image::push_test_images_as(&registry.host(), &good)
        .await
        .unwrap();
    let env = Env {
        registry,
        containerd,
        ns,
        images,
    };
    let svc = env.service(true).await;
    let r = env.images.busybox.reference.clone();

    let e = svc
        .pull(&r, &RegistryAuth::Anonymous, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }), "anonymous: {e}");
    let wrong = RegistryAuth::Basic("alice".into(), "guess".into());
    let e = svc.pull(&r, &wrong, &no_progress).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized { .. }), "bad password: {e}");
    assert_eq!(e.reason(), "ErrImagePull");

    // The credentials as a pod's imagePullSecrets carry them (.dockerconfigjson).
    let secret = format!(
        r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
        env.registry.host()
    );
    let auth = kubelet::runtime::image::credentials_for(&[secret.into_bytes()], &env.registry.host());
    assert_eq!(auth, good);
    let info = svc.pull(&r, &auth, &no_progress).await.unwrap();
    assert_eq!(info.manifest_digest, env.images.busybox.manifest_digest);
    env.assert_clean_after_remove(&svc).await;
}
