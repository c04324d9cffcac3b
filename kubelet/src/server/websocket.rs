//! A small WebSocket (RFC 6455) server side: the handshake answer, frame codec and a session that
//! turns a connection into a channel of incoming messages and a writer. Used for the Kubernetes
//! channel protocols (`v4.channel.k8s.io`, `v5.channel.k8s.io`: first byte of each binary message
//! is the channel; v5 adds the close signal 255) and for the `SPDY/3.1+portforward.k8s.io` tunnel
//! (binary messages carry a SPDY session's bytes).

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message accepted from a client (stdin chunks and resize events are small).
const MAX_MESSAGE: usize = 16 << 20;

const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

/// The first of our `supported` protocols the client offers (`Sec-WebSocket-Protocol` values,
/// comma-separated, possibly in several headers), in the client's order as Go's server picks.
pub fn select_protocol<'a>(offered: &[&str], supported: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .find_map(|p| supported.iter().find(|s| **s == p).copied())
}

/// Errors on a WebSocket connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("websocket: client frames must be masked")]
    Unmasked,
    #[error("websocket: message of {0} bytes is too large")]
    TooLarge(u64),
    #[error("websocket: bad frame ({0})")]
    Bad(&'static str),
}

/// One whole message (fragments joined) or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Bytes),
    Text(Bytes),
    Ping(Bytes),
    Pong,
    Close,
}

/// Decodes client frames, joining fragmented messages.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<(u8, BytesMut)>,
}

impl Decoder {
    /// Decodes the next message from `buf` if a whole frame is there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (buf[0], buf[1]);
            if b1 & 0x80 == 0 {
                return Err(WsError::Unmasked);
            }
            let mut pos = 2;
            let len = match b1 & 0x7f {
                126 => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    pos = 4;
                    u64::from(u16::from_be_bytes([buf[2], buf[3]]))
                }
                127 => {
                    if buf.len() < 10 {
                        return Ok(None);
                    }
                    pos = 10;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&buf[2..10]);
                    u64::from_be_bytes(a)
                }
                n => u64::from(n),
            };
            if len > MAX_MESSAGE as u64 {
                return Err(WsError::TooLarge(len));
            }
            let len = len as usize;
            if buf.len() < pos + 4 + len {
                return Ok(None);
            }
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&buf[pos..pos + 4]);
            buf.advance(pos + 4);
            let mut payload = buf.split_to(len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            let fin = b0 & 0x80 != 0;
            let op = b0 & 0x0f;
            match op {
                OP_PING => return Ok(Some(Message::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Message::Pong)),
                OP_CLOSE => return Ok(Some(Message::Close)),
                OP_TEXT | OP_BINARY | OP_CONT => {
                    let (kind, mut acc) = match (op, self.partial.take()) {
                        (OP_CONT, Some(p)) => p,
                        (OP_CONT, None) => return Err(WsError::Bad("continuation without a start")),
                        (_, Some(_)) => return Err(WsError::Bad("new message inside a fragmented one")),
                        (k, None) => (k, BytesMut::new()),
                    };
                    acc.extend_from_slice(&payload);
                    if acc.len() > MAX_MESSAGE {
                        return Err(WsError::TooLarge(acc.len() as u64));
                    }
                    if !fin {
                        self.partial = Some((kind, acc));
                        continue;
                    }
                    let data = acc.freeze();
                    return Ok(Some(if kind == OP_TEXT {
                        Message::Text(data)
                    } else {
                        Message::Binary(data)
                    }));
                }
                _ => return Err(WsError::Bad("unknown opcode")),
            }
        }
    }
}

/// Appends one unmasked server frame.
pub fn encode(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    encode_frame(0x80 | op, payload, None, out);
}

/// Appends one frame: `head` is its first byte (FIN bit and opcode); a client's frame is masked
/// with `mask`.
pub fn encode_frame(head: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(head);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= 0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

#[derive(Debug)]
enum Out {
    Binary(Bytes),
    Text(Bytes),
    Pong(Bytes),
    /// Sends a close frame (normal closure) and closes the connection.
    Close,
}

/// Sends binary messages on a session.
#[derive(Debug, Clone)]
pub struct WsWriter(mpsc::Sender<Out>);

impl WsWriter {
    /// Sends one binary message; false when the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.0.send(Out::Binary(data)).await.is_ok()
    }

    /// Sends `[channel] ++ data`.
    pub async fn send_channel(&self, channel: u8, data: &[u8]) -> bool {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(channel);
        m.extend_from_slice(data);
        self.send(Bytes::from(m)).await
    }

    /// Sends `data` on `channel` the base64 channel protocols' way: a text message of the channel's
    /// ASCII digit followed by the data in standard base64.
    pub async fn send_channel_base64(&self, channel: u8, data: &[u8]) -> bool {
        let mut m = String::with_capacity(data.len() * 4 / 3 + 5);
        m.push(char::from(b'0' + channel % 10));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut m);
        self.0.send(Out::Text(Bytes::from(m))).await.is_ok()
    }

    /// Closes the connection after what is queued (close frame, normal closure).
    pub async fn close(&self) {
        let _ = self.0.send(Out::Close).await;
    }
}

/// Runs a session: incoming data messages (binary and text payloads) arrive on the receiver, which
/// ends when the client closes or the connection breaks; pings are answered.
pub fn start<IO>(io: IO) -> (mpsc::Receiver<Message>, WsWriter)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
    let (in_tx, in_rx) = mpsc::channel::<Message>(64);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(o) = out_rx.recv().await {
            buf.clear();
            let close = matches!(o, Out::Close);
            match o {
                Out::Binary(b) => encode(OP_BINARY, &b, &mut buf),
                Out::Text(b) => encode(OP_TEXT, &b, &mut buf),
                Out::Pong(b) => encode(OP_PONG, &b, &mut buf),
                Out::Close => encode(OP_CLOSE, &1000u16.to_be_bytes(), &mut buf),
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            if (close || out_rx.is_empty()) && wr.flush().await.is_err() {
                break;
            }
            if close {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let pong = out_tx.clone();
    tokio::spawn(async move {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        'read: loop {
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(Message::Ping(p))) => {
                        let _ = pong.send(Out::Pong(p)).await;
                    }
                    Ok(Some(Message::Pong)) => {}
                    Ok(Some(Message::Close)) | Err(_) => break 'read,
                    Ok(Some(m)) => {
                        if in_tx.send(m).await.is_err() {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    (in_rx, WsWriter(out_tx))
}

/// Turns a session carrying a byte stream in binary messages (the port-forward tunnel) into an
/// in-memory duplex stream.
pub fn byte_stream(mut incoming: mpsc::Receiver<Message>, out: WsWriter) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(m) = incoming.recv().await {
            if let Message::Binary(b) = m
                && wr.write_all(&b).await.is_err()
            {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.send(Bytes::copy_from_slice(&buf[..n])).await {
                        break;
                    }
                }
            }
        }
        out.close().await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        encode_frame(
            if fin { 0x80 | op } else { op },
            payload,
            Some([1, 2, 3, 4]),
            &mut f,
        );
        f
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn protocol_selection_follows_the_client_order() {
        let sup = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
        assert_eq!(
            select_protocol(&["v4.channel.k8s.io, v5.channel.k8s.io"], &sup),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            select_protocol(&["base64.channel.k8s.io", "v5.channel.k8s.io"], &sup),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(select_protocol(&["channel.k8s.io"], &sup), None);
    }

    #[test]
    fn decodes_masked_and_fragmented_messages() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&masked(OP_BINARY, false, b"\x00he"));
        buf.extend_from_slice(&masked(OP_PING, true, b"p"));
        buf.extend_from_slice(&masked(OP_CONT, true, b"llo"));
        let big = vec![7u8; 300];
        buf.extend_from_slice(&masked(OP_BINARY, true, &big));
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Message::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Message::Binary(Bytes::from_static(b"\x00hello")))
        );
        // Half a frame waits for the rest.
        let mut half = buf.split_to(100);
        assert_eq!(d.decode(&mut half).unwrap(), None);
        half.unsplit(buf);
        assert_eq!(
            d.decode(&mut half).unwrap(),
            Some(Message::Binary(Bytes::from(big)))
        );
        let mut c = BytesMut::from(&masked(OP_CLOSE, true, &[3, 232])[..]);
        assert_eq!(d.decode(&mut c).unwrap(), Some(Message::Close));
        // Unmasked client frames and stray continuations are errors.
        let mut u = BytesMut::from(&[0x82u8, 1, 0][..]);
        assert_eq!(d.decode(&mut u), Err(WsError::Unmasked));
        let mut s = BytesMut::from(&masked(OP_CONT, true, b"x")[..]);
        assert!(Decoder::default().decode(&mut s).is_err());
    }

    #[test]
    fn encodes_server_frames_with_all_length_forms() {
        let mut out = Vec::new();
        encode(OP_BINARY, b"ab", &mut out);
        assert_eq!(out, [0x82, 2, b'a', b'b']);
        out.clear();
        encode(OP_BINARY, &[0; 200], &mut out);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        out.clear();
        encode(OP_BINARY, &vec![0; 70_000], &mut out);
        assert_eq!(&out[..2], &[0x82, 127]);
        assert_eq!(out.len(), 10 + 70_000);
    }
}
