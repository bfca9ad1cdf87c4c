//! A run folder belongs to one training run: an advisory lock held while training, and a
//! refusal to mix a new run's checkpoints with those already there.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::checkpoint::{self, CheckpointMeta};
use crate::error::{Error, Result};

/// The file in a run folder whose lock marks it as in use (it holds the user's PID).
pub const LOCK_FILE: &str = ".lock";

/// A claimed run folder; the lock is released when this is dropped or the process ends.
pub struct RunFolder {
    _lock: fs::File,
}

/// The checkpoint a run continues: its folder and its metadata.
pub struct Continued<'a> {
    pub dir: &'a Path,
    pub meta: &'a CheckpointMeta,
}

impl RunFolder {
    /// Locks `run` (creating it) for this process, removes staging files of dead processes,
    /// and checks that it holds no checkpoints except those `continued` descends from; with
    /// `overwrite` the others are deleted instead.
    pub fn claim(run: &Path, continued: Option<Continued>, overwrite: bool) -> Result<RunFolder> {
        fs::create_dir_all(run).map_err(Error::io(run))?;
        let lock = lock(run)?;
        atomic::remove_stale_staging(run)?;
        atomic::remove_stale_staging(&run.join("checkpoints"))?;
        let foreign = foreign_checkpoints(run, continued.as_ref());
        if let Some(newest) = foreign.iter().max() {
            if !overwrite {
                let name = newest.file_name().unwrap_or_default().to_string_lossy();
                let reason = match continued {
                    None => format!(
                        "already holds checkpoints (newest: {name}); continue that run with \
                         --resume, or pass --overwrite to replace them"
                    ),
                    Some(c) => format!(
                        "holds checkpoints that do not lead to {} (newest: {name}); resume from \
                         the run folder to continue its newest, or pass --overwrite to delete them",
                        c.dir.display()
                    ),
                };
                return Err(Error::RunFolderTaken {
                    path: run.to_path_buf(),
                    reason,
                });
            }
            for dir in &foreign {
                fs::remove_dir_all(dir).map_err(Error::io(dir))?;
            }
        }
        Ok(RunFolder { _lock: lock })
    }
}

/// Takes the advisory lock of `run`, or names the process holding it.
fn lock(run: &Path) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = run.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::io(&path))?;
    // SAFETY: flock on a descriptor this function owns; it only changes the lock state.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if matches!(error.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP)) {
            eprintln!(
                "warning: {}: this file system cannot lock files; make sure no other run uses it",
                run.display()
            );
            return Ok(file);
        }
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io(&path)(error));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(Error::RunFolderBusy {
            path: run.to_path_buf(),
            pid: match holder.trim() {
                "" => "unknown".into(),
                pid => pid.to_string(),
            },
        });
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(Error::io(&path))?;
    Ok(file)
}

/// Checkpoint folders of `run` that are not `continued` or one of its predecessors in the same
/// run folder (those a resumed run would overwrite or leave behind, mixed with its own).
fn foreign_checkpoints(run: &Path, continued: Option<&Continued>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let same_run =
        |c: &&Continued| checkpoint::run_dir_of(c.dir).is_some_and(|dir| same_folder(&dir, run));
    let lineage = continued
        .filter(same_run)
        .map(|c| (c.meta.epoch, c.meta.step_in_epoch));
    let readable: std::collections::HashMap<PathBuf, (usize, usize)> =
        checkpoint::checkpoints_in(run)
            .into_iter()
            .map(|(at, dir)| (dir, at))
            .collect();
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|dir| {
            !dir.file_name()
                .unwrap_or_default()
                .as_encoded_bytes()
                .starts_with(b".")
        })
        .filter(|dir| match (lineage, readable.get(dir)) {
            (Some(until), Some(at)) => *at > until,
            _ => true,
        })
        .collect()
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
