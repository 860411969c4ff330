#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tsm_fuzz::device_model::run(data));
