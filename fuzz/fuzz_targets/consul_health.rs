//! Any answer a Consul agent (or something posing as one) might send: the
//! health answer parser gives instances or an error, and the error body
//! shown in logs and `status` is one line of at most 200 characters; never
//! a panic.

#![no_main]

use handoff::consul::{error_line, parse_health};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(instances) = parse_health(data) {
        for instance in &instances {
            let _ = instance.is_master();
        }
    }
    let line = error_line(data);
    assert!(line.chars().count() <= 200, "{} characters", line.chars().count());
    assert!(!line.chars().any(char::is_control), "a control character: {line:?}");
});
