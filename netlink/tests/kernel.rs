#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Against the kernel (root): requests and batches in a private network namespace (the test
//! thread `unshare`s one, so nothing touches the host's tables).

use knode_netlink::attr::{attrs, put_str, str_value};
use knode_netlink::message::{nf_message, nft_get};
use knode_netlink::{Error, Socket};

const NFTA_TABLE_NAME: u16 = 1;

fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `f` on a thread in a fresh network namespace of its own.
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: affects only this thread, which ends with `f`.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        f()
    })
    .join()
    .unwrap()
}

fn nft_msg(msg: i32, flags: i32, seq: u32, table: &str) -> Vec<u8> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_TABLE_NAME, table);
    let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | msg as u16;
    nf_message(
        ty,
        (libc::NLM_F_REQUEST | flags) as u16,
        seq,
        libc::NFPROTO_IPV4 as u8,
        &a,
    )
}

/// BATCH_BEGIN, `body` (acked, seqs 2..), BATCH_END, in separate pages as libnftnl hands them.
fn batch(body: &[Vec<u8>]) -> (Vec<Vec<u8>>, std::ops::Range<u32>) {
    let request = libc::NLM_F_REQUEST as u16;
    let mut begin = nf_message(libc::NFNL_MSG_BATCH_BEGIN as u16, request, 1, 0, &[]);
    // nfgenmsg.res_id: the subsystem the batch is for, big-endian.
    begin[18..20].copy_from_slice(&(libc::NFNL_SUBSYS_NFTABLES as u16).to_be_bytes());
    let mut pages = vec![begin];
    pages.extend(body.iter().cloned());
    let end = 2 + body.len() as u32;
    pages.push(nf_message(libc::NFNL_MSG_BATCH_END as u16, request, end, 0, &[]));
    (pages, 2..end)
}

/// The IPv4 tables, by a dump, sorted.
fn table_names(sock: &mut Socket) -> Vec<String> {
    let mut names = Vec::new();
    let family = libc::NFPROTO_IPV4 as u8;
    sock.request(
        |seq| nft_get(libc::NFT_MSG_GETTABLE as u16, true, seq, family, &[]),
        |a| {
            let name = attrs(a).find(|(t, _)| *t == NFTA_TABLE_NAME);
            names.extend(name.map(|(_, v)| str_value(v)));
        },
    )
    .unwrap();
    names.sort();
    names
}

#[test]
fn a_batch_is_acked_and_a_dump_reads_it_back() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    in_private_netns(|| {
        let mut sock = Socket::open(libc::NETLINK_NETFILTER).unwrap();
        let create = libc::NLM_F_CREATE | libc::NLM_F_ACK;
        let (pages, seqs) = batch(&[
            nft_msg(libc::NFT_MSG_NEWTABLE, create, 2, "a"),
            nft_msg(libc::NFT_MSG_NEWTABLE, create, 3, "b"),
        ]);
        let refs: Vec<&[u8]> = pages.iter().map(|p| p.as_slice()).collect();
        let times = sock.send_batch(&refs, seqs).unwrap();
        assert_eq!(times.bytes, pages.iter().map(Vec::len).sum::<usize>());

        assert_eq!(table_names(&mut sock), ["a", "b"]);
    });
}

#[test]
fn rejections_carry_the_errno_and_the_message_index() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    in_private_netns(|| {
        let mut sock = Socket::open(libc::NETLINK_NETFILTER).unwrap();
        let e = sock
            .request(
                |seq| {
                    nft_get(
                        libc::NFT_MSG_GETTABLE as u16,
                        false,
                        seq,
                        libc::NFPROTO_IPV4 as u8,
                        &[(NFTA_TABLE_NAME, "missing")],
                    )
                },
                |_| {},
            )
            .unwrap_err();
        assert!(matches!(e, Error::Rejected { index: 0, .. }), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));

        // The second message fails: the whole batch is rolled back, so the first table is gone.
        let (pages, seqs) = batch(&[
            nft_msg(
                libc::NFT_MSG_NEWTABLE,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
                2,
                "c",
            ),
            nft_msg(libc::NFT_MSG_DELTABLE, libc::NLM_F_ACK, 3, "missing"),
        ]);
        let refs: Vec<&[u8]> = pages.iter().map(|p| p.as_slice()).collect();
        let e = sock.send_batch(&refs, seqs).unwrap_err();
        assert!(matches!(e, Error::Rejected { index: 1, .. }), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // The socket still works after a failed batch (leftover acks are drained).
        assert!(table_names(&mut sock).is_empty());
    });
}
