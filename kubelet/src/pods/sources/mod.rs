//! Pod sources, feeding the pod manager ([`super::manager`]): the API watch of the pods bound to
//! this node (here), static pod manifests ([`file`]) and their mirror pods ([`mirror`]).

pub mod file;
pub mod mirror;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use super::manager::{ManagerMsg, Source};

/// Watches the pods with `spec.nodeName=<node>` and reports them to the manager; after a relist,
/// pods that vanished meanwhile are reported gone. Returns when the manager is gone.
pub async fn watch_api(client: kube::Client, node_name: String, mtx: mpsc::Sender<ManagerMsg>) {
    let pods: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = Box::pin(watcher(pods, cfg).default_backoff());
    let mut seen: Vec<String> = Vec::new();
    let mut init: Vec<String> = Vec::new();
    while let Some(ev) = stream.next().await {
        let msgs: Vec<ManagerMsg> = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                init.push(uid.clone());
                if !seen.contains(&uid) {
                    seen.push(uid);
                }
                vec![ManagerMsg::Apply(Box::new(p), Source::Api)]
            }
            Ok(watcher::Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                seen.retain(|u| *u != uid);
                vec![ManagerMsg::Gone(uid)]
            }
            Ok(watcher::Event::Init) => {
                init.clear();
                vec![]
            }
            Ok(watcher::Event::InitDone) => {
                // After a relist, pods that vanished meanwhile are gone.
                let gone: Vec<String> = seen.iter().filter(|u| !init.contains(u)).cloned().collect();
                seen.retain(|u| init.contains(u));
                gone.into_iter().map(ManagerMsg::Gone).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch error (retrying)");
                vec![]
            }
        };
        for m in msgs {
            if mtx.send(m).await.is_err() {
                return;
            }
        }
    }
}
