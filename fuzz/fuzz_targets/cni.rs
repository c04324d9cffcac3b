//! CNI input, both sides of the exec protocol: a plugin's invocation (`CNI_*` environment and the
//! network config on stdin) through `PluginArgs::parse` and `dispatch` into knode-bridge's config
//! validation and result building, and the runtime's side: a network config list (`.conflist`)
//! and a plugin's result (`prevResult`) as the kubelet decodes them.
//!
//! Input: `KEY=VALUE` environment lines, an empty line, then stdin (used for both sides).
#![no_main]

use cni::bridge::{BridgeConf, build_result, host_veth_name};
use cni::plugin::{Plugin, PluginArgs, dispatch};
use cni::{CniError, NetConf, NetConfList, PluginResult};
use libfuzzer_sys::fuzz_target;

/// knode-bridge up to the point where it would touch the host (IPAM store, netlink): config
/// validation, the host veth name and the result it reports.
struct Bridge;

impl Plugin for Bridge {
    fn add(&mut self, args: &PluginArgs, conf: &NetConf) -> Result<PluginResult, CniError> {
        let c = BridgeConf::from_conf(conf)?;
        let veth = host_veth_name(&args.container_id, &args.ifname);
        assert!(veth.len() <= 15, "host veth name {veth:?} longer than IFNAMSIZ-1");
        let ip = c.ipam.range_start;
        assert!(c.ipam.subnet.contains(ip) && c.ipam.subnet.contains(c.ipam.gateway));
        Ok(build_result(
            &c,
            conf,
            ip,
            ["aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb", "cc:cc:cc:cc:cc:cc"],
            &veth,
            &args.ifname,
            &args.netns,
        ))
    }
    fn del(&mut self, _args: &PluginArgs, conf: &NetConf) -> Result<(), CniError> {
        BridgeConf::from_conf(conf).map(drop)
    }
    fn check(&mut self, _args: &PluginArgs, conf: &NetConf) -> Result<(), CniError> {
        BridgeConf::from_conf(conf)?;
        if let Some(v) = &conf.prev_result {
            serde_json::from_value::<PluginResult>(v.clone())
                .map_err(|e| CniError::new(cni::ErrorCode::DecodingFailure, "prevResult", e.to_string()))?;
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (env_part, stdin) = match split {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let env_text = String::from_utf8_lossy(env_part);
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());

    // Plugin side: whatever happens, the answer is JSON a runtime can read, and the exit code
    // says whether it is an error object.
    let out = dispatch(&mut Bridge, PluginArgs::parse(lookup, stdin.to_vec()));
    let v: serde_json::Value = if out.stdout.is_empty() {
        assert_eq!(out.exit_code, 0, "an error must come with an error object");
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).expect("plugin output is JSON")
    };
    if out.exit_code != 0 {
        let e: CniError = serde_json::from_value(v).expect("an error object");
        assert_ne!(e.code, 0, "error code 0");
    }

    // Runtime side: a conflist and every plugin's config as sent to it, with a prevResult.
    let prev = serde_json::from_slice::<PluginResult>(stdin).ok();
    if let Ok(list) = NetConfList::from_bytes(stdin) {
        for i in 0..list.plugins.len() {
            let conf = list
                .plugin_conf(i, prev.as_ref())
                .expect("an existing plugin index");
            // What the runtime writes to the plugin's stdin decodes to the same config.
            let bytes = serde_json::to_vec(&conf).expect("encodes");
            let back: NetConf = serde_json::from_slice(&bytes).expect("decodes");
            assert_eq!(back, conf, "network config round trip");
        }
    }
    if let Ok(single) = serde_json::from_slice::<NetConf>(stdin) {
        let _ = NetConfList::from_single(single).plugin_conf(0, prev.as_ref());
    }
});
