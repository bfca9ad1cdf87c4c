//! Files that appear whole or not at all: written beside their destination, then renamed.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `contents` to a temporary sibling of `path`, syncs it, and renames it over `path`.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let staging = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let mut file = fs::File::create(&staging).map_err(Error::io(&staging))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(&staging))?;
    fs::rename(&staging, path).map_err(Error::io(path))
}
