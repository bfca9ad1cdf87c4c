//! Files that appear whole or not at all: written beside their destination, then renamed.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `contents` to a temporary sibling of `path`, syncs it, and renames it over `path`.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let staging = staging_path(path)?;
    let mut file = fs::File::create(&staging).map_err(Error::io(&staging))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(&staging))?;
    fs::rename(&staging, path).map_err(Error::io(path))
}

/// A temporary sibling of `path` for staging it (`.NAME.partial-PID`), in a parent folder that
/// exists: write there, then rename onto `path`.
pub fn staging_path(path: &Path) -> Result<std::path::PathBuf> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("staged");
    Ok(parent.join(format!(".{name}.partial-{}", std::process::id())))
}
