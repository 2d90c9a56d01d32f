//! A cancellation signal: the run's (Ctrl-C, SIGTERM) and each scenario's (its timeout).

use std::sync::Arc;

use tokio::sync::watch;

/// A cancellation signal that scenarios and fixtures can wait on.
///
/// A scenario's token is cancelled when the scenario times out or the run is cancelled;
/// a run's token when the process gets SIGINT or SIGTERM.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hami_e2e_core::CancelToken;
///
/// let run = CancelToken::new();
/// let scenario = run.child();
/// assert!(!scenario.is_cancelled());
/// run.cancel();
/// scenario.cancelled().await; // returns at once
/// assert!(scenario.is_cancelled());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct CancelToken {
    own: Arc<watch::Sender<bool>>,
    parent: Option<Box<CancelToken>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self {
            own: Arc::new(watch::Sender::new(false)),
            parent: None,
        }
    }

    /// A token cancelled with this one, or on its own.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            own: Arc::new(watch::Sender::new(false)),
            parent: Some(Box::new(self.clone())),
        }
    }

    /// Cancels this token and its children.
    pub fn cancel(&self) {
        self.own.send_replace(true);
    }

    /// Whether this token or a parent is cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.own.borrow() || self.parent.as_ref().is_some_and(|p| p.is_cancelled())
    }

    /// Completes when this token or a parent is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes state.
    pub async fn cancelled(&self) {
        let mut rx = self.own.subscribe();
        match &self.parent {
            None => {
                let _ = rx.wait_for(|c| *c).await;
            }
            Some(parent) => {
                tokio::select! {
                    _ = rx.wait_for(|c| *c) => {}
                    _ = Box::pin(parent.cancelled()) => {}
                }
            }
        }
    }
}
