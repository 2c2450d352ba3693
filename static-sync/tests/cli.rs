//! The `static-sync` binary end to end against a directory-backed store (no wrangler needed):
//! check → build → plan → push → schedule → status → rollback, with `--json` where CI reads it.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], store: &Path, now_ms: u64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_static-sync"))
        .args(args)
        .env("STATIC_SYNC_STORE_DIR", store)
        .env("STATIC_SYNC_NOW_MS", now_ms.to_string())
        .output()
        .expect("run static-sync")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn site(dir: &Path, headline: &str) {
    write(dir, "index.html", &format!("<!doctype html>\n<title>Sale</title>\n<link rel=stylesheet href=\"assets/s.css\">\n<h1>{headline}</h1>\n<a href=\"p/one.html\">one</a>\n"));
    write(dir, "p/one.html", "<!doctype html>\n<title>One</title>\n<link rel=stylesheet href=\"../assets/s.css\">\n<img src=\"/assets/logo.svg\" alt=\"\">\n");
    write(dir, "assets/s.css", "body{background:url(logo.svg)}");
    write(
        dir,
        "assets/logo.svg",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
}

#[test]
fn check_names_file_and_line_of_a_broken_link() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("site");
    site(&s, "v1");
    write(
        &s,
        "p/two.html",
        "<!doctype html>\n<title>Two</title>\n\n<img src=\"../assets/missing.png\" alt=\"\">\n",
    );
    let out = run(&["check", s.to_str().unwrap()], tmp.path(), 0);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("p/two.html:4: error[broken-link]: src `../assets/missing.png`"),
        "{text}"
    );
    let j = json(&run(
        &["--json", "check", s.to_str().unwrap()],
        tmp.path(),
        0,
    ));
    assert_eq!(j["ok"], false);
    assert_eq!(j["problems"][0]["file"], "p/two.html");
    assert_eq!(j["problems"][0]["line"], 4);
    // build refuses a site that fails check.
    let b = run(
        &[
            "build",
            s.to_str().unwrap(),
            "--out",
            tmp.path().join("dist").to_str().unwrap(),
        ],
        tmp.path(),
        0,
    );
    assert_eq!(b.status.code(), Some(1));
}

#[test]
fn push_schedule_and_rollback_through_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let kv = tmp.path().join("kv");
    let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
    let (d1, d2) = (tmp.path().join("d1"), tmp.path().join("d2"));
    site(&s1, "v1");
    site(&s2, "v2");
    let b1 = json(&run(
        &[
            "--json",
            "build",
            s1.to_str().unwrap(),
            "--out",
            d1.to_str().unwrap(),
        ],
        &kv,
        0,
    ));
    let b2 = json(&run(
        &[
            "--json",
            "build",
            s2.to_str().unwrap(),
            "--out",
            d2.to_str().unwrap(),
        ],
        &kv,
        0,
    ));
    let (v1, v2) = (
        b1["version"].as_str().unwrap().to_owned(),
        b2["version"].as_str().unwrap().to_owned(),
    );
    assert_ne!(v1, v2);
    assert!(d1.join("_headers").is_file() && d1.join("manifest.json").is_file());

    // Scheduling a version that was never pushed is refused.
    let refused = run(&["schedule", "--version", &v1, "--at", "+10s"], &kv, 1_000);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("push it first"));

    let p1 = json(&run(
        &["--json", "push", d1.to_str().unwrap(), "--activate"],
        &kv,
        1_000,
    ));
    assert_eq!(p1["push"]["uploaded_blobs"], 4);
    assert_eq!(p1["release"]["current"], v1.as_str());

    let plan = json(&run(
        &[
            "--json",
            "plan",
            "--manifest",
            d2.join("manifest.json").to_str().unwrap(),
        ],
        &kv,
        2_000,
    ));
    assert_eq!(plan["plan"]["against"], v1.as_str());
    assert_eq!(plan["plan"]["changed"][0]["path"], "/index.html");
    assert_eq!(plan["plan"]["uploads"].as_array().unwrap().len(), 1);

    let p2 = json(&run(&["--json", "push", d2.to_str().unwrap()], &kv, 3_000));
    assert_eq!(p2["push"]["uploaded_blobs"], 1);
    assert_eq!(p2["release"], serde_json::Value::Null);

    let sch = json(&run(
        &["--json", "schedule", "--version", &v2, "--at", "@10000"],
        &kv,
        4_000,
    ));
    assert_eq!(sch["release"]["next"]["at"], 10_000);
    assert_eq!(sch["live"], v1.as_str());
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kv.join("release")).unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"current": v1, "previous": null, "next": {"version": v2, "at": 10000}})
    );
    assert_eq!(
        json(&run(&["--json", "status"], &kv, 9_999))["live"],
        v1.as_str()
    );
    assert_eq!(
        json(&run(&["--json", "status"], &kv, 10_000))["live"],
        v2.as_str()
    );

    let rb = json(&run(&["--json", "rollback"], &kv, 11_000));
    assert_eq!(
        rb["release"],
        serde_json::json!({"current": v1, "previous": null, "next": null})
    );
    let again = run(&["rollback"], &kv, 12_000);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no previous version"));
}
