//! Expression encoding: [`RawExpr`], one nftables expression given by its libnftnl name and
//! attributes, turned into a libnftnl object (nftnl-sys) when a rule is encoded; and the
//! constructors of the expressions the layout uses (payload, meta, cmp, lookup, numgen, nat…).
//!
//! The safe nftnl API lacks data maps, concatenations, numgen and `lookup` with a data register,
//! hence raw attributes. A [`RawExpr`] is plain data until [`Expression::to_expr`], so the rules
//! built from them ([`super::skeleton`]) are pure and comparable in tests.

use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::ptr::NonNull;

use nftnl::Rule;
use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;

use super::{NftError, cstring, nfproto};
use crate::model::Family;

/// One nftables expression given by its libnftnl name and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExpr {
    name: &'static CStr,
    u32s: Vec<(u32, u32)>,
    u64s: Vec<(u32, u64)>,
    u8s: Vec<(u32, u8)>,
    data: Vec<(u32, Vec<u8>)>,
    strs: Vec<(u32, CString)>,
}

impl RawExpr {
    fn new(name: &'static CStr) -> Self {
        RawExpr {
            name,
            u32s: Vec::new(),
            u64s: Vec::new(),
            u8s: Vec::new(),
            data: Vec::new(),
            strs: Vec::new(),
        }
    }
    fn u32(mut self, attr: u32, v: u32) -> Self {
        self.u32s.push((attr, v));
        self
    }
    fn u8(mut self, attr: u32, v: u8) -> Self {
        self.u8s.push((attr, v));
        self
    }
    fn u64(mut self, attr: u32, v: u64) -> Self {
        self.u64s.push((attr, v));
        self
    }
    fn bytes(mut self, attr: u32, v: &[u8]) -> Self {
        self.data.push((attr, v.to_vec()));
        self
    }
    fn string(mut self, attr: u32, v: CString) -> Self {
        self.strs.push((attr, v));
        self
    }

    /// The libnftnl expression name (`payload`, `lookup`, …).
    #[cfg(test)]
    pub(super) fn kind(&self) -> &str {
        self.name.to_str().unwrap_or("")
    }

    /// The set a `lookup` or `dynset` names, or the chain an `immediate` jumps to.
    #[cfg(test)]
    pub(super) fn target(&self) -> Option<&str> {
        let attr = match self.kind() {
            "lookup" => sys::NFTNL_EXPR_LOOKUP_SET,
            "dynset" => sys::NFTNL_EXPR_DYNSET_SET_NAME,
            "immediate" => sys::NFTNL_EXPR_IMM_CHAIN,
            _ => return None,
        };
        self.strs.iter().find(|(a, _)| *a == attr)?.1.to_str().ok()
    }

    /// A `u32` attribute's value.
    #[cfg(test)]
    pub(super) fn u32_attr(&self, attr: u32) -> Option<u32> {
        self.u32s.iter().find(|(a, _)| *a == attr).map(|(_, v)| *v)
    }
}

impl Expression for RawExpr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: libnftnl copies every attribute it is given.
        unsafe {
            let expr = sys::nftnl_expr_alloc(self.name.as_ptr());
            let Some(expr) = NonNull::new(expr) else {
                // Allocation failure: nftnl itself aborts in this case too.
                std::process::abort();
            };
            for (attr, v) in &self.u32s {
                sys::nftnl_expr_set_u32(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.u8s {
                sys::nftnl_expr_set_u8(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.u64s {
                sys::nftnl_expr_set_u64(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.data {
                sys::nftnl_expr_set(expr.as_ptr(), *attr as u16, v.as_ptr().cast(), v.len() as u32);
            }
            for (attr, v) in &self.strs {
                sys::nftnl_expr_set_str(expr.as_ptr(), *attr as u16, v.as_ptr());
            }
            expr
        }
    }
}

// ---- registers -------------------------------------------------------------------------------

/// The 128-bit scratch register (holds an address of either family).
pub(super) const REG1: u32 = libc::NFT_REG_1 as u32;
/// The first 32-bit register.
pub(super) const REG32_00: u32 = libc::NFT_REG32_00 as u32;
/// The verdict register.
pub(super) const REG_VERDICT: u32 = libc::NFT_REG_VERDICT as u32;

/// 32-bit register `i`.
pub(super) fn reg(i: u32) -> u32 {
    REG32_00 + i
}

/// 32-bit registers an address takes.
pub(super) fn aw(f: Family) -> u32 {
    (f.addr_len() / 4) as u32
}

/// All-ones address of the family (the mask of a full-length prefix).
pub(super) fn all_ones(f: Family) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::BROADCAST),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(u128::MAX)),
    }
}

// ---- loads -----------------------------------------------------------------------------------

pub(super) fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
}

/// Network header offset of the source address (the destination follows it).
pub(super) fn saddr_offset(f: Family) -> u32 {
    match f {
        Family::V4 => 12,
        Family::V6 => 8,
    }
}

/// `ip saddr` / `ip6 saddr` into `dreg`.
pub(super) fn saddr(f: Family, dreg: u32) -> RawExpr {
    let len = f.addr_len() as u32;
    payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        saddr_offset(f),
        len,
        dreg,
    )
}

/// `ip daddr` / `ip6 daddr` into `dreg`.
pub(super) fn daddr(f: Family, dreg: u32) -> RawExpr {
    let len = f.addr_len() as u32;
    payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        saddr_offset(f) + len,
        len,
        dreg,
    )
}

/// `ip saddr . ip daddr` (adjacent in the header) into `dreg`.
pub(super) fn saddr_daddr(f: Family, dreg: u32) -> RawExpr {
    let len = 2 * f.addr_len() as u32;
    payload(
        libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        saddr_offset(f),
        len,
        dreg,
    )
}

/// `th dport` into `dreg`.
pub(super) fn dport(dreg: u32) -> RawExpr {
    payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2, dreg)
}

pub(super) fn meta_load(key: i32, dreg: u32) -> RawExpr {
    RawExpr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_META_DREG, dreg)
}

pub(super) fn meta_store(key: i32, sreg: u32) -> RawExpr {
    RawExpr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_META_SREG, sreg)
}

/// `ct <key>` into `dreg`.
pub(super) fn ct(key: i32, dreg: u32) -> RawExpr {
    RawExpr::new(c"ct")
        .u32(sys::NFTNL_EXPR_CT_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_CT_DREG, dreg)
}

/// `ct original <key>` into `dreg`.
pub(super) fn ct_original(key: i32, dreg: u32) -> RawExpr {
    ct(key, dreg).u8(sys::NFTNL_EXPR_CT_DIR, 0)
}

/// `NFT_CT_DST_IP` / `NFT_CT_DST_IP6` (addresses of a conntrack tuple; not in libc).
pub(super) fn ct_dst_ip(f: Family) -> i32 {
    match f {
        Family::V4 => 20,
        Family::V6 => 22,
    }
}

/// `NFTA_FIB_F_SADDR` / `NFT_FIB_RESULT_ADDRTYPE` from linux/netfilter/nf_tables.h.
const NFTA_FIB_F_SADDR: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;

/// `fib saddr type` into [`REG1`].
pub(super) fn fib_saddr_type() -> RawExpr {
    RawExpr::new(c"fib")
        .u32(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_SADDR)
        .u32(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
        .u32(sys::NFTNL_EXPR_FIB_DREG, REG1)
}

/// `numgen random mod <modulus>` into `dreg`.
pub(super) fn numgen(modulus: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"numgen")
        .u32(sys::NFTNL_EXPR_NG_TYPE, libc::NFT_NG_RANDOM as u32)
        .u32(sys::NFTNL_EXPR_NG_MODULUS, modulus)
        .u32(sys::NFTNL_EXPR_NG_OFFSET, 0)
        .u32(sys::NFTNL_EXPR_NG_DREG, dreg)
}

/// `data` into `dreg`.
pub(super) fn immediate(dreg: u32, data: &[u8]) -> RawExpr {
    RawExpr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, dreg)
        .bytes(sys::NFTNL_EXPR_IMM_DATA, data)
}

// ---- operations --------------------------------------------------------------------------------

/// `reg = reg & mask ^ xor` over `mask.len()` bytes.
pub(super) fn bitwise_bytes(reg: u32, mask: &[u8], xor: &[u8]) -> RawExpr {
    RawExpr::new(c"bitwise")
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .bytes(sys::NFTNL_EXPR_BITWISE_XOR, xor)
}

/// `reg = reg & mask ^ xor` on a 32-bit value.
pub(super) fn bitwise(reg: u32, mask: u32, xor: u32) -> RawExpr {
    bitwise_bytes(reg, &mask.to_ne_bytes(), &xor.to_ne_bytes())
}

/// Compares `reg` with `data` (`op`: `NFT_CMP_*`).
pub(super) fn cmp(op: i32, reg: u32, data: &[u8]) -> RawExpr {
    RawExpr::new(c"cmp")
        .u32(sys::NFTNL_EXPR_CMP_SREG, reg)
        .u32(sys::NFTNL_EXPR_CMP_OP, op as u32)
        .bytes(sys::NFTNL_EXPR_CMP_DATA, data)
}

/// Looks the key in `sreg` up in set `name` (batch id `id`); a miss ends the rule. With `dreg`,
/// the map's value goes there (the verdict register for verdict maps).
pub(super) fn lookup(name: &str, id: u32, sreg: u32, dreg: Option<u32>) -> Result<RawExpr, NftError> {
    let mut e = RawExpr::new(c"lookup")
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg)
        .string(sys::NFTNL_EXPR_LOOKUP_SET, cstring(name)?)
        .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
    if let Some(d) = dreg {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_DREG, d);
    }
    Ok(e)
}

/// `update @<name> { <key in sreg_key> timeout <timeout>s : <data in sreg_data> }`.
pub(super) fn dynset_update(
    name: &str,
    id: u32,
    sreg_key: u32,
    sreg_data: u32,
    timeout: u32,
) -> Result<RawExpr, NftError> {
    Ok(RawExpr::new(c"dynset")
        .u32(sys::NFTNL_EXPR_DYNSET_OP, libc::NFT_DYNSET_OP_UPDATE as u32)
        .u32(sys::NFTNL_EXPR_DYNSET_SREG_KEY, sreg_key)
        .string(sys::NFTNL_EXPR_DYNSET_SET_NAME, cstring(name)?)
        .u32(sys::NFTNL_EXPR_DYNSET_SET_ID, id)
        .u32(sys::NFTNL_EXPR_DYNSET_SREG_DATA, sreg_data)
        .u64(sys::NFTNL_EXPR_DYNSET_TIMEOUT, u64::from(timeout) * 1000))
}

// ---- statements and verdicts -------------------------------------------------------------------

/// An immediate verdict (accept, drop).
pub(super) fn verdict(v: i32) -> RawExpr {
    RawExpr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, REG_VERDICT)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, v as u32)
}

/// `jump <chain>`.
pub(super) fn jump(chain: &str) -> Result<RawExpr, NftError> {
    Ok(verdict(libc::NFT_JUMP).string(sys::NFTNL_EXPR_IMM_CHAIN, cstring(chain)?))
}

/// `dnat ip to` the address in 32-bit register `base` and the port in the register after it.
pub(super) fn dnat_to(f: Family, base: u32) -> RawExpr {
    RawExpr::new(c"nat")
        .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
        .u32(sys::NFTNL_EXPR_NAT_FAMILY, nfproto(f))
        .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, reg(base))
        .u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, reg(base + aw(f)))
}

/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY` from linux/netfilter/nf_nat.h (not in libc).
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// `masquerade fully-random`.
pub(super) fn masquerade_fully_random() -> RawExpr {
    RawExpr::new(c"masq").u32(sys::NFTNL_EXPR_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY)
}

/// `reject` with ICMP port unreachable (code 3; ICMPv6: 4).
pub(super) fn reject_port_unreachable(f: Family) -> RawExpr {
    let code = match f {
        Family::V4 => 3,
        Family::V6 => 4,
    };
    RawExpr::new(c"reject")
        .u32(sys::NFTNL_EXPR_REJECT_TYPE, libc::NFT_REJECT_ICMP_UNREACH as u32)
        .u32(sys::NFTNL_EXPR_REJECT_CODE, code)
}
