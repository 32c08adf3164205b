//! Ctrl-C (SIGINT) and SIGTERM as a future, so that commands can stop
//! cleanly: flush what they wrote and print their summary.
//!
//! The handlers are installed by [`Interrupt::install`], before a command
//! announces that it is ready, so a signal sent right after that is never
//! lost to the default action.

/// Installed SIGINT/SIGTERM handlers.
pub struct Interrupt {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupt {
    /// Installs the handlers (must run inside the tokio runtime). If they
    /// cannot be installed, [`wait`](Self::wait) never resolves and the
    /// default signal action applies.
    pub fn install() -> Interrupt {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Interrupt { signals }
        }
        #[cfg(not(unix))]
        Interrupt {}
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            let Some((int, term)) = &mut self.signals else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
