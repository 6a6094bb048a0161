#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smtp_auth_proxy::fuzz_checks::session(data));
