//! Any text ifconfig(8) might print: the CARP parsers read a state or a
//! counter, or refuse with an error that quotes the line; never a panic.

#![no_main]

use handoff::failover::carp::output::{demote_count, interface};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(carp) = interface(&text) {
        assert!(!carp.vhids.is_empty(), "an interface without vhids was accepted");
        let _ = carp.role();
    }
    let _ = demote_count("edge", &text);
});
