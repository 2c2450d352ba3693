//! Errors at the load boundary: every one names the file, line and column and the directive.

/// Where in a rule file something was found (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file name as handed to the loader.
    pub file: String,
    /// 1-based line of the directive (its first line when continued with `\`).
    pub line: usize,
    /// 1-based column of the offending token on that line.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A directive that could not be parsed.
    #[error("{location}: {directive}: {message}")]
    Parse {
        /// Where.
        location: Location,
        /// The directive name, e.g. `SecRule`.
        directive: String,
        /// What is wrong, with the offending text.
        message: String,
    },
    /// A directive referred to a data file that was not supplied.
    #[error("{location}: {directive}: data file `{name}` not found")]
    MissingDataFile {
        /// Where.
        location: Location,
        /// The directive name.
        directive: String,
        /// The data file name.
        name: String,
    },
    /// Reading rule files from disk failed (only from [`crate::crs::load_dir`]).
    #[error("{path}: {message}")]
    Io {
        /// The path that failed.
        path: String,
        /// The I/O error text.
        message: String,
    },
}
