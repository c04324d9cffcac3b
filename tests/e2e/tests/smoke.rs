//! Smoke test of the foundation on real parts: a private containerd answers gRPC, a private
//! registry serves the project's test images, and what the registry serves matches what was built.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Read;

use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
};
use containerd_client::with_namespace;
use knode_harness::containerd::PrivateContainerd;
use knode_harness::image;
use knode_harness::registry::PrivateRegistry;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tonic::Request;

#[tokio::test(flavor = "current_thread")]
async fn containerd_answers_and_registry_serves_the_test_images() {
    knode_harness::require_root().expect("root");
    let registry = PrivateRegistry::start().expect("registry starts");
    let mut containerd = PrivateContainerd::start().await.expect("containerd starts");
    let dir = containerd.dir().to_path_buf();

    // containerd: Version, and a namespace round trip through the Namespaces service.
    let channel = containerd.channel().await.expect("connect");
    let version = VersionClient::new(channel.clone())
        .version(())
        .await
        .expect("Version")
        .into_inner();
    assert!(
        version.version.starts_with("1.") || version.version.contains('.'),
        "version {version:?}"
    );
    assert_eq!(version.version, containerd.version());
    let ns = containerd.unique_namespace("knode-smoke");
    let mut nsc = NamespacesClient::new(channel);
    // containerd publishes an event for the change, in the namespace named by the request header.
    let create = CreateNamespaceRequest {
        namespace: Some(Namespace {
            name: ns.clone(),
            labels: Default::default(),
        }),
    };
    nsc.create(with_namespace!(create, ns.as_str()))
        .await
        .expect("create namespace");
    let listed = namespaces(&mut nsc).await;
    assert!(listed.contains(&ns), "{ns} not in {listed:?}");
    nsc.delete(with_namespace!(
        DeleteNamespaceRequest { name: ns.clone() },
        ns.as_str()
    ))
    .await
    .expect("delete namespace");
    assert!(!namespaces(&mut nsc).await.contains(&ns));

    // registry: push the test images, then read them back over the distribution API.
    let images = image::push_test_images(&registry.host())
        .await
        .expect("push test images");
    let client = image::insecure_client();
    for pushed in [&images.testimg, &images.busybox] {
        let reference: Reference = pushed.reference.parse().expect("reference");
        let (manifest, digest) = client
            .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
            .await
            .expect("manifest");
        assert_eq!(digest, pushed.manifest_digest);
        assert_eq!(manifest.config.digest, pushed.config_digest);
        let served: Vec<&str> = manifest.layers.iter().map(|l| l.digest.as_str()).collect();
        let built: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(served, built, "{}: layer digests", pushed.reference);

        // Every blob's bytes hash to its digest, and its uncompressed tar to the config's diff ID.
        let mut config = Vec::new();
        client
            .pull_blob(&reference, &manifest.config, &mut config)
            .await
            .expect("config blob");
        let config: serde_json::Value = serde_json::from_slice(&config).expect("config json");
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids").clone();
        assert_eq!(diff_ids.len(), manifest.layers.len());
        for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let mut blob = Vec::new();
            client
                .pull_blob(&reference, layer, &mut blob)
                .await
                .expect("layer blob");
            assert_eq!(blob.len() as i64, layer.size);
            assert_eq!(format!("sha256:{:x}", Sha256::digest(&blob)), layer.digest);
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(blob.as_slice())
                .read_to_end(&mut tar)
                .expect("gunzip");
            assert_eq!(
                serde_json::json!(format!("sha256:{:x}", Sha256::digest(&tar))),
                diff_id
            );
        }
    }
    assert!(images.testimg.layers.len() >= 3, "testimg is multi-layer");

    // A second, independent client (skopeo) agrees on the image's shape.
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", images.testimg.reference),
        ])
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(inspect["Digest"], images.testimg.manifest_digest);
    assert_eq!(inspect["Architecture"], "amd64");
    let layers: Vec<String> = images.testimg.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers));

    // Tear-down leaves nothing: no process, no mount, no directory.
    let socket = containerd.socket().display().to_string();
    containerd.stop();
    drop(registry);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        knode_harness::cleanup::pids_with_cmdline(&socket).is_empty(),
        "shims left for {socket}"
    );
    assert!(knode_harness::cleanup::mounts_under(&dir).is_empty());
}

/// The names of containerd's namespaces.
async fn namespaces(nsc: &mut NamespacesClient<tonic::transport::Channel>) -> Vec<String> {
    nsc.list(ListNamespacesRequest {
        filter: String::new(),
    })
    .await
    .expect("list")
    .into_inner()
    .namespaces
    .into_iter()
    .map(|n| n.name)
    .collect()
}
