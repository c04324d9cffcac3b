//! `/containerLogs/{namespace}/{pod}/{container}`: reading the CRI log files of a container
//! attempt (rotated ones first) the way `kubectl logs` shows them — pure rendering
//! ([`render_logs`]), a tail that reads backwards from the newest file so `--tail` does not read a
//! whole rotated history, `sinceSeconds`/`sinceTime`, and a follower that ends once the
//! container has exited and its last lines were sent.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::Body;

/// `kubectl logs` options, as the API's PodLogOptions query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Only records at or after this time (seconds, nanoseconds since the epoch).
    pub since: Option<(i64, u32)>,
}

impl LogOptions {
    /// From the query (`sinceSeconds` relative to `now`).
    pub fn from_query(q: &std::collections::HashMap<String, String>, now: SystemTime) -> Self {
        let t = |k: &str| {
            q.get(k)
                .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"))
        };
        let since = q
            .get("sinceSeconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| {
                let d = now
                    .checked_sub(Duration::from_secs(s))
                    .unwrap_or(UNIX_EPOCH)
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                (d.as_secs() as i64, d.subsec_nanos())
            })
            .or_else(|| q.get("sinceTime").and_then(|v| parse_rfc3339(v)));
        LogOptions {
            follow: t("follow"),
            previous: t("previous"),
            timestamps: t("timestamps"),
            tail_lines: q.get("tailLines").and_then(|v| v.parse().ok()),
            limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
            since,
        }
    }
}

/// Parses an RFC 3339 time (`2026-01-02T03:04:05.123Z`, offsets allowed) to (seconds, nanos).
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let t = s.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
    Some((t.as_second(), u32::try_from(t.subsec_nanosecond()).unwrap_or(0)))
}

/// The log files of one container attempt, oldest first (rotated files, then the current one).
pub fn find_log_files(
    root: &Path,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Vec<PathBuf>, String> {
    let prefix = format!("{ns}_{pod}_");
    let mut pod_dirs: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            (
                e.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH),
                e.path(),
            )
        })
        .collect();
    pod_dirs.sort();
    let Some((_, dir)) = pod_dirs.pop() else {
        return Err(format!("pod {ns}/{pod} not found on this node"));
    };
    let cdir = dir.join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&cdir)
        .map_err(|_| format!("container \"{container}\" in pod \"{pod}\" is not available"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .split('.')
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect();
    attempts.sort();
    attempts.dedup();
    let attempt = if previous {
        if attempts.len() < 2 {
            return Err(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ));
        }
        attempts[attempts.len() - 2]
    } else {
        *attempts
            .last()
            .ok_or_else(|| format!("container \"{container}\" in pod \"{pod}\" is waiting to start"))?
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cdir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n == format!("{attempt}.log") || n.starts_with(&format!("{attempt}.log."))
        })
        .collect();
    // Rotated `<n>.log.<stamp>` sort before the current `<n>.log` when ordered by (is_current, name).
    files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "log"), p.clone()));
    Ok(files)
}

fn read_all(files: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in files {
        if let Ok(mut h) = std::fs::File::open(f) {
            let _ = h.read_to_end(&mut out);
        }
    }
    out
}

fn complete_full_records(b: &[u8]) -> usize {
    b.split(|c| *c == b'\n')
        .filter(|l| {
            let mut it = l.splitn(4, |c| *c == b' ');
            it.nth(2) == Some(b"F")
        })
        .count()
}

/// The raw records that hold at least the last `n` logical lines, read backwards from the
/// newest file: `--tail` costs what it shows, not the size of the rotated history.
pub fn read_tail(files: &[PathBuf], n: usize) -> Vec<u8> {
    const BLOCK: u64 = 256 * 1024;
    let mut collected: Vec<u8> = Vec::new();
    for f in files.iter().rev() {
        let Ok(mut h) = std::fs::File::open(f) else {
            continue;
        };
        let Ok(len) = h.seek(SeekFrom::End(0)) else {
            continue;
        };
        let mut pos = len;
        while pos > 0 {
            let start = pos.saturating_sub(BLOCK);
            let mut chunk = vec![0u8; (pos - start) as usize];
            if h.seek(SeekFrom::Start(start)).is_err() || h.read_exact(&mut chunk).is_err() {
                break;
            }
            chunk.extend_from_slice(&collected);
            collected = chunk;
            pos = start;
            // The first line may be cut: count only lines after the first newline.
            let whole = match collected.iter().position(|c| *c == b'\n') {
                Some(i) if pos > 0 => &collected[i + 1..],
                _ => &collected[..],
            };
            if complete_full_records(whole) > n {
                let cut = collected.len() - whole.len();
                return collected.split_off(cut);
            }
        }
    }
    collected
}

/// Turns CRI log records (`<time> <stream> <P|F> <content>`) into what `kubectl logs` prints.
pub fn render_logs(cri: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    for l in cri.split(|c| *c == b'\n') {
        let mut it = l.splitn(4, |c| *c == b' ');
        let (Some(ts), Some(_stream), Some(tag)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let content = it.next().unwrap_or(b"");
        if let Some(since) = opts.since {
            let t = std::str::from_utf8(ts).ok().and_then(parse_rfc3339);
            if t.is_some_and(|t| t < since) {
                continue;
            }
        }
        if partial.is_empty() && opts.timestamps {
            partial.extend_from_slice(ts);
            partial.push(b' ');
        }
        partial.extend_from_slice(content);
        if tag == b"F" {
            partial.push(b'\n');
            lines.push(std::mem::take(&mut partial));
        }
    }
    if !partial.is_empty() {
        partial.push(b'\n');
        lines.push(partial);
    }
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out: Vec<u8> = lines.concat();
    if let Some(max) = opts.limit_bytes {
        out.truncate(max);
    }
    out
}

/// What is there now, rendered (the tail read backwards when that is all that is asked).
pub fn render_files(files: &[PathBuf], opts: &LogOptions) -> Vec<u8> {
    match opts.tail_lines {
        Some(n) => render_logs(&read_tail(files, n), opts),
        None => render_logs(&read_all(files), opts),
    }
}

/// Whether the followed container still runs (checked when no new lines came).
pub type StillRunning = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `follow=true`: what is there (after tail), then new lines as they are written, until the
/// client goes away or `running` says the container has exited (after its last lines).
/// A finished log as a response body the way upstream's kubelet sends it: chunked, the data
/// flushed before the end of the stream. kube-apiserver's WebSocket log reader (`wsstream`'s
/// messageCopy) drops data that arrives with EOF in the same read, which a small fixed-length
/// body (or data and the last chunk in one TLS record) causes: the client would get no lines.
pub fn finished_log_body(data: Vec<u8>) -> Response<Body> {
    let stream = futures::stream::unfold(Some(data), |data| async move {
        match data {
            Some(d) => Some((Ok::<_, Infallible>(Frame::data(Bytes::from(d))), None)),
            None => {
                // Pending once: hyper flushes the data before it writes the last chunk.
                tokio::task::yield_now().await;
                None
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

pub fn follow_logs(files: Vec<PathBuf>, opts: LogOptions, running: StillRunning) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let Some(current) = files.last().cloned() else {
            return;
        };
        let mut offset = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        let initial = render_files(&files, &opts);
        if tx.send(Bytes::from(initial)).await.is_err() {
            return;
        }
        let stream_opts = LogOptions {
            tail_lines: None,
            limit_bytes: None,
            ..opts
        };
        let mut exited_polls = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if tx.is_closed() {
                return;
            }
            let mut data = Vec::new();
            if let Ok(mut h) = std::fs::File::open(&current) {
                let len = h.seek(SeekFrom::End(0)).unwrap_or(0);
                if len < offset {
                    offset = 0; // rotated: the current file is a new one
                }
                if h.seek(SeekFrom::Start(offset)).is_ok() {
                    let _ = h.read_to_end(&mut data);
                }
            }
            // Only whole records.
            let end = data.iter().rposition(|b| *b == b'\n').map(|e| e + 1).unwrap_or(0);
            if end > 0 {
                offset += end as u64;
                exited_polls = 0;
                if tx
                    .send(Bytes::from(render_logs(&data[..end], &stream_opts)))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            // Nothing new: end once the container is gone and a last read found nothing more.
            if !running().await {
                exited_polls += 1;
                if exited_polls >= 2 {
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRI: &[u8] = b"2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:00.2Z stderr P par\n2026-01-01T00:00:00.3Z stderr F tial\n2026-01-01T00:00:00.4Z stdout F three\n";

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn cri_lines_render_like_kubectl_logs() {
        assert_eq!(
            s(render_logs(CRI, &LogOptions::default())),
            "one\npartial\nthree\n"
        );
        let ts = render_logs(
            CRI,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        assert_eq!(
            s(ts),
            "2026-01-01T00:00:00.1Z one\n2026-01-01T00:00:00.2Z partial\n2026-01-01T00:00:00.4Z three\n"
        );
        let tail = LogOptions {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(s(render_logs(CRI, &tail)), "three\n");
        let limit = LogOptions {
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(s(render_logs(CRI, &limit)), "one\np");
        let since = LogOptions {
            since: parse_rfc3339("2026-01-01T00:00:00.25Z"),
            ..Default::default()
        };
        assert_eq!(s(render_logs(CRI, &since)), "tial\nthree\n");
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00.5Z"),
            Some((1_767_225_600, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T01:00:00+01:00"),
            Some((1_767_225_600, 0))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00."), None);
        let q = std::collections::HashMap::from([("sinceSeconds".to_string(), "10".to_string())]);
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(LogOptions::from_query(&q, now).since, Some((90, 0)));
    }

    #[test]
    fn tail_reads_backwards_across_rotated_files() {
        let d = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut all = Vec::new();
        for (i, name) in ["0.log.1", "0.log.2", "0.log"].iter().enumerate() {
            let mut body = Vec::new();
            for j in 0..5000 {
                body.extend_from_slice(
                    format!("2026-01-01T00:00:00Z stdout P f{i}-{j}-\n2026-01-01T00:00:00Z stdout F end\n")
                        .as_bytes(),
                );
            }
            std::fs::write(d.path().join(name), &body).unwrap();
            files.push(d.path().join(name));
            all.extend(body);
        }
        for n in [0, 1, 10, 6000, 20_000] {
            let opts = LogOptions {
                tail_lines: Some(n),
                ..Default::default()
            };
            assert_eq!(render_files(&files, &opts), render_logs(&all, &opts), "tail {n}");
        }
        // The small tail needed one block of the newest file, not the older files.
        let newest = std::fs::metadata(&files[2]).unwrap().len() as usize;
        assert!(read_tail(&files, 10).len() < newest);
    }

    #[test]
    fn log_files_of_current_and_previous_attempts() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("default_web_uid1/main");
        std::fs::create_dir_all(&c).unwrap();
        for f in ["0.log", "1.log.20260101-000000", "1.log"] {
            std::fs::write(c.join(f), "x").unwrap();
        }
        let cur = find_log_files(d.path(), "default", "web", "main", false).unwrap();
        let names: Vec<String> = cur
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1.log.20260101-000000", "1.log"]);
        let prev = find_log_files(d.path(), "default", "web", "main", true).unwrap();
        assert_eq!(prev[0].file_name().unwrap(), "0.log");
        assert!(find_log_files(d.path(), "default", "nope", "main", false).is_err());
        assert!(
            find_log_files(d.path(), "default", "web", "other", false)
                .unwrap_err()
                .contains("not available")
        );
    }
}
