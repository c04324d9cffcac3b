//! Netlink message framing: the 16-byte `nlmsghdr`, netfilter's 4-byte `nfgenmsg` after it, the
//! messages of one received datagram, and the kernel's acks (NLMSG_ERROR, code 0 for success).

use crate::attr::{align4, put_str};

/// Size of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// Size of `struct nfgenmsg` (family, version, resource id) after a netfilter message's header.
pub const NFGENMSG_LEN: usize = 4;

/// The fields of a received message's header that callers look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
}

impl Header {
    /// NLMSG_DONE: the end of a dump.
    pub fn is_done(&self) -> bool {
        self.ty == libc::NLMSG_DONE as u16
    }

    /// NLMSG_ERROR: an ack (code 0) or an error.
    pub fn is_error(&self) -> bool {
        self.ty == libc::NLMSG_ERROR as u16
    }
}

/// Iterates the messages of a datagram as (header, payload after the header); stops at a
/// truncated or malformed one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        if off + HEADER_LEN > buf.len() {
            return None;
        }
        let len = word(off) as usize;
        if len < HEADER_LEN || off + len > buf.len() {
            return None;
        }
        let header = Header {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            flags: u16::from_ne_bytes([buf[off + 6], buf[off + 7]]),
            seq: word(off + 8),
        };
        let payload = &buf[off + HEADER_LEN..off + len];
        off += align4(len);
        Some((header, payload))
    })
}

/// The error code of an NLMSG_ERROR payload: 0 for an ack, else a negated errno (None when the
/// payload is too short to hold one).
pub fn ack_code(payload: &[u8]) -> Option<i32> {
    let b = <[u8; 4]>::try_from(payload.get(..4)?).ok()?;
    Some(i32::from_ne_bytes(b))
}

/// The attributes of a netfilter message's payload (after `nfgenmsg`).
pub fn nf_attrs(payload: &[u8]) -> Option<&[u8]> {
    payload.get(NFGENMSG_LEN..)
}

/// A netfilter netlink message: header, nfgenmsg (`family`, version 0), attributes.
/// `full_type` is `subsystem << 8 | message`.
pub fn nf_message(full_type: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + NFGENMSG_LEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&full_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// An nf_tables GET request (`NFT_MSG_GET*` `msg`) for netfilter family `family`, selected by
/// string attributes (table, chain or set names). A dump lists every match; otherwise the one
/// object (or an error) is answered.
pub fn nft_get(msg: u16, dump: bool, seq: u32, family: u8, strings: &[(u16, &str)]) -> Vec<u8> {
    let mut attrs = Vec::new();
    for (ty, v) in strings {
        put_str(&mut attrs, *ty, v);
    }
    let flags = libc::NLM_F_REQUEST | if dump { libc::NLM_F_DUMP } else { libc::NLM_F_ACK };
    nf_message(
        ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | msg,
        flags as u16,
        seq,
        family,
        &attrs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{attrs, str_value};

    #[test]
    fn a_datagram_of_messages_is_walked_and_acks_decode() {
        let mut dgram = nft_get(libc::NFT_MSG_GETRULE as u16, true, 7, 2, &[(1, "t"), (2, "c")]);
        let first_len = dgram.len();
        // An ack with error -ENOENT for seq 8.
        let mut err = nf_message(libc::NLMSG_ERROR as u16, 0, 8, 0, &[]);
        err.truncate(HEADER_LEN);
        err.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let len = err.len() as u32;
        err[..4].copy_from_slice(&len.to_ne_bytes());
        dgram.extend_from_slice(&err);
        let got: Vec<_> = messages(&dgram).collect();
        assert_eq!(got.len(), 2);
        let (h, p) = got[0];
        assert_eq!(h.seq, 7);
        assert_eq!(
            h.ty,
            ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_GETRULE as u16
        );
        assert_eq!(h.flags, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16);
        assert_eq!(p.len(), first_len - HEADER_LEN);
        let names: Vec<String> = attrs(nf_attrs(p).unwrap()).map(|(_, v)| str_value(v)).collect();
        assert_eq!(names, ["t", "c"]);
        let (h, p) = got[1];
        assert!(h.is_error() && !h.is_done());
        assert_eq!(ack_code(p), Some(-libc::ENOENT));
        // A truncated tail is not read.
        assert_eq!(messages(&dgram[..dgram.len() - 1]).count(), 1);
    }
}
