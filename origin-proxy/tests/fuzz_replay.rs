//! The `http1` fuzz target's checks (`origin_proxy::fast::fuzzing`, run by `origin-proxy/fuzz`)
//! on a stable toolchain, over every input kept under `fuzz/regressions/http1/`.

#[test]
fn inputs_the_fuzzer_kept_pass_the_fast_path_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/http1");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("regressions folder") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("input");
        origin_proxy::fast::fuzzing::http1(&data);
        n += 1;
    }
    assert!(n >= 3, "expected the seeds in {}", dir.display());
}
