//! Signals, which are process-wide by nature: SIGINT and SIGTERM ask the packet loops (replay
//! and live) to stop between packets, so that every output is flushed and fsynced and the
//! summary printed; SIGHUP asks the output files to reopen (logrotate).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM once [`install`] ran; the loops check it between packets.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        // logrotate moved the files away: reopen them (between lines, in the writers).
        crate::output::request_reopen();
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    // SAFETY: the handler only touches atomics, which is async-signal-safe; sigaction is given
    // a zeroed, fully initialised struct.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}
