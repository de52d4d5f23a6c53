//! Kernel parameters as a node may give them: whatever parses renders to a command line
//! that is bounded, has no control character or quote that would end a config line, and
//! parses back to the same parameters.
#![no_main]

use ironboot::boot::render::{KernelParams, validate_location};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = validate_location("fuzz", text);
    let default = KernelParams::parse("default", "nofb nomodeset vga=normal").unwrap();
    for parsed in [
        KernelParams::parse("fuzz", text),
        KernelParams::parse_with_default("fuzz", text, &default),
    ] {
        let Ok(params) = parsed else { continue };
        let line = params.to_cmdline();
        assert!(line.len() <= 2048, "command line of {} bytes", line.len());
        assert!(
            !line.chars().any(char::is_control),
            "control character in {line:?}"
        );
        let again = KernelParams::parse("again", &line).expect("a rendered line parses");
        assert_eq!(again, params, "{line:?} does not parse back");
    }
});
