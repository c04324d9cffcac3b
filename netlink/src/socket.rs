//! A netlink socket kept open across requests, its buffers, and the two exchanges knode needs:
//! one request with its answer (or dump), and a batch of many messages with one ack each.

use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::Error;
use crate::message::{ack_code, messages, nf_attrs};

/// A bound netlink socket in the network namespace of the thread that opened it.
///
/// Keep it open across requests: closing a NETLINK_NETFILTER socket makes nf_tables wait for its
/// pending transaction cleanup (`NETLINK_URELEASE` → flush of the commit-release work, which
/// does `synchronize_rcu`), ≈ 4–16 ms after every commit on this machine.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    /// The network namespace it was opened in (inode of `/proc/thread-self/ns/net`).
    netns: Option<u64>,
    /// SO_SNDBUF/SO_RCVBUF asked for so far.
    sndbuf: usize,
    rcvbuf: usize,
}

/// Where the time of [`Socket::send_batch`] went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTimes {
    /// Bytes sent.
    pub bytes: usize,
    /// The `sendmsg` (nf_tables validates and commits a batch in the sending thread).
    pub send: Duration,
    /// Reading the acks.
    pub acks: Duration,
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

fn set_opt<T>(fd: RawFd, level: i32, opt: i32, v: &T) -> bool {
    // SAFETY: setsockopt with a pointer to a live value and its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        ) == 0
    }
}

/// The kernel as a destination (a zeroed `sockaddr_nl`).
fn kernel() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr
}

impl Socket {
    /// Opens a socket of `protocol` (e.g. `libc::NETLINK_NETFILTER`) in the calling thread's
    /// namespace: receive timeout 10 s, acks without the echoed request (NETLINK_CAP_ACK), and an
    /// 8 MiB receive buffer (dumps of big tables arrive in many datagrams; this avoids ENOBUFS).
    pub fn open(protocol: i32) -> Result<Self, Error> {
        let fd = bound_socket(protocol, 0).map_err(Error::Open)?;
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        set_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv);
        set_opt(fd.as_raw_fd(), libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, &1i32);
        let mut sock = Socket {
            fd,
            seq: 1,
            netns: current_netns(),
            sndbuf: 0,
            rcvbuf: 0,
        };
        sock.reserve(0, 8 << 20);
        Ok(sock)
    }

    /// True when the calling thread is in the namespace the socket was opened in.
    pub fn in_current_netns(&self) -> bool {
        self.netns.is_some() && self.netns == current_netns()
    }

    /// Raises the send/receive buffers to at least these sizes (SO_*BUFFORCE, which root may use
    /// past the sysctl limits, else SO_*BUF).
    pub fn reserve(&mut self, snd: usize, rcv: usize) {
        let fd = self.fd.as_raw_fd();
        for (want, have, force, plain) in [
            (snd, &mut self.sndbuf, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (rcv, &mut self.rcvbuf, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            if want > *have {
                let v = i32::try_from(want).unwrap_or(i32::MAX);
                if !set_opt(fd, libc::SOL_SOCKET, force, &v) {
                    set_opt(fd, libc::SOL_SOCKET, plain, &v);
                }
                *have = want;
            }
        }
    }

    /// Discards whatever is queued for reading (acks left over from a failed exchange), so the
    /// next one reads only its own answers.
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

    /// One datagram into `buf`; its length.
    fn recv(&self, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| Error::Receive(std::io::Error::last_os_error()))
    }

    /// Sends the netfilter message `build(seq)` and reads the answer: the attributes (after
    /// nfgenmsg) of every data message go to `each`, until NLMSG_DONE (dumps) or the ack. An
    /// error answer is [`Error::Rejected`] with index 0.
    pub fn request(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        self.drain();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        let addr = kernel();
        // SAFETY: `msg` and `addr` outlive the call.
        let n = unsafe {
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
            return Err(Error::Send {
                bytes: msg.len(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let n = self.recv(&mut buf)?;
            for (h, payload) in messages(&buf[..n]).filter(|(h, _)| h.seq == seq) {
                if h.is_done() {
                    return Ok(());
                }
                if h.is_error() {
                    return match ack_code(payload).unwrap_or(0) {
                        0 => Ok(()),
                        code => Err(Error::Rejected {
                            index: 0,
                            source: std::io::Error::from_raw_os_error(-code),
                        }),
                    };
                }
                if let Some(attrs) = nf_attrs(payload) {
                    each(attrs);
                }
            }
        }
    }

    /// Sends a batch already framed by the caller (its messages in `pages`, numbered `seqs`,
    /// every one asking for an ack) in one `sendmsg`, then waits for an ack of every message.
    /// The buffers are raised first to hold the whole batch and its acks, so a batch of any
    /// size (a 10k-Service nf_tables sync is ~13 MB) is one kernel transaction. A message
    /// answered with an error is [`Error::Rejected`], its index counted from `seqs.start`.
    pub fn send_batch(&mut self, pages: &[&[u8]], seqs: Range<u32>) -> Result<BatchTimes, Error> {
        let bytes: usize = pages.iter().map(|p| p.len()).sum();
        let expected = seqs.len();
        // Room for the whole batch and one (capped) ack per message.
        self.reserve(bytes + (1 << 20), expected * 64 + (1 << 20));
        self.drain();
        let t = Instant::now();
        self.sendmsg(pages)
            .map_err(|source| Error::Send { bytes, source })?;
        let send = t.elapsed();
        let t = Instant::now();
        let mut acked = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while acked < expected {
            let n = self.recv(&mut buf)?;
            for (h, payload) in messages(&buf[..n]) {
                if !h.is_error() || !seqs.contains(&h.seq) {
                    continue;
                }
                match ack_code(payload) {
                    None => continue,
                    Some(0) => acked += 1,
                    Some(code) => {
                        return Err(Error::Rejected {
                            index: h.seq.wrapping_sub(seqs.start),
                            source: std::io::Error::from_raw_os_error(-code),
                        });
                    }
                }
            }
        }
        Ok(BatchTimes {
            bytes,
            send,
            acks: t.elapsed(),
        })
    }

    /// One `sendmsg` to the kernel gathering `pages`.
    fn sendmsg(&self, pages: &[&[u8]]) -> std::io::Result<()> {
        let mut addr = kernel();
        let mut iov: Vec<libc::iovec> = pages
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: msghdr is plain data; the address and iovecs it points to outlive the call,
        // and the kernel only reads the pages.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            if libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
