//! Config errors that name their place: `file:line:col: message`.
//!
//! Owns turning a byte span in the TOML text into a 1-based line and column
//! (columns count characters, as editors do). Does not decide what is wrong.

use std::{fmt, ops::Range, path::PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub path: PathBuf,
    /// 1-based line, 0 when the problem has no place in the text (unreadable file).
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at a byte span of `text`; a missing span points at the file's start.
    pub fn at(
        path: &std::path::Path,
        text: &str,
        span: Option<Range<usize>>,
        message: String,
    ) -> Self {
        let (line, column) = span.map_or((1, 1), |span| line_col(text, span.start));
        ConfigError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// An error about the file as a whole (it cannot be read).
    pub fn whole_file(path: &std::path::Path, message: String) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every problem found in one file; reported together so one run fixes them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 1000), (3, 1));
    }
}
