//! knode's netlink plumbing, shared by kube-proxy (nf_tables, ctnetlink, rtnetlink address events)
//! and knode-bridge's masquerade, so framing and ack handling are written once.
//!
//! - [`attr`]: attributes (4-byte aligned TLVs): building, nesting, iterating, string values.
//! - [`message`]: headers: netfilter request messages, walking the messages of a datagram,
//!   decoding acks.
//! - [`Socket`]: a bound netlink socket kept open across requests: [`Socket::request`] (one
//!   request and its answer or dump) and [`Socket::send_batch`] (many messages in one `sendmsg`
//!   with SO_SNDBUFFORCE/SO_RCVBUFFORCE raised, then every ack), with typed [`Error`]s.
//!
//! Only libc underneath: what goes into a message is the caller's business (kube-proxy and
//! knode-bridge encode nf_tables objects with libnftnl and hand the finished pages over).

pub mod attr;
pub mod message;
mod socket;

pub use socket::{BatchTimes, Socket, bound_socket, current_netns};

/// Errors from a netlink exchange; [`Error::raw_os_error`] gives the errno behind any of them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("sending {bytes} bytes over netlink: {source}")]
    Send {
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving from netlink: {0}")]
    Receive(#[source] std::io::Error),
    /// The kernel answered message `index` (counted from the first of the request or batch)
    /// with an error.
    #[error("the kernel rejected netlink message {index}: {source}")]
    Rejected {
        index: u32,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The errno behind the error (for the kernel's answers: the negated error code it sent).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Open(e) | Error::Receive(e) => e.raw_os_error(),
            Error::Send { source, .. } | Error::Rejected { source, .. } => source.raw_os_error(),
        }
    }
}
