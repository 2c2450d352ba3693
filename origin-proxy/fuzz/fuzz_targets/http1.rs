//! The HTTP/1 fast path's parsers on any bytes: request heads, response heads and chunked
//! bodies never panic and agree with themselves (`origin_proxy::fast::fuzzing::http1`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    origin_proxy::fast::fuzzing::http1(data);
});
