//! A small SPDY/3.1 server session: what kube-apiserver (and kubectl through it) speaks to the
//! kubelet for exec, attach and port-forward after an `Upgrade: SPDY/3.1`. No maintained Rust SPDY
//! crate fits a server on an upgraded connection, so this is the framing from the SPDY/3 draft:
//! SYN_STREAM / SYN_REPLY / RST_STREAM / SETTINGS / PING / GOAWAY / HEADERS / WINDOW_UPDATE control
//! frames and DATA frames, header blocks compressed with one zlib context per direction primed
//! with the SPDY dictionary.
//!
//! The session ([`start`]) accepts every stream the client opens (answering SYN_REPLY, as
//! kubelet's spdystream handler does) and hands it to the caller with a channel of its data (FIN
//! = end of the channel) and a [`StreamWriter`]. Flow control windows are not enforced: neither
//! spdystream peer (kubectl, kube-apiserver) enforces or needs them.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1).
#[rustfmt::skip]
pub const DICTIONARY: &[u8] = &[
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68,
    0x65, 0x61, 0x64, 0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70,
    0x75, 0x74, 0x00, 0x00, 0x00, 0x06, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00,
    0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65,
    0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f,
    0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c,
    0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70,
    0x74, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00,
    0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68,
    0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x61, 0x63,
    0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x6f,
    0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10,
    0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67,
    0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x6f,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00, 0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74,
    0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00, 0x00, 0x00, 0x04, 0x66,
    0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08, 0x69,
    0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f,
    0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d,
    0x69, 0x66, 0x2d, 0x6e, 0x6f, 0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d,
    0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65,
    0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65,
    0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00,
    0x0c, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00,
    0x06, 0x70, 0x72, 0x61, 0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79,
    0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
    0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61,
    0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00,
    0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65,
    0x72, 0x00, 0x00, 0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c,
    0x65, 0x72, 0x00, 0x00, 0x00, 0x11, 0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65,
    0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61,
    0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61, 0x67, 0x65, 0x6e, 0x74,
    0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61, 0x00,
    0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77,
    0x77, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x06, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00,
    0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30,
    0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03, 0x75, 0x72,
    0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73,
    0x65, 0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65,
    0x70, 0x2d, 0x61, 0x6c, 0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69,
    0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31, 0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35,
    0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33, 0x30, 0x33, 0x33, 0x30, 0x34, 0x33,
    0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30, 0x35, 0x34, 0x30,
    0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34,
    0x31, 0x37, 0x35, 0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e,
    0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65,
    0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20,
    0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30, 0x31, 0x20, 0x4d, 0x6f,
    0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79, 0x34,
    0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30,
    0x31, 0x20, 0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30,
    0x33, 0x20, 0x46, 0x6f, 0x72, 0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e,
    0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64, 0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65,
    0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x45, 0x72, 0x72, 0x6f,
    0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20,
    0x55, 0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46,
    0x65, 0x62, 0x20, 0x4d, 0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a,
    0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20, 0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20,
    0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65, 0x63, 0x20, 0x30, 0x30, 0x3a, 0x30,
    0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65, 0x2c, 0x20, 0x57,
    0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x65, 0x64, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61,
    0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69, 0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d, 0x6c,
    0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74,
    0x2f, 0x6a, 0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c,
    0x69, 0x63, 0x70, 0x72, 0x69, 0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65,
    0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65, 0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64,
    0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75, 0x74, 0x66, 0x2d, 0x38, 0x63,
    0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35, 0x39, 0x2d,
    0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 1;
/// Largest frame accepted (the 24-bit length allows 16 MiB; nobody sends that much at once).
const MAX_FRAME: usize = (1 << 24) - 1;

/// RST_STREAM status: the stream was cancelled.
pub const RST_CANCEL: u32 = 5;

/// Protocol errors on a session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: unsupported version {0}")]
    Version(u16),
    #[error("SPDY: malformed {0} frame")]
    Malformed(&'static str),
    #[error("SPDY: header block compression: {0}")]
    Zlib(String),
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        headers: Vec<(String, String)>,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame type this session does not use (ignored, as the draft requires).
    Unknown(u16),
}

/// Frame encoder/decoder with the two header compression contexts of a session.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
    inflate_primed: bool,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Codec")
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Codec {
    /// A codec for a new session.
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Codec {
            deflate,
            inflate: Decompress::new(true),
            inflate_primed: false,
        })
    }

    /// Decodes one frame from the front of `buf` if it holds a whole one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let payload = buf.split_to(len).freeze();
        let fin = head[4] & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: be32(&head[..4]) & 0x7fff_ffff,
                fin,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize, what: &'static str| {
            if payload.len() < n {
                Err(SpdyError::Malformed(what))
            } else {
                Ok(())
            }
        };
        let id = |p: &[u8]| be32(p) & 0x7fff_ffff;
        Ok(Some(match kind {
            TYPE_SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream_id: id(&payload),
                    fin,
                    headers: self.inflate_headers(&payload[10..])?,
                }
            }
            TYPE_SYN_REPLY => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    stream_id: id(&payload),
                    fin,
                    headers: self.inflate_headers(&payload[4..])?,
                }
            }
            TYPE_HEADERS => {
                need(4, "HEADERS")?;
                Frame::Headers {
                    stream_id: id(&payload),
                    headers: self.inflate_headers(&payload[4..])?,
                }
            }
            TYPE_RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: id(&payload),
                    status: be32(&payload[4..]),
                }
            }
            TYPE_SETTINGS => Frame::Settings,
            TYPE_PING => {
                need(4, "PING")?;
                Frame::Ping(be32(&payload))
            }
            TYPE_GOAWAY => {
                need(8, "GOAWAY")?;
                Frame::GoAway {
                    last_good: id(&payload),
                    status: be32(&payload[4..]),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: id(&payload),
                    delta: be32(&payload[4..]) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        }))
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(payload);
        }
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data { stream_id, fin, data } => {
                // Split what does not fit the 24-bit length.
                let chunks: Vec<&[u8]> = if data.is_empty() {
                    vec![&[][..]]
                } else {
                    data.chunks(MAX_FRAME).collect()
                };
                let last = chunks.len() - 1;
                for (i, c) in chunks.into_iter().enumerate() {
                    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                    out.push(fin_flag(*fin && i == last));
                    out.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
                    out.extend_from_slice(c);
                }
            }
            Frame::SynStream {
                stream_id,
                fin,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                p.extend(self.deflate_headers(headers)?);
                control(out, TYPE_SYN_STREAM, fin_flag(*fin), &p);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(out, TYPE_SYN_REPLY, fin_flag(*fin), &p);
            }
            Frame::Headers { stream_id, headers } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.deflate_headers(headers)?);
                control(out, TYPE_HEADERS, 0, &p);
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, TYPE_RST_STREAM, 0, &p);
            }
            Frame::Settings => control(out, TYPE_SETTINGS, 0, &0u32.to_be_bytes()),
            Frame::Ping(id) => control(out, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut p = last_good.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, TYPE_GOAWAY, 0, &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&delta.to_be_bytes());
                control(out, TYPE_WINDOW_UPDATE, 0, &p);
            }
            Frame::Unknown(_) => {}
        }
        Ok(())
    }

    fn deflate_headers(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            // Done when all input is in and the sync flush fit (room left over).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn inflate_headers(&mut self, mut input: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let zerr = |e: &dyn std::fmt::Display| SpdyError::Zlib(e.to_string());
        let mut plain: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        for _ in 0..10_000 {
            plain.reserve(1024);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let r = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(Status::Ok | Status::BufError) => {}
                Err(e) if e.needs_dictionary().is_some() && !self.inflate_primed => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| zerr(&e))?;
                    self.inflate_primed = true;
                    continue;
                }
                Err(e) => return Err(zerr(&e)),
            }
            // All input consumed and the output had room: the block is complete.
            if input.is_empty() && plain.len() < plain.capacity() {
                return parse_header_block(&plain);
            }
            if used == 0 && produced == 0 {
                return Err(SpdyError::Malformed("header block"));
            }
        }
        parse_header_block(&plain)
    }
}

/// Parses an uncompressed SPDY/3 header block; a value with NULs is several values of one name.
pub fn parse_header_block(mut b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn take<'a>(n: usize, b: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
        if b.len() < n {
            return Err(SpdyError::Malformed("header block"));
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    let count = be32(take(4, &mut b)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let kl = be32(take(4, &mut b)?) as usize;
        let k = String::from_utf8_lossy(take(kl, &mut b)?).to_ascii_lowercase();
        let vl = be32(take(4, &mut b)?) as usize;
        let v = take(vl, &mut b)?;
        for part in v.split(|c| *c == 0) {
            out.push((k.clone(), String::from_utf8_lossy(part).into_owned()));
        }
    }
    Ok(out)
}

/// A stream the client opened.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The client's data; ends when the client half-closes (FIN) or resets the stream.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
enum Out {
    Frame(Frame),
    /// Flush what is queued, then close the connection.
    Shutdown,
}

/// Sends on one stream.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends data; false when the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.out
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                fin: false,
                data,
            }))
            .await
            .is_ok()
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            }))
            .await;
    }

    /// Resets the stream.
    pub async fn reset(&self, status: u32) {
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }))
            .await;
    }
}

/// Ends a session: flushes what was queued, sends GOAWAY and closes the connection.
#[derive(Debug, Clone)]
pub struct SessionCloser(mpsc::Sender<Out>);

impl SessionCloser {
    /// Ends the session.
    pub async fn shutdown(&self) {
        let _ = self
            .0
            .send(Out::Frame(Frame::GoAway {
                last_good: 0,
                status: 0,
            }))
            .await;
        let _ = self.0.send(Out::Shutdown).await;
    }
}

/// A running session: the streams the client opens, and a handle to end it.
#[derive(Debug)]
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    pub closer: SessionCloser,
}

/// Runs a server session on an upgraded connection.
pub fn start<IO>(io: IO) -> Result<Session, SpdyError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut enc = Codec::new()?;
    let mut dec = Codec::new()?;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    // Writer: encodes queued frames in order.
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(o) = out_rx.recv().await {
            let Out::Frame(f) = o else { break };
            buf.clear();
            if let Err(e) = enc.encode(&f, &mut buf) {
                tracing::debug!(error = %e, "SPDY encode failed");
                break;
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            // Batch writes: flush when nothing else is queued.
            if out_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    // Reader: dispatches frames to streams.
    let out = out_tx.clone();
    tokio::spawn(async move {
        let mut data: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        'read: loop {
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(f)) => {
                        if !dispatch(f, &mut data, &out, &streams_tx).await {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "SPDY protocol error");
                        let _ = out
                            .send(Out::Frame(Frame::GoAway {
                                last_good: 0,
                                status: 1,
                            }))
                            .await;
                        let _ = out.send(Out::Shutdown).await;
                        break 'read;
                    }
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Connection gone: every stream's data ends (the senders drop with `data`).
        drop(data);
    });
    Ok(Session {
        streams: streams_rx,
        closer: SessionCloser(out_tx),
    })
}

/// Handles one frame from the client; false ends the session.
async fn dispatch(
    f: Frame,
    data: &mut HashMap<u32, mpsc::Sender<Bytes>>,
    out: &mpsc::Sender<Out>,
    streams: &mpsc::Sender<Stream>,
) -> bool {
    match f {
        Frame::SynStream {
            stream_id,
            fin,
            headers,
        } => {
            let (tx, rx) = mpsc::channel(64);
            if !fin {
                data.insert(stream_id, tx);
            }
            let _ = out
                .send(Out::Frame(Frame::SynReply {
                    stream_id,
                    fin: false,
                    headers: Vec::new(),
                }))
                .await;
            let s = Stream {
                id: stream_id,
                headers,
                data: rx,
                writer: StreamWriter {
                    id: stream_id,
                    out: out.clone(),
                },
            };
            if streams.send(s).await.is_err() {
                let _ = out
                    .send(Out::Frame(Frame::RstStream {
                        stream_id,
                        status: RST_CANCEL,
                    }))
                    .await;
            }
        }
        Frame::Data {
            stream_id,
            fin,
            data: d,
        } => {
            if !d.is_empty()
                && let Some(tx) = data.get(&stream_id)
            {
                // A handler that stopped reading its stream just loses the data.
                let _ = tx.send(d).await;
            }
            if fin {
                data.remove(&stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            data.remove(&stream_id);
        }
        Frame::Ping(id) => {
            let _ = out.send(Out::Frame(Frame::Ping(id))).await;
        }
        Frame::GoAway { .. } => return false,
        Frame::SynReply { .. }
        | Frame::Headers { .. }
        | Frame::Settings
        | Frame::WindowUpdate { .. }
        | Frame::Unknown(_) => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    /// Two header blocks as zlib (Go's compress/zlib, Python's zlib) writes them with the SPDY
    /// dictionary and a sync flush each: the second depends on the first's context.
    #[test]
    fn inflates_header_blocks_from_a_dictionary_zlib_stream() {
        let mut c = Codec::new().unwrap();
        let a = hex("78f9e3c6a7c202e50e703a2b294a4dcc851625aca9a0808614cb45e01c6061606100000000ffff");
        let b = hex("02d28c184a41a54e22000000ffff");
        assert_eq!(
            c.inflate_headers(&a).unwrap(),
            vec![
                ("streamtype".to_string(), "error".to_string()),
                ("port".to_string(), "8080".to_string())
            ]
        );
        assert_eq!(
            c.inflate_headers(&b).unwrap(),
            vec![("streamtype".to_string(), "data".to_string())]
        );
    }

    #[test]
    fn frames_round_trip_through_the_codec() {
        let (mut tx, mut rx) = (Codec::new().unwrap(), Codec::new().unwrap());
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "stdout".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                fin: true,
                headers: vec![("streamtype".into(), "error".into()), ("x".into(), "".into())],
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                fin: false,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 1,
                status: RST_CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
            Frame::Headers {
                stream_id: 1,
                headers: vec![("a".into(), "b".into())],
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            tx.encode(f, &mut wire).unwrap();
        }
        // Fed byte by byte: a partial frame waits for more.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut c = Codec::new().unwrap();
        // A version 2 control frame.
        let mut b = BytesMut::from(&[0x80u8, 2, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(c.decode(&mut b), Err(SpdyError::Version(2))));
        // A SYN_STREAM too short for its fields.
        let mut b = BytesMut::from(&[0x80u8, 3, 0, 1, 0, 0, 0, 2, 0, 0][..]);
        assert!(matches!(
            c.decode(&mut b),
            Err(SpdyError::Malformed("SYN_STREAM"))
        ));
        // A header block claiming more pairs than it holds; garbage instead of zlib.
        assert!(parse_header_block(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_err());
        assert!(c.inflate_headers(b"not zlib at all").is_err());
    }
}
