#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tsm_fuzz::spdm::run(data));
