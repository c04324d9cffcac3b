//! Kubernetes' protobuf wire format as kubectl sends it (`application/vnd.kubernetes.protobuf`):
//! the `k8s\0` envelope and the built-in kinds decoded into JSON.
//!
//! Input: the raw request body (seeds: kubectl's own bodies from the crate's test fixtures).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let envelope = knode_k8s_protobuf::decode_envelope(data);
    let decoded = knode_k8s_protobuf::decode(data);
    if let Ok(v) = &decoded {
        // Only a well-formed envelope of a supported kind decodes, and it says what it is.
        assert!(envelope.is_ok(), "decoded without a valid envelope");
        let api_version = v["apiVersion"]
            .as_str()
            .expect("decoded object has an apiVersion");
        let kind = v["kind"].as_str().expect("decoded object has a kind");
        assert!(knode_k8s_protobuf::is_supported(api_version, kind));
        // The JSON it yields is what the server then parses as a request body.
        let text = serde_json::to_vec(v).expect("encodes");
        let back: serde_json::Value = serde_json::from_slice(&text).expect("decodes");
        assert_eq!(&back, v);
    }
});
