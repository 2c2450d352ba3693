//! The `waf-custom` binary: `test` prints one line per case and `N passed, N failed`, `check`
//! validates; exit codes say whether all is well.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waf-custom"))
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/shop-rules.toml")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waf-custom-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn test_command_runs_the_example() {
    let out = bin().arg("test").arg(example()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 20,
        "{stdout}"
    );
}

#[test]
fn test_command_fails_on_a_failing_case() {
    let f = temp_file(
        "failing.toml",
        "[[rule]]\nid = \"r\"\nexpression = 'http.host eq \"a\"'\naction = \"block\"\n\n[[rule.test]]\nname = \"n\"\nheaders = { Host = \"b\" }\nexpect = \"block\"\n",
    );
    let out = bin().arg("test").arg(&f).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL "), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn check_command_reports_file_line_column() {
    let out = bin().arg("check").arg(example()).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));

    let f = temp_file(
        "bad.toml",
        "[[rule]]\nid = \"r\"\nexpression = 'http.host eq'\naction = \"block\"\n",
    );
    let out = bin().arg("check").arg(&f).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("bad.toml:3:27: in the expression of rule `r`: expected a literal"),
        "{stdout}"
    );

    let out = bin()
        .arg("check")
        .arg("/nonexistent/rules.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read rules file"));

    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn engine_types_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<waf_rules::CustomRules>();
    assert_send_sync::<waf_rules::RateLimiter>();
}
