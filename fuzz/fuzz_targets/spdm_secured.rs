#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tsm_fuzz::spdm_secured::run(data));
