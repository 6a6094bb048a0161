//! Source files and positions.
//!
//! Every node of the configuration tree remembers where it came from as a compact [`Origin`]
//! (file id + byte offset). Line and column are computed only when a message is printed, so the
//! parser's hot path never counts lines.

use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// Where a node was written: a file and a byte offset into its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: FileId,
    pub offset: u32,
}

/// A resolved origin, ready to print as `FILE:LINE:COL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location<'a> {
    pub path: &'a Path,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes) so the caret lines up.
    pub column: usize,
    /// The text of the line, without its line ending.
    pub line_text: &'a str,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

struct SourceFile {
    path: PathBuf,
    text: String,
    /// Byte offsets of line starts, computed on first use.
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

/// All files read for one configuration load.
#[derive(Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 2^32 files"));
        self.files.push(SourceFile {
            path,
            text,
            line_starts: std::sync::OnceLock::new(),
        });
        id
    }

    pub fn text(&self, id: FileId) -> &str {
        &self.files[id.0 as usize].text
    }

    pub fn path(&self, id: FileId) -> &Path {
        &self.files[id.0 as usize].path
    }

    /// Directory of the file, used to resolve relative paths written in it.
    pub fn dir(&self, id: FileId) -> &Path {
        self.path(id).parent().unwrap_or(Path::new(""))
    }

    pub fn locate(&self, origin: Origin) -> Location<'_> {
        let file = &self.files[origin.file.0 as usize];
        let starts = file.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(file.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = (origin.offset as usize).min(file.text.len());
        let line_idx = starts.partition_point(|&s| s <= offset) - 1;
        let start = starts[line_idx];
        let end = file.text[start..]
            .find('\n')
            .map_or(file.text.len(), |n| start + n);
        let line_text = file.text[start..end].trim_end_matches('\r');
        let column = file.text[start..offset].chars().count() + 1;
        Location {
            path: &file.path,
            line: line_idx + 1,
            column,
            line_text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_columns_in_characters() {
        let mut map = SourceMap::new();
        let id = map.add("a.conf".into(), "x = 1\r\né = \"b\"\n\nlast".into());
        let loc = map.locate(Origin {
            file: id,
            offset: 12,
        });
        assert_eq!((loc.line, loc.column, loc.line_text), (2, 5, "é = \"b\""));
        let end = map.locate(Origin {
            file: id,
            offset: 22,
        });
        assert_eq!((end.line, end.column), (4, 5));
        assert_eq!(end.to_string(), "a.conf:4:5");
    }
}
