//! The node's interface addresses (getifaddrs(3)), for `--nodeport-addresses` CIDRs, and an
//! rtnetlink subscription that reports when they change (an address added after start-up
//! serves NodePorts as soon as it appears).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// Every IPv4 and IPv6 address configured on an interface of this network namespace (sorted,
/// deduplicated).
pub fn local_addrs() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

/// A NETLINK_ROUTE socket subscribed to IPv4 and IPv6 address changes of this network
/// namespace.
#[derive(Debug)]
pub struct AddressEvents {
    fd: OwnedFd,
}

impl AddressEvents {
    /// Subscribes (RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) in the calling thread's namespace.
    pub fn subscribe() -> std::io::Result<Self> {
        let fd = knode_netlink::bound_socket(
            libc::NETLINK_ROUTE,
            (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32,
        )?;
        Ok(AddressEvents { fd })
    }

    /// Blocks until an address is added or removed, then swallows the burst that follows within
    /// `settle` (adding one address sends several messages). An overflow (ENOBUFS: events were
    /// lost) counts as a change too.
    pub fn wait(&self, settle: Duration) -> std::io::Result<()> {
        self.recv(None)?;
        while self.recv(Some(settle))? {}
        Ok(())
    }

    /// One datagram; false when `timeout` passed without one.
    fn recv(&self, timeout: Option<Duration>) -> std::io::Result<bool> {
        if let Some(t) = timeout {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(false);
            }
        }
        let mut buf = [0u8; 8192];
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) && e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed() {
        let addrs = super::local_addrs().unwrap();
        assert!(
            addrs.contains(&std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
