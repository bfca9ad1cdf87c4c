//! Every failure a user can cause or meet, each with a message that says what to do.

use std::path::PathBuf;

use crate::backend::OptimizerKind;

/// whorl's error type: each variant names the file, flag or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{flag}: {reason}")]
    InvalidArgument { flag: &'static str, reason: String },

    #[error("{path}: no images found (looked for .tif, .tiff, .bmp, .png, .jpg, .jpeg, .pgm)")]
    EmptyDataDir { path: PathBuf },

    /// An image that cannot be used. `in_folder`: it was found in a folder of images, which
    /// every command that reads one can pass over with --skip-bad.
    #[error(
        "{path}: unreadable image: {reason}{}",
        if *in_folder { " (pass --skip-bad to skip unreadable files)" } else { "" }
    )]
    BadImage {
        path: PathBuf,
        reason: String,
        in_folder: bool,
    },

    #[error(
        "{path}: {found} usable images, but a validation split of {val_split} needs at least {needed}"
    )]
    TooFewImages {
        path: PathBuf,
        found: usize,
        needed: usize,
        val_split: f64,
    },

    #[error("{path}: not a readable whorl checkpoint: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },

    #[error("{path}, line {line}: not a readable training history: {reason}")]
    BadHistory {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "{path}: checkpoint is for architecture \"{found}\", but this whorl builds \"{expected}\""
    )]
    ArchitectureMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error(
        "{path}: run folder in use by another whorl train (PID {pid}); wait for it to finish or pick another --out"
    )]
    RunFolderBusy { path: PathBuf, pid: String },

    #[error("{path}: {reason}")]
    RunFolderTaken { path: PathBuf, reason: String },

    #[error("{what}; {last_good}")]
    NonFinite { what: String, last_good: String },

    #[error(
        "{path}: this checkpoint was trained with --optimizer {saved}, so it cannot resume with --optimizer {given} (leave --optimizer out, or start a new run)"
    )]
    OptimizerMismatch {
        path: PathBuf,
        given: OptimizerKind,
        saved: OptimizerKind,
    },

    #[error("backend {backend}: {reason}")]
    Backend { backend: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// The process exit status for this error: 2 for a bad command-line flag (as clap reports
    /// its own usage errors), 1 for everything else.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::InvalidArgument { flag, .. } if flag.starts_with("--") => 2,
            _ => 1,
        }
    }

    pub fn invalid(flag: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            flag,
            reason: reason.into(),
        }
    }
}
