//! Retries of transient API errors, at the operation that failed.
//!
//! kube's client retries HTTP 429, 503 and 504 itself. The fixtures of this crate wrap their
//! calls in [`retry_transient`] for what it does not retry: refused or reset connections and
//! timeouts (an API server restarting), other 5xx answers and `410 Gone`, with exponential
//! backoff, at most 6 times over about 15 s; anything else (403, 404, 409, 422) fails at once
//! with the server's message. Nothing is retried twice over.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{Error, Result};

/// The backoff of [`retry_transient`]: 100 ms doubling up to 5 s, 6 retries, with jitter.
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(6)
        .with_jitter()
}

/// Runs `operation`, again after a backoff while it fails with a transient error
/// ([`Error::is_transient`]). `what` names it in the log lines of retries.
///
/// ```no_run
/// # async fn f(client: kube::Client) -> hami_e2e_k8s::Result<()> {
/// use k8s_openapi::api::core::v1::Node;
///
/// let nodes = hami_e2e_k8s::retry_transient("list nodes", || async {
///     kube::Api::<Node>::all(client.clone()).list(&Default::default()).await.map_err(|source| {
///         hami_e2e_k8s::Error::Api { action: "list", object: "nodes".into(), source }
///     })
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The last error, once it is not transient or the retries are spent.
///
/// # Cancel safety
///
/// As cancel safe as `operation`.
pub async fn retry_transient<T, F, Fut>(what: &str, operation: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    operation
        .retry(backoff())
        .when(|e: &Error| e.is_transient() && !retried_by_kube(e))
        .notify(|e: &Error, after: Duration| {
            tracing::info!(error = %e, retry_in = ?after, "{what}: transient error, retrying");
        })
        .await
}

/// Whether kube's own retry layer already retried this error (429, 503, 504).
fn retried_by_kube(e: &Error) -> bool {
    matches!(e, Error::Api { source: kube::Error::Api(s), .. } if matches!(s.code, 429 | 503 | 504))
}
