//! Loading an OWASP CRS directory from disk (a convenience for native hosts and the CLI; the
//! core never does I/O).

use crate::config::WafConfig;
use crate::engine::RuleSet;
use crate::error::LoadError;
use std::path::{Path, PathBuf};

fn read(p: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(p).map_err(|e| LoadError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Named texts: `(file name, contents)`.
pub type Sources = Vec<(String, String)>;

/// The files of a CRS directory in load order: `crs-setup.conf` (or `crs-setup.conf.example`),
/// then `rules/*.conf` sorted by name; and the `rules/*.data` files.
pub fn read_dir(dir: &Path) -> Result<(Sources, Sources), LoadError> {
    let mut files = Vec::new();
    let setup = [
        dir.join("crs-setup.conf"),
        dir.join("crs-setup.conf.example"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if let Some(p) = setup {
        files.push((p.display().to_string(), read(&p)?));
    }
    let rules = dir.join("rules");
    let listing = std::fs::read_dir(&rules).map_err(|e| LoadError::Io {
        path: rules.display().to_string(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut data = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".conf") {
            files.push((p.display().to_string(), read(&p)?));
        } else if name.ends_with(".data") {
            data.push((name, read(&p)?));
        }
    }
    Ok((files, data))
}

/// For a build script that embeds rule files for a lazy load (the edge worker, the wasm
/// probe): loads them eagerly at paranoia 4, so that every `@rx` pattern is analysed and built
/// (a pattern that cannot be built fails the build, naming its file), and returns the analyses
/// as the rows of a `&[RxHintRow]` ([`crate::prefilter::RxHints::write_rows`]).
pub fn rx_hint_rows(files: &[PathBuf], data: &[PathBuf]) -> Result<String, LoadError> {
    let texts = |ps: &[PathBuf]| -> Result<Sources, LoadError> {
        ps.iter()
            .map(|p| Ok((p.display().to_string(), read(p)?)))
            .collect()
    };
    let config = WafConfig {
        paranoia: 4,
        ..WafConfig::default()
    };
    let rs = RuleSet::from_sources(&texts(files)?, &texts(data)?, &config)?;
    let mut rows = String::new();
    rs.rx_hints().write_rows(&mut rows);
    Ok(rows)
}

/// Loads CRS from `dir` (see [`read_dir`] for the order).
pub fn load_dir(dir: &Path, config: &WafConfig) -> Result<RuleSet, LoadError> {
    let (files, data) = read_dir(dir)?;
    RuleSet::from_sources(&files, &data, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_rows_come_from_an_eager_load_and_a_bad_pattern_fails_it() {
        let dir = std::env::temp_dir().join(format!("waf-rules-hints-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.conf");
        std::fs::write(
            &good,
            "SecRule ARGS \"@rx (?i)union\\s+select\" \"id:1,phase:2,deny\"\n\
             SecRule ARGS \"@rx ^[0-9]+$\" \"id:2,phase:2,pass,tag:'paranoia-level/4'\"\n",
        )
        .expect("writes");
        let rows = rx_hint_rows(std::slice::from_ref(&good), &[]).expect("loads");
        assert_eq!(rows.lines().count(), 2, "{rows}");
        assert!(rows.contains("&[115, 101, 108, 101, 99, 116]"), "{rows}"); // `select`
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, "SecRule ARGS \"@rx a{2,1}\" \"id:3,phase:2,deny\"\n")
            .expect("writes");
        let err = rx_hint_rows(&[good, bad.clone()], &[]).expect_err("a bad pattern fails");
        assert!(err.to_string().contains("bad.conf"), "{err}");
        let missing = rx_hint_rows(&[dir.join("missing.conf")], &[]).expect_err("no file");
        assert!(missing.to_string().contains("missing.conf"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
