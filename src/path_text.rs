//! Paths written into JSON: as text, with any bytes that are not UTF-8 replaced (U+FFFD), so a
//! folder with such a name is recorded as near as text allows instead of failing the write.

use std::path::Path;

/// Serializes a path as its lossy UTF-8 text (for `#[serde(serialize_with = ...)]`).
pub fn serialize_lossy<S: serde::Serializer>(
    path: &Path,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}
