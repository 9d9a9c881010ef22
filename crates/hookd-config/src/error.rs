//! Configuration errors that say what is wrong and where.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a problem is: a file, and a position in it when known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: Option<PathBuf>,
    /// 1-based line and column.
    pub line_col: Option<(usize, usize)>,
}

impl Location {
    pub fn file(path: &Path) -> Self {
        Self {
            file: Some(path.to_owned()),
            line_col: None,
        }
    }

    /// The location of byte range `span` of `text`.
    pub fn span(path: Option<&Path>, text: &str, span: Range<usize>) -> Self {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self {
            file: path.map(Path::to_owned),
            line_col: Some((line, column)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line_col) {
            (Some(file), Some((l, c))) => write!(f, "{}:{l}:{c}", file.display()),
            (Some(file), None) => write!(f, "{}", file.display()),
            (None, Some((l, c))) => write!(f, "line {l}, column {c}"),
            (None, None) => f.write_str("config"),
        }
    }
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub location: Location,
    /// The dotted key the problem is about (`server.listen`), empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(location: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.key, self.message)
        }
    }
}

/// Every problem found in one configuration, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> Self {
        Self(vec![error])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}
