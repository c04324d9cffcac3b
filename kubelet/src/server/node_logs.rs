//! `/logs/`: the node's log files, as upstream's system log handler (`enableSystemLogHandler`,
//! default true) serves `/var/log` through Go's `http.FileServer`: a directory is an HTML listing
//! (`<a href="name">name</a>` per entry, directories with a trailing `/`, sorted by name), a file
//! is its content. Authorized as `nodes/log`.
//!
//! Paths with a `..` element are refused (400), and a path that resolves (through symlinks) outside
//! the log directory is not served (404): the caller reads only what lies under it. Upstream's
//! journal query (`enableSystemLogQuery`, `/logs/?query=...`) is not implemented.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncReadExt;

use super::{Body, text};

/// Decodes `%XX` escapes of a URL path (not `+`: that is a plain character in paths).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a request path under `/logs/` refers to, relative to the log directory: `Ok(components)`,
/// or an error message for a path that tries to leave the directory or cannot be decoded.
pub fn relative_path(rest: &str) -> Result<Vec<String>, &'static str> {
    let decoded = percent_decode(rest).ok_or("invalid URL path")?;
    let mut parts = Vec::new();
    for p in decoded.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err("invalid URL path"),
            p if p.contains('\0') => return Err("invalid URL path"),
            p => parts.push(p.to_string()),
        }
    }
    Ok(parts)
}

/// Go's `http.FileServer` directory listing for `names` (directories end with `/`).
pub fn listing(mut names: Vec<String>) -> String {
    names.sort();
    let mut out =
        String::from("<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n");
    for n in names {
        let href: String = n
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let shown = n
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        out.push_str(&format!("<a href=\"{href}\">{shown}</a>\n"));
    }
    out.push_str("</pre>\n");
    out
}

fn with_type(mut r: Response<Body>, ctype: &'static str) -> Response<Body> {
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

/// Serves `/logs/<rest>` from `root` (`request_path` is the whole path, for redirects).
pub async fn serve(root: &Path, rest: &str, request_path: &str) -> Response<Body> {
    let parts = match relative_path(rest) {
        Ok(p) => p,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let not_found = || text(StatusCode::NOT_FOUND, "404 page not found");
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return not_found();
    };
    let wanted: PathBuf = parts.iter().fold(root.clone(), |p, c| p.join(c));
    // Symlinks may point anywhere: only what resolves under the log directory is served.
    let Ok(real) = tokio::fs::canonicalize(&wanted).await else {
        return not_found();
    };
    if !real.starts_with(&root) {
        return not_found();
    }
    let Ok(meta) = tokio::fs::metadata(&real).await else {
        return not_found();
    };
    if meta.is_dir() {
        if !request_path.ends_with('/') {
            // As Go's FileServer: a directory is addressed with a trailing slash.
            let base = request_path.rsplit('/').next().unwrap_or_default();
            let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
            if let Ok(v) = http::HeaderValue::from_str(&format!("{base}/")) {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            return r;
        }
        let Ok(mut rd) = tokio::fs::read_dir(&real).await else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "Error reading directory");
        };
        let mut names = Vec::new();
        while let Ok(Some(e)) = rd.next_entry().await {
            let mut n = e.file_name().to_string_lossy().into_owned();
            if e.file_type().await.is_ok_and(|t| t.is_dir()) {
                n.push('/');
            }
            names.push(n);
        }
        let body = Full::new(Bytes::from(listing(names))).boxed();
        return with_type(Response::new(body), "text/html; charset=utf-8");
    }
    let Ok(mut f) = tokio::fs::File::open(&real).await else {
        return not_found();
    };
    // Stream the file: node logs can be large.
    let mut head = vec![0u8; 512];
    let n = f.read(&mut head).await.unwrap_or(0);
    head.truncate(n);
    let ctype = if is_text(&head) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if tx.send(Bytes::from(head)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(v) = http::HeaderValue::from_str(&meta.len().to_string()) {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    with_type(r, ctype)
}

/// UTF-8 text (a head cut in the middle of a character still is).
fn is_text(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        assert_eq!(relative_path("").unwrap(), Vec::<String>::new());
        assert_eq!(relative_path("apt/history.log").unwrap(), ["apt", "history.log"]);
        assert_eq!(relative_path("./a//b/").unwrap(), ["a", "b"]);
        assert_eq!(relative_path("a%20b").unwrap(), ["a b"]);
        assert!(relative_path("../etc/shadow").is_err());
        assert!(relative_path("apt/../../etc/shadow").is_err());
        assert!(relative_path("%2e%2e/etc/shadow").is_err());
        assert!(relative_path("%zz").is_err());
    }

    #[test]
    fn listing_is_go_fileserver_html() {
        let l = listing(vec!["syslog".into(), "apt/".into(), "a<b".into()]);
        assert_eq!(
            l,
            "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n\
             <a href=\"a%3Cb\">a&lt;b</a>\n<a href=\"apt/\">apt/</a>\n<a href=\"syslog\">syslog</a>\n</pre>\n"
        );
    }

    #[tokio::test]
    async fn serves_files_and_listings_under_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("node.log"), "hello node\n").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
        let body = |r: Response<Body>| async move {
            let status = r.status();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&b).into_owned())
        };
        let (s, b) = body(serve(&root, "", "/logs/").await).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            b.contains("<a href=\"node.log\">node.log</a>") && b.contains("<a href=\"sub/\">sub/</a>"),
            "{b}"
        );
        assert_eq!(
            body(serve(&root, "node.log", "/logs/node.log").await).await,
            (StatusCode::OK, "hello node\n".into())
        );
        let r = serve(&root, "sub", "/logs/sub").await;
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[http::header::LOCATION], "sub/");
        assert_eq!(
            serve(&root, "../secret", "/logs/../secret").await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            serve(&root, "escape", "/logs/escape").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve(&root, "missing", "/logs/missing").await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
