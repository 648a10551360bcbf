//! Any config file: parsing, validation and the resolved stage either give a
//! config or errors that each name a line and column of the text; never a
//! panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `load` reads the file as UTF-8 and refuses anything else before
    // parsing; the parser sees text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = handoff::config::parse(Path::new("fuzz.toml"), text) {
        assert!(!errors.0.is_empty(), "refused without a reason");
        let lines = text.lines().count().max(1);
        for error in &errors.0 {
            assert!(
                error.line >= 1 && error.line <= lines + 1 && error.column >= 1,
                "an error without its place in the text: {error}"
            );
        }
    }
});
