#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tsm_fuzz::cert_chain::run(data));
