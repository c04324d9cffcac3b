//! The streaming endpoints' wire framing, as a client sends it after the upgrade: SPDY/3.1 frames
//! (with zlib-compressed header blocks) and WebSocket frames (masked, fragmented), decoded the
//! way the kubelet's sessions decode them, one buffer at a time.
//!
//! Input: one byte choosing the transport (even: SPDY, odd: WebSocket), then the byte stream.
#![no_main]

use bytes::BytesMut;
use kubelet::server::spdy::{self, Codec};
use kubelet::server::websocket::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, stream)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(stream);
    if which % 2 == 0 {
        let Ok(mut codec) = Codec::new() else {
            return;
        };
        // Frames until the buffer holds no whole one or the session would be torn down.
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            // What the server answers must encode.
            let mut out = Vec::new();
            codec
                .encode(&frame, &mut out)
                .expect("re-encoding a decoded frame");
        }
        let _ = spdy::parse_header_block(stream);
    } else {
        let mut dec = Decoder::default();
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
});
