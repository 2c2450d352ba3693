//! `origin-proxy --check` on good and bad configs: exit status and the message naming the problem.

use std::process::Command;

use anyhow::{ensure, Result};
use e2e_tests::{bin, root, scratch_dir};

fn check(config: &std::path::Path) -> Result<(bool, String)> {
    let out = Command::new(bin("origin-proxy")?)
        .arg("--check")
        .arg("--config")
        .arg(config)
        .env("EDGE_SIGNING_KEY", "an-edge-signing-key-for-tests")
        .env(
            "ROOM_SIGNING_KEY",
            "a-room-signing-key-for-tests-0123456789",
        )
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn the_example_configs_pass_check() -> Result<()> {
    for entry in std::fs::read_dir(root().join("origin-proxy/examples"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (ok, err) = check(&path)?;
            ensure!(ok, "{} fails --check: {err}", path.display());
        }
    }
    Ok(())
}

#[test]
fn bad_configs_fail_check_naming_the_problem() -> Result<()> {
    let dir = scratch_dir("config_check")?;
    let good = std::fs::read_to_string(root().join("origin-proxy/examples/dev.toml"))?;
    let cases = [
        (
            "unknown_key",
            good.replace("retries = 2", "retries = 2\nretry-budget = 5"),
            "retry-budget",
        ),
        (
            "bad_address",
            good.replace("127.0.0.1:9002", "127.0.0.1:not-a-port"),
            "socket address",
        ),
        (
            "bad_listen",
            good.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\""),
            "listen",
        ),
        (
            "unknown_pool",
            good.replace("pool = \"shop\"", "pool = \"shops\""),
            "routes[0].pool",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        let (ok, err) = check(&path)?;
        ensure!(!ok, "{name}: --check accepted a bad config");
        ensure!(
            err.contains(expected),
            "{name}: message does not name {expected:?}: {err}"
        );
        ensure!(
            err.contains(&format!("{name}.toml")),
            "{name}: message does not name the file: {err}"
        );
    }
    Ok(())
}
