//! A small NETLINK_NETFILTER request/response socket and attribute helpers, shared by the
//! conntrack cleanup (ctnetlink) and the table read-back (nf_tables dumps).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// A netfilter netlink message: header, nfgenmsg (`family`, version 0), attributes.
pub fn nf_message(full_type: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&full_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
///
/// Keep it open across requests: closing a netfilter netlink socket makes nf_tables wait for
/// its pending transaction cleanup (`NETLINK_URELEASE` → flush of the commit-release work, which
/// does `synchronize_rcu`), ≈ 4–16 ms after every commit on this machine.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    /// The network namespace it was opened in (inode of `/proc/thread-self/ns/net`).
    netns: Option<u64>,
    /// SO_SNDBUF/SO_RCVBUF asked for so far.
    sndbuf: usize,
    rcvbuf: usize,
}

/// A netlink socket of `protocol` in the calling thread's namespace, bound (kernel-assigned port
/// id) to the multicast `groups` (0: none).
pub fn bound_socket(protocol: i32, groups: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket syscalls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// The inode of the calling thread's network namespace.
pub fn current_netns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

fn set_int_opt(fd: &OwnedFd, level: i32, opt: i32, v: i32) -> bool {
    // SAFETY: setsockopt with a pointer to a live i32 and its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        ) == 0
    }
}

impl NetlinkSocket {
    pub fn open() -> std::io::Result<Self> {
        let fd = bound_socket(libc::NETLINK_NETFILTER, 0)?;
        // SAFETY: setsockopt calls on a descriptor we own, with pointers to live values.
        unsafe {
            let tv = libc::timeval {
                tv_sec: 10,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            // Acks without the echoed request keep the receive side small.
            set_int_opt(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
            let mut sock = NetlinkSocket {
                fd,
                seq: 1,
                netns: current_netns(),
                sndbuf: 0,
                rcvbuf: 0,
            };
            // Dumps of big tables arrive in many datagrams; a large buffer avoids ENOBUFS.
            sock.reserve(0, 8 << 20);
            Ok(sock)
        }
    }

    /// True when the calling thread is in the namespace the socket was opened in.
    pub fn in_current_netns(&self) -> bool {
        self.netns.is_some() && self.netns == current_netns()
    }

    /// Raises the send/receive buffers to at least these sizes (SO_*BUFFORCE, else SO_*BUF).
    pub fn reserve(&mut self, snd: usize, rcv: usize) {
        for (want, have, force, plain) in [
            (snd, &mut self.sndbuf, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (rcv, &mut self.rcvbuf, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            if want > *have {
                let v = i32::try_from(want).unwrap_or(i32::MAX);
                if !set_int_opt(&self.fd, libc::SOL_SOCKET, force, v) {
                    set_int_opt(&self.fd, libc::SOL_SOCKET, plain, v);
                }
                *have = want;
            }
        }
    }

    /// The descriptor, for batch sends.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Discards whatever is queued for reading (acks left over from a failed batch), so the next
    /// request reads only its own answers.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n <= 0 {
                return;
            }
        }
    }

    /// Sends the message `build(seq)` and reads the answer: every data message's attributes
    /// (after nfgenmsg) go to `each`, until DONE (dumps) or the ack/error (other requests).
    pub fn request(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        mut each: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        self.drain();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        // SAFETY: `msg` outlives the call; the kernel is the destination (zeroed sockaddr_nl).
        let n = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 1 << 17];
        loop {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            let mut off = 0usize;
            while off + 16 <= n {
                let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let len = word(off) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq = word(off + 8);
                if len < 16 || off + len > n {
                    break;
                }
                let body = &buf[off + 16..off + len];
                if mseq == seq {
                    if ty == libc::NLMSG_DONE as u16 {
                        return Ok(());
                    }
                    if ty == libc::NLMSG_ERROR as u16 {
                        let err = body
                            .get(..4)
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(0);
                        return if err == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::from_raw_os_error(-err))
                        };
                    }
                    if body.len() >= 4 {
                        each(&body[4..]);
                    }
                }
                off += align4(len);
            }
        }
    }
}
