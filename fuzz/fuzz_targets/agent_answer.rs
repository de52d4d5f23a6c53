//! What an agent (or anything answering on its port) sends back: every agent answer parser
//! on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironboot::agent::client::fuzz_parse_answer(data);
});
