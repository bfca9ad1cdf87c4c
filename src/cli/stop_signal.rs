//! Ctrl-C (SIGINT) and SIGTERM, what schedulers such as Slurm and Kubernetes send before they
//! kill a job, ask a training run to stop after its current step and save. A second Ctrl-C quits
//! at once; a repeated SIGTERM does not, because senders repeat it without meaning to (GNU
//! `timeout` signals the job and then its whole process group, so the job gets two), and a
//! scheduler that wants the job gone sends SIGKILL.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use whorl::{Error, Result};

/// Set by the first signal; the training loop polls it after every step.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);
/// The number of the first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

const FIRST: &[u8] =
    b"\ninterrupted: saving a checkpoint after this step (Ctrl-C again quits at once)\n";
const SECOND: &[u8] = b"\ninterrupted twice: quitting without saving\n";

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: atomics, write(2) and _exit(2).
    let again = STOP.swap(true, Ordering::SeqCst);
    if again && signal == libc::SIGTERM {
        return;
    }
    let message = if again { SECOND } else { FIRST };
    // SAFETY: writes a static buffer to stderr.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    if again {
        // SAFETY: ends the process without running anything else, as a second signal asks.
        unsafe { libc::_exit(128 + signal) };
    }
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`STOP`].
pub(crate) fn install() -> Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only touches atomics and async-signal-safe calls.
        let previous =
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            let reason = std::io::Error::last_os_error().to_string();
            return Err(Error::invalid("signal handler", reason));
        }
    }
    Ok(())
}

/// The exit status of a run stopped by a signal: 128 + its number (130 for Ctrl-C, 143 for
/// SIGTERM), as shells report it.
pub(crate) fn exit_status() -> u8 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 130,
        signal => (128 + signal) as u8,
    }
}
