//! The libnftnl (nftnl-sys) objects of a batch: NEWTABLE with the layout tag, set declarations
//! and element lists (the safe nftnl API has neither table userdata nor maps), and the chains
//! and rules of a computed [`Skeleton`] or affinity class, written into an nftnl [`Batch`].

use std::ffi::{CStr, c_void};
use std::ptr::NonNull;

use nftnl::nftnl_sys as sys;
use nftnl::{Batch, Chain, MsgType, NlMsg, Policy, Rule, Table};

use super::elements::{
    Layout, SETS, SetSpec, affinity_name, affinity_record_name, affinity_set_id, element_bytes,
};
use super::skeleton::{ChainSpec, Skeleton, affinity_chains, layout_tag};
use super::{NftError, TableConfig, cstring, nfproto};
use crate::diff::ChangeSet;
use crate::model::{Element, Family};

/// Elements per NEWSETELEM/DELSETELEM message; keeps each message well under the 64 KiB limit.
const ELEMENTS_PER_MESSAGE: usize = 400;

/// What a batch message does with its libnftnl object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    NewTable,
    NewSet,
    DelSet,
    /// NEWSETELEM or DELSETELEM, by the batch's [`MsgType`].
    Elements,
}

impl Op {
    /// Message type and flags (every message is acked, so a rejected one is reported by seq).
    fn header(self, msg_type: MsgType) -> (i32, i32) {
        let (ty, flags) = match (self, msg_type) {
            (Op::NewTable, _) => (libc::NFT_MSG_NEWTABLE, libc::NLM_F_CREATE),
            (Op::NewSet, _) => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE),
            (Op::DelSet, _) => (libc::NFT_MSG_DELSET, 0),
            (Op::Elements, MsgType::Add) => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_EXCL),
            (Op::Elements, MsgType::Del) => (libc::NFT_MSG_DELSETELEM, 0),
        };
        (ty, flags | libc::NLM_F_ACK)
    }
}

/// A libnftnl object that writes itself as a message payload.
pub(super) trait Payload {
    /// The netfilter family for the message header.
    fn family(&self) -> u16;
    /// Appends the payload for `op` after `hdr`.
    ///
    /// # Safety
    /// `hdr` must be a header nftnl_nlmsg_build_hdr wrote into a buffer of nft_nlmsg_maxsize
    /// bytes, and the payload must fit in it.
    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, op: Op);
}

/// One batch message: `op` on an object (the header/payload pattern in one place).
pub(super) struct Msg<'a, P: Payload>(pub Op, pub &'a P);

// SAFETY: `write` only serializes the borrowed libnftnl object into the buffer the batch gives.
unsafe impl<P: Payload> NlMsg for Msg<'_, P> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = self.0.header(msg_type);
        // SAFETY: the batch gives a buffer of nft_nlmsg_maxsize bytes; element messages carry at
        // most ELEMENTS_PER_MESSAGE elements, which keeps them within it.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(buf.cast(), ty as u16, self.1.family(), flags as u16, seq);
            self.1.build(hdr, self.0);
        }
    }
}

/// NEWTABLE carrying the layout tag as userdata.
pub(super) struct TableMsg {
    table: NonNull<sys::nftnl_table>,
    family: u16,
}

impl TableMsg {
    pub(super) fn new(config: &TableConfig) -> Result<TableMsg, NftError> {
        let name = cstring(&config.table_name)?;
        let tag = layout_tag(config);
        // SAFETY: allocation is checked; setters copy their arguments.
        unsafe {
            let t = NonNull::new(sys::nftnl_table_alloc()).ok_or(NftError::OutOfMemory)?;
            sys::nftnl_table_set_str(t.as_ptr(), sys::NFTNL_TABLE_NAME as u16, name.as_ptr());
            sys::nftnl_table_set_u32(t.as_ptr(), sys::NFTNL_TABLE_FAMILY as u16, nfproto(config.family));
            sys::nftnl_table_set_data(
                t.as_ptr(),
                sys::NFTNL_TABLE_USERDATA as u16,
                tag.as_ptr().cast(),
                tag.len() as u32,
            );
            Ok(TableMsg {
                table: t,
                family: nfproto(config.family) as u16,
            })
        }
    }
}

impl Drop for TableMsg {
    fn drop(&mut self) {
        // SAFETY: we own the table object.
        unsafe { sys::nftnl_table_free(self.table.as_ptr()) };
    }
}

impl Payload for TableMsg {
    fn family(&self) -> u16 {
        self.family
    }

    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, _op: Op) {
        // SAFETY: the caller's header sits in a buffer of nft_nlmsg_maxsize bytes.
        unsafe { sys::nftnl_table_nlmsg_build_payload(hdr, self.table.as_ptr()) };
    }
}

/// A set (or map): its declaration (NEWSET), deletion (DELSET) or a list of its elements.
pub(super) struct SetMsg {
    set: NonNull<sys::nftnl_set>,
    family: u16,
}

impl SetMsg {
    /// A set `name` of `layout`, with batch id `id`.
    fn declaration(table: &str, name: &str, id: u32, layout: Layout, f: Family) -> Result<SetMsg, NftError> {
        let set = Self::named(table, name, f)?;
        // SAFETY: `set` is a valid, exclusively owned nftnl_set.
        unsafe {
            let p = set.set.as_ptr();
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_TYPE as u16, layout.key_type(f));
            sys::nftnl_set_set_u32(p, sys::NFTNL_SET_KEY_LEN as u16, layout.key_len(f));
            if let Some((ty, len)) = layout.data(f) {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, libc::NFT_SET_MAP as u32);
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_TYPE as u16, ty);
                if len > 0 {
                    sys::nftnl_set_set_u32(p, sys::NFTNL_SET_DATA_LEN as u16, len);
                }
            } else {
                sys::nftnl_set_set_u32(p, sys::NFTNL_SET_FLAGS as u16, 0);
            }
        }
        Ok(set)
    }

    /// The set `name` of `table`, without attributes (for deletions and element lists).
    pub(super) fn named(table: &str, name: &str, f: Family) -> Result<SetMsg, NftError> {
        let table = cstring(table)?;
        let name = cstring(name)?;
        // SAFETY: allocation is checked; string setters copy their arguments.
        unsafe {
            let set = NonNull::new(sys::nftnl_set_alloc()).ok_or(NftError::OutOfMemory)?;
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(set.as_ptr(), sys::NFTNL_SET_FAMILY as u16, nfproto(f));
            Ok(SetMsg {
                set,
                family: nfproto(f) as u16,
            })
        }
    }

    fn add_element(&mut self, key: &[u8], data: Option<&[u8]>, goto: Option<&CStr>) -> Result<(), NftError> {
        // SAFETY: the element is allocated, filled (setters copy) and handed to the set, which
        // owns it from then on.
        unsafe {
            let elem = sys::nftnl_set_elem_alloc();
            if elem.is_null() {
                return Err(NftError::OutOfMemory);
            }
            sys::nftnl_set_elem_set(
                elem,
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast(),
                key.len() as u32,
            );
            if let Some(d) = data {
                sys::nftnl_set_elem_set(
                    elem,
                    sys::NFTNL_SET_ELEM_DATA as u16,
                    d.as_ptr().cast(),
                    d.len() as u32,
                );
            }
            if let Some(chain) = goto {
                sys::nftnl_set_elem_set_u32(elem, sys::NFTNL_SET_ELEM_VERDICT as u16, libc::NFT_JUMP as u32);
                sys::nftnl_set_elem_set_str(elem, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
            }
            sys::nftnl_set_elem_add(self.set.as_ptr(), elem);
        }
        Ok(())
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: we own the set (and thereby its elements).
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

/// The set itself (NEWSET/DELSET) or its elements (NEWSETELEM/DELSETELEM).
impl Payload for SetMsg {
    fn family(&self) -> u16 {
        self.family
    }

    unsafe fn build(&self, hdr: *mut libc::nlmsghdr, op: Op) {
        // SAFETY: as the trait requires; the set owns its elements.
        unsafe {
            if op == Op::Elements {
                sys::nftnl_set_elems_nlmsg_build_payload(hdr, self.set.as_ptr());
            } else {
                sys::nftnl_set_nlmsg_build_payload(hdr, self.set.as_ptr());
            }
        }
    }
}

/// NEWSET of a fixed set of the layout.
fn declare(batch: &mut Batch, config: &TableConfig, spec: &SetSpec) -> Result<(), NftError> {
    let set = SetMsg::declaration(&config.table_name, spec.name, spec.id, spec.layout, config.family)?;
    batch.add(&Msg(Op::NewSet, &set), MsgType::Add);
    Ok(())
}

/// DELSET of set `name`.
pub(super) fn delete_set(batch: &mut Batch, config: &TableConfig, name: &str) -> Result<(), NftError> {
    let set = SetMsg::named(&config.table_name, name, config.family)?;
    batch.add(&Msg(Op::DelSet, &set), MsgType::Del);
    Ok(())
}

/// A chain (with its hook, for base chains) and its rules.
fn add_chain(batch: &mut Batch, table: &Table, spec: &ChainSpec) -> Result<(), NftError> {
    let mut chain = Chain::new(&cstring(&spec.name)?, table);
    if let Some(b) = spec.base {
        chain.set_hook(b.hook, b.priority);
        chain.set_type(b.kind);
        chain.set_policy(Policy::Accept);
    }
    batch.add(&chain, MsgType::Add);
    for exprs in &spec.rules {
        let mut rule = Rule::new(&chain);
        for e in exprs {
            rule.add_expr(e);
        }
        batch.add(&rule, MsgType::Add);
    }
    Ok(())
}

/// Every set and chain of the skeleton, with the chains' rules.
pub(super) fn add_skeleton(
    batch: &mut Batch,
    table: &Table,
    config: &TableConfig,
    skeleton: &Skeleton,
) -> Result<(), NftError> {
    for spec in skeleton.sets {
        declare(batch, config, spec)?;
    }
    for chain in &skeleton.chains {
        add_chain(batch, table, chain)?;
    }
    Ok(())
}

/// The dynamic map of one affinity class — (client IP . destination) → chosen endpoint, with
/// elements expiring `timeout` seconds after the client's last new connection — and its chains.
pub(super) fn add_affinity_class(
    batch: &mut Batch,
    table: &Table,
    config: &TableConfig,
    timeout: u32,
) -> Result<(), NftError> {
    let f = config.family;
    let name = affinity_name(timeout);
    let set = SetMsg::declaration(
        &config.table_name,
        &name,
        affinity_set_id(timeout),
        Layout::ClientDstToEndpoint,
        f,
    )?;
    // SAFETY: `set` is a valid, exclusively owned nftnl_set.
    unsafe {
        let p = set.set.as_ptr();
        sys::nftnl_set_set_u32(
            p,
            sys::NFTNL_SET_FLAGS as u16,
            (libc::NFT_SET_MAP | libc::NFT_SET_TIMEOUT | libc::NFT_SET_EVAL) as u32,
        );
        sys::nftnl_set_set_u64(p, sys::NFTNL_SET_TIMEOUT as u16, u64::from(timeout) * 1000);
    }
    batch.add(&Msg(Op::NewSet, &set), MsgType::Add);
    for chain in affinity_chains(f, timeout)? {
        add_chain(batch, table, &chain)?;
    }
    Ok(())
}

/// Removes an affinity class: its chains, then its map.
pub(super) fn delete_affinity_class(
    batch: &mut Batch,
    table: &Table,
    config: &TableConfig,
    timeout: u32,
) -> Result<(), NftError> {
    for name in [affinity_name(timeout), affinity_record_name(timeout)] {
        batch.add(&Chain::new(&cstring(&name)?, table), MsgType::Del);
    }
    delete_set(batch, config, &affinity_name(timeout))
}

/// One element of set messages: key, data (maps), jump target (verdict maps).
type ElementBytes = (Vec<u8>, Option<Vec<u8>>, Option<std::ffi::CString>);

/// NEWSETELEM/DELSETELEM messages of set `set` carrying `elements`, ELEMENTS_PER_MESSAGE apiece.
pub(super) fn add_elements(
    batch: &mut Batch,
    config: &TableConfig,
    set: &str,
    msg_type: MsgType,
    elements: impl IntoIterator<Item = Result<ElementBytes, NftError>>,
) -> Result<(), NftError> {
    let mut elements = elements.into_iter().peekable();
    while elements.peek().is_some() {
        let mut msg = SetMsg::named(&config.table_name, set, config.family)?;
        for e in elements.by_ref().take(ELEMENTS_PER_MESSAGE) {
            let (k, d, goto) = e?;
            msg.add_element(&k, d.as_deref(), goto.as_deref())?;
        }
        batch.add(&Msg(Op::Elements, &msg), msg_type);
    }
    Ok(())
}

/// The messages of an element change set: deletions first, set by set, then additions.
pub(super) fn add_element_changes(
    batch: &mut Batch,
    config: &TableConfig,
    changes: &ChangeSet,
) -> Result<(), NftError> {
    for (elements, msg_type) in [(&changes.delete, MsgType::Del), (&changes.add, MsgType::Add)] {
        for spec in &SETS {
            let mine = elements.iter().filter(|e| e.set_name() == spec.name);
            add_elements(
                batch,
                config,
                spec.name,
                msg_type,
                mine.map(|e| element_message(e, msg_type)),
            )?;
        }
    }
    Ok(())
}

/// What an element's message carries: a delete names the key only (the value would be dead
/// weight in the batch); verdict-map values matter only when adding.
fn element_message(e: &Element, msg_type: MsgType) -> Result<ElementBytes, NftError> {
    let (k, d) = element_bytes(e);
    if matches!(msg_type, MsgType::Del) {
        return Ok((k, None, None));
    }
    let goto = match e {
        Element::AffinityService { timeout, .. } => Some(cstring(&affinity_name(*timeout))?),
        Element::AffinityRecord { timeout, .. } => Some(cstring(&affinity_record_name(*timeout))?),
        _ => None,
    };
    Ok((k, d, goto))
}

/// A NEWTABLE carrying the layout tag (checked by the read-back before adopting a table).
pub(super) fn new_table(batch: &mut Batch, config: &TableConfig) -> Result<(), NftError> {
    batch.add(&Msg(Op::NewTable, &TableMsg::new(config)?), MsgType::Add);
    Ok(())
}
