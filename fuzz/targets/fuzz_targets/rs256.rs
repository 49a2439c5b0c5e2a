#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gitgazer_ws_fuzz::rs256(data);
});
