//! The signals that cancel a run (SIGINT and SIGTERM; Ctrl-C where there are no Unix
//! signals), turned into [`SignalKind`] values that the dispatcher selects on.

use futures::future::BoxFuture;

use crate::event::SignalKind;

/// The run's signal handlers, or none ([`RunConfig::handle_signals`](crate::RunConfig::handle_signals) off).
pub(super) struct Signals(Source);

enum Source {
    /// Signals are not handled: none ever arrives.
    Off,
    /// SIGINT and SIGTERM.
    #[cfg(unix)]
    Unix {
        interrupt: tokio::signal::unix::Signal,
        terminate: tokio::signal::unix::Signal,
    },
    /// Ctrl-C, where there are no Unix signals. The wait is kept between calls, so a Ctrl-C
    /// that comes while the dispatcher is busy is not lost.
    #[cfg_attr(unix, allow(dead_code))]
    CtrlC(BoxFuture<'static, std::io::Result<()>>),
}

impl Signals {
    /// Installs the handlers when `enabled`. When they cannot be installed, says so and
    /// handles none.
    pub(super) fn new(enabled: bool) -> Self {
        Signals(if enabled { install() } else { Source::Off })
    }

    /// The next signal; never comes when signals are not handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that comes meanwhile is kept for the next call.
    pub(super) async fn recv(&mut self) -> SignalKind {
        loop {
            match &mut self.0 {
                Source::Off => std::future::pending::<()>().await,
                #[cfg(unix)]
                Source::Unix {
                    interrupt,
                    terminate,
                } => {
                    return tokio::select! {
                        _ = interrupt.recv() => SignalKind::Interrupt,
                        _ = terminate.recv() => SignalKind::Terminate,
                    };
                }
                Source::CtrlC(wait) => {
                    if wait.as_mut().await.is_ok() {
                        *wait = Box::pin(tokio::signal::ctrl_c());
                        return SignalKind::Interrupt;
                    }
                    self.0 = Source::Off;
                }
            }
        }
    }
}

#[cfg(unix)]
fn install() -> Source {
    use tokio::signal::unix::{SignalKind as Unix, signal};
    match (signal(Unix::interrupt()), signal(Unix::terminate())) {
        (Ok(interrupt), Ok(terminate)) => Source::Unix {
            interrupt,
            terminate,
        },
        _ => {
            tracing::warn!("cannot install signal handlers; Ctrl-C will not clean up");
            Source::Off
        }
    }
}

#[cfg(not(unix))]
fn install() -> Source {
    Source::CtrlC(Box::pin(tokio::signal::ctrl_c()))
}
