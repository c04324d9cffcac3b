//! A minimal HTTP/1 server (hyper) for the health and metrics endpoints: GET-only, path-routed
//! by a plain function, one task per connection.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a handler answers: status, content type, body, and any further headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// 404 for unknown paths.
    pub fn not_found() -> Self {
        Reply {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: "404 page not found\n".into(),
            headers: Vec::new(),
        }
    }
}

/// Serves `handler(path)` on `listener` until the task is dropped.
pub async fn serve<F>(listener: TcpListener, handler: Arc<F>)
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let reply = if req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD {
                        handler(req.uri().path())
                    } else {
                        Reply {
                            status: 405,
                            content_type: "text/plain; charset=utf-8",
                            body: "method not allowed\n".into(),
                            headers: Vec::new(),
                        }
                    };
                    let extra = reply.headers;
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(reply.body)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    let headers = resp.headers_mut();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(reply.content_type),
                    );
                    headers.insert(
                        "X-Content-Type-Options",
                        http::HeaderValue::from_static("nosniff"),
                    );
                    for (name, value) in extra {
                        if let Ok(v) = http::HeaderValue::from_str(&value) {
                            headers.insert(name, v);
                        }
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
