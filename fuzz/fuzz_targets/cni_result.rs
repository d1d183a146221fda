//! The CNI result parser (what a plugin prints, and what the result cache
//! holds across restarts): no JSON panics it, and the pod IPs it reports
//! are among the result's addresses.
#![no_main]

use cni::CniResult;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(raw) = serde_json::from_slice(input) else {
        return;
    };
    let Ok(result) = CniResult::parse(raw) else {
        return;
    };
    for ip in result.pod_ips() {
        assert!(
            result.ips.iter().any(|config| config.ip == ip),
            "pod IP {ip} is none of the result's addresses: {result:?}"
        );
    }
});
