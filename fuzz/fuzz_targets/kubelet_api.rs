//! The kubelet API's request line: method and request target through the router
//! (`Route::parse`), the authorization attributes (`auth::attributes`), and each endpoint's query
//! or path parsing — `containerLogs` options, `/logs/` paths, exec/attach stream options,
//! port-forward ports — plus the WebSocket handshake headers of the streaming endpoints.
//!
//! Input: line 1 `METHOD target` (e.g. `GET /containerLogs/ns/p/c?tailLines=10`), line 2 a
//! `Sec-WebSocket-Key`, line 3 the offered `Sec-WebSocket-Protocol` list.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use http::{Method, Uri};
use kubelet::server::streaming::{StreamOptions, forward_ports};
use kubelet::server::websocket::{accept_key, select_protocol};
use kubelet::server::{LogOptions, Route, auth, node_logs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let request_line = lines.next().unwrap_or("");
    let ws_key = lines.next().unwrap_or("");
    let ws_protocols = lines.next().unwrap_or("");
    let (method, target) = request_line.split_once(' ').unwrap_or(("GET", request_line));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    // hyper hands the server a parsed URI: targets it cannot parse never reach the router.
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let path = uri.path();
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let _ = auth::attributes(&method, path);
    match Route::parse(&method, path) {
        Route::ContainerLogs { .. } => {
            let q: HashMap<String, String> = query.into_iter().collect();
            let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let _ = LogOptions::from_query(&q, now);
        }
        Route::NodeLogs { rest } => {
            // Whatever the path, what is served stays under the log directory.
            if let Ok(parts) = node_logs::relative_path(&rest) {
                for p in &parts {
                    assert!(
                        !p.is_empty() && p != "." && p != ".." && !p.contains('/') && !p.contains('\0'),
                        "{rest:?} → component {p:?}"
                    );
                }
            }
        }
        Route::RemoteCommand { .. } => {
            let o = StreamOptions::from_query(&query);
            assert!(!(o.tty && o.stderr), "a terminal has no separate stderr");
            let offered: Vec<&str> = ws_protocols.split('\n').collect();
            let _ = select_protocol(&offered, &["v5.channel.k8s.io", "v4.channel.k8s.io"]);
            assert_eq!(accept_key(ws_key).len(), 28, "base64 of a SHA-1");
        }
        Route::PortForward { .. } => {
            if let Ok(ports) = forward_ports(&query) {
                assert!(!ports.is_empty() && ports.iter().all(|p| *p != 0));
            }
        }
        Route::Pods | Route::Configz | Route::RunningPods | Route::NotFound => {}
    }
});
