//! Files that appear whole or not at all: written beside their destination, then renamed.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `contents` to a temporary sibling of `path`, syncs it, and renames it over `path`.
/// On failure the sibling is removed and the error names `path`.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    let staging = staging_path(path)?;
    let written = fs::File::create(&staging)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&staging, path));
    if written.is_err() {
        let _ = fs::remove_file(&staging);
    }
    written.map_err(Error::io(path))
}

/// Checks up front that [`write_file`] can write `path` (its folder made, a file created there
/// and removed), so a long command fails before its work, not after it.
pub fn check_writable(path: &Path) -> Result<()> {
    let staging = staging_path(path)?;
    fs::File::create(&staging)
        .and_then(|_| fs::remove_file(&staging))
        .map_err(Error::io(path))
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

/// Cleans `folder` (if it exists) of what interrupted writers left: `.NAME.partial-PID` files
/// and folders of processes no longer running are removed, and a `.NAME.retired` folder (the
/// old copy a checkpoint save moves aside) is put back when NAME is missing, else removed.
/// Only call it on a folder no other live writer is replacing things in.
pub fn remove_stale_staging(folder: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hidden) = name.strip_prefix('.') else {
            continue;
        };
        let path = entry.path();
        if let Some((_, pid)) = hidden.rsplit_once(".partial-") {
            if pid.parse().is_ok_and(|pid| !process_is_running(pid)) {
                remove(&path)?;
            }
        } else if let Some(original) = hidden.strip_suffix(".retired") {
            let original = folder.join(original);
            if original.exists() {
                remove(&path)?;
            } else {
                fs::rename(&path, &original).map_err(Error::io(&original))?;
            }
        }
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    let removed = match path.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    };
    removed.map_err(Error::io(path))
}

fn process_is_running(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_names_its_destination_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder that is not empty cannot be replaced by a file.
        let path = dir.path().join("taken");
        fs::create_dir_all(path.join("inside")).unwrap();
        let error = write_file(&path, b"contents").unwrap_err();
        assert!(
            matches!(&error, Error::Io { path: p, .. } if *p == path),
            "{error}"
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "staging left behind: {left:?}");

        let written = dir.path().join("written");
        write_file(&written, b"contents").unwrap();
        assert_eq!(fs::read(&written).unwrap(), b"contents");
        check_writable(&dir.path().join("sub/next")).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);
    }
}
