//! A run's history.csv (one row per completed epoch: losses and seconds) and the loss curve
//! drawn from it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::error::{Error, Result};

pub const HISTORY_FILE: &str = "history.csv";
pub const LOSS_PLOT: &str = "loss.png";
const HISTORY_HEADER: &str = "epoch,train_loss,val_loss,seconds";

/// One completed epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub seconds: f64,
}

impl EpochRow {
    fn to_csv(self) -> String {
        format!(
            "{},{:.8},{},{:.3}",
            self.epoch,
            self.train_loss,
            self.val_loss.map_or(String::new(), |v| format!("{v:.8}")),
            self.seconds
        )
    }
}

/// The history.csv of a run being trained: the rows kept so far, rewritten whole (atomically)
/// after every epoch.
pub struct History {
    path: PathBuf,
    rows: Vec<String>,
}

impl History {
    /// Opens `run`'s history keeping only the rows up to and including `epoch` (those a
    /// resumed run continues from), and writes it back so later rows of an abandoned run vanish.
    pub fn continue_at(run: &Path, epoch: usize) -> Result<History> {
        let path = run.join(HISTORY_FILE);
        let rows = match fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .skip(1)
                .filter(|line| {
                    let first = line.split(',').next().and_then(|e| e.parse::<usize>().ok());
                    first.is_some_and(|e| e <= epoch)
                })
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        };
        let history = History { path, rows };
        history.write()?;
        Ok(history)
    }

    /// Appends one epoch and rewrites the file.
    pub fn push(&mut self, row: EpochRow) -> Result<()> {
        self.rows.push(row.to_csv());
        self.write()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self) -> Result<()> {
        let mut text = format!("{HISTORY_HEADER}\n");
        for row in &self.rows {
            text += row;
            text.push('\n');
        }
        atomic::write_file(&self.path, text.as_bytes())
    }
}

/// (epoch, training loss, validation loss) of every row of a run's history.csv.
pub fn read_history(run: &Path) -> Result<Vec<(usize, f64, Option<f64>)>> {
    let path = run.join(HISTORY_FILE);
    let text = fs::read_to_string(&path).map_err(Error::io(&path))?;
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(number, line)| {
            let fields: Vec<&str> = line.split(',').collect();
            let parsed = (|| {
                let epoch = fields.first()?.parse().ok()?;
                let train = fields.get(1)?.parse().ok()?;
                let val = fields.get(2).and_then(|v| v.parse().ok());
                Some((epoch, train, val))
            })();
            parsed.ok_or_else(|| Error::BadHistory {
                path: path.clone(),
                line: number + 1,
                reason: format!("\"{line}\" is not {HISTORY_HEADER}"),
            })
        })
        .collect()
}

/// Draws a run's loss.png (training and validation loss per epoch) from its history.csv.
pub fn plot_history(run: &Path, log_scale: bool) -> Result<PathBuf> {
    let path = run.join(LOSS_PLOT);
    crate::figures::loss_curve(&read_history(run)?, log_scale, &path)?;
    Ok(path)
}
