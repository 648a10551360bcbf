//! Any bytes a client may send on the control socket: the parser answers
//! with a request or an error, never panics, and a request it accepts
//! encodes back to one it accepts the same way.

#![no_main]

use handoff::control::protocol::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server refuses non-UTF-8 before parsing; the parser sees text.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = parse_request(line) {
        let again = serde_json::to_string(&request).expect("a parsed request encodes");
        assert_eq!(parse_request(&again).ok(), Some(request));
    }
});
