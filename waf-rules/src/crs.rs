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

/// Loads CRS from `dir` (see [`read_dir`] for the order).
pub fn load_dir(dir: &Path, config: &WafConfig) -> Result<RuleSet, LoadError> {
    let (files, data) = read_dir(dir)?;
    RuleSet::from_sources(&files, &data, config)
}
