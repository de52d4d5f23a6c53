//! What a BMC (or anything answering in its place) sends back: every Redfish answer parser
//! on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironboot::bmc::redfish::fuzz_parse_answer(data);
});
