//! Errors of the library's boundaries: reading a site, building it, talking to the store.

use std::path::PathBuf;

/// Reading or writing a site directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    /// The site path is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Walking the directory failed.
    #[error("cannot list {path}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Write {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output directory holds something that is not a previous build.
    #[error("{0} is not empty and holds no manifest.json from a previous build: refusing to overwrite it")]
    OutputNotABuild(PathBuf),
}

/// Building a site.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Stylesheets import each other in a cycle, so no content hash can name them.
    #[error("stylesheets reference each other in a cycle: {0}")]
    CssCycle(String),
    /// A stylesheet is not UTF-8.
    #[error("{0}: stylesheet is not valid UTF-8")]
    NotUtf8(String),
}

/// Talking to the KV store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The wrangler process could not be started.
    #[error("cannot run `{program}` (set STATIC_SYNC_WRANGLER or --wrangler to wrangler's path)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Wrangler did not finish in time and was killed.
    #[error("`wrangler {args}` did not finish within {seconds} s (raise --wrangler-timeout)")]
    Timeout {
        /// The arguments.
        args: String,
        /// The limit.
        seconds: u64,
    },
    /// Wrangler ran and failed.
    #[error("`wrangler {args}` failed ({status}): {stderr}")]
    Wrangler {
        /// The arguments.
        args: String,
        /// Exit status.
        status: String,
        /// The end of its error output.
        stderr: String,
    },
    /// Wrangler's output was not what this version of static-sync understands.
    #[error("unexpected output from `wrangler {args}`: {detail}")]
    Output {
        /// The arguments.
        args: String,
        /// What was wrong.
        detail: String,
    },
    /// A temporary file for wrangler could not be written.
    #[error("cannot write a temporary file for wrangler")]
    TempFile(#[source] std::io::Error),
    /// A stored value is not valid JSON of the expected shape.
    #[error("KV key `{key}` does not hold a valid value")]
    BadValue {
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
}
