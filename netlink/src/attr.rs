//! Netlink attributes: `u16` length, `u16` type, payload, padded to 4 bytes; nested attributes
//! carry NLA_F_NESTED in their type.

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds up to netlink's 4-byte alignment.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (padded to 4 bytes).
pub fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// Appends a string attribute (NUL-terminated, as the kernel's NLA_STRING/NLA_NUL_STRING want).
pub fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    put_attr(buf, ty, &b);
}

/// A nested attribute built by `build`.
pub fn nested(ty: u16, build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut inner = Vec::new();
    build(&mut inner);
    let mut out = Vec::new();
    put_attr(&mut out, ty | NLA_F_NESTED, &inner);
    out
}

/// Iterates the attributes in `buf` as (type without flags, payload); stops at malformed data.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let payload = &buf[off + 4..off + len];
        off += align4(len);
        Some((ty, payload))
    })
}

/// A string attribute's value (up to its NUL), lossily decoded.
pub fn str_value(p: &[u8]) -> String {
    let end = p.iter().position(|b| *b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut buf = Vec::new();
        put_str(&mut buf, 1, "kube-proxy");
        put_attr(&mut buf, 2, &[7]);
        buf.extend(nested(3, |n| put_attr(n, 4, &9u32.to_be_bytes())));
        assert_eq!(buf.len() % 4, 0);
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(str_value(&got[0].1), "kube-proxy");
        assert_eq!(got[1], (2, vec![7]));
        // The nested flag is masked off; the inner attribute reads back.
        assert_eq!(got[2].0, 3);
        assert_eq!(attrs(&got[2].1).next(), Some((4, &9u32.to_be_bytes()[..])));
    }

    #[test]
    fn malformed_attributes_end_the_iteration() {
        let mut buf = Vec::new();
        put_attr(&mut buf, 1, &[1, 2, 3, 4]);
        // A length running past the buffer, then one shorter than a header.
        buf.extend_from_slice(&[200, 0, 2, 0]);
        assert_eq!(attrs(&buf).count(), 1);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}
