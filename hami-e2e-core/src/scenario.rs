//! The unit of testing: a named, labelled, async body that gets a [`Context`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::admission::Demand;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::failure::Failure;
use crate::filter::{is_label_char, normalize_separators};
use crate::requirement::Requirement;

/// One end-to-end test.
///
/// Most scenarios are built with [`scenario`]; implement the trait directly for scenarios
/// generated from data (one per vendor backend, say). The trait is object-safe: a suite is a
/// `Vec<Arc<dyn Scenario>>`.
///
/// Names are paths: `nvidia/allocation/single-device` and
/// `nvidia::allocation::single-device` are the same name, shown with `::` in listings
/// (`cargo nextest` groups by it). Segments are made of letters, digits, `-`, `_` and `.`.
pub trait Scenario: Send + Sync + 'static {
    /// The stable, unique, path-like name.
    fn name(&self) -> &str;

    /// Labels for `--label-filter` (`nvidia`, `smoke`, `slow`).
    fn labels(&self) -> &[String] {
        &[]
    }

    /// What the system under test must offer; a miss skips the scenario with the reason.
    fn requirements(&self) -> &[Requirement] {
        &[]
    }

    /// The devices it holds while it runs: the runner starts it only when they are free
    /// (see [`admission`](crate::admission)), and hands it the ones it may use
    /// ([`Context::devices`]).
    fn demands(&self) -> &[Demand] {
        &[]
    }

    /// A timeout of its own, instead of the run's `--timeout`.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// `Some(reason)` to leave it out unless `--ignored`/`--include-ignored`.
    fn ignored(&self) -> Option<&str> {
        None
    }

    /// Whether it must run alone (it restarts a shared component, say): the runner starts
    /// serial scenarios after all the others have finished, one at a time, as Ginkgo's
    /// `Serial` does. Under `cargo nextest`, give them `threads-required =
    /// "num-test-threads"` (the workspace's `.config/nextest.toml` does, by the `serial`
    /// label).
    fn serial(&self) -> bool {
        false
    }

    /// The body. It may be dropped at any `.await` (timeout, Ctrl-C): put cleanup in
    /// fixtures or [`Context::defer`], never only in the body.
    fn run(&self, ctx: Context) -> BoxFuture<'static, Result<(), Failure>>;
}

type Body = dyn Fn(Context) -> BoxFuture<'static, Result<(), Failure>> + Send + Sync;

/// A scenario made of a closure, built with [`scenario`].
#[derive(Clone)]
pub struct FnScenario {
    name: String,
    labels: Vec<String>,
    requirements: Vec<Requirement>,
    demands: Vec<Demand>,
    timeout: Option<Duration>,
    ignored: Option<String>,
    serial: bool,
    body: Arc<Body>,
}

/// Starts building a scenario named `name`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hami_e2e_core::{ensure, scenario, Requirement, Scenario};
///
/// let s = scenario("nvidia/allocation/single-device")
///     .labels(["nvidia", "smoke"])
///     .requires(Requirement::at_least("nvidia devices", 1))
///     .timeout(Duration::from_secs(120))
///     .run(|ctx| async move {
///         let granted = ctx.step("create the pod", async { Ok::<_, hami_e2e_core::Failure>(3000) }).await?;
///         ensure!(granted == 3000, "granted {granted} MiB");
///         Ok(())
///     });
/// assert_eq!(s.name(), "nvidia::allocation::single-device");
/// ```
pub fn scenario(name: impl Into<String>) -> ScenarioBuilder {
    ScenarioBuilder {
        name: normalize_separators(&name.into()),
        labels: Vec::new(),
        requirements: Vec::new(),
        demands: Vec::new(),
        timeout: None,
        ignored: None,
        serial: false,
    }
}

/// Builder returned by [`scenario`]; [`ScenarioBuilder::run`] finishes it.
#[derive(Debug, Clone)]
#[must_use = "a scenario builder does nothing until `.run(body)`"]
pub struct ScenarioBuilder {
    name: String,
    labels: Vec<String>,
    requirements: Vec<Requirement>,
    demands: Vec<Demand>,
    timeout: Option<Duration>,
    ignored: Option<String>,
    serial: bool,
}

impl ScenarioBuilder {
    /// Adds one label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.labels.push(label.into());
        self
    }

    /// Adds labels.
    pub fn labels<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.labels.extend(labels.into_iter().map(Into::into));
        self
    }

    /// Adds a requirement.
    pub fn requires(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self
    }

    /// Adds devices it holds while it runs (see [`admission`](crate::admission)).
    pub fn demand(mut self, demand: Demand) -> Self {
        self.demands.push(demand);
        self
    }

    /// Overrides the run's `--timeout` for this scenario.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Leaves the scenario out unless `--ignored` or `--include-ignored` is given.
    pub fn ignore(mut self, reason: impl Into<String>) -> Self {
        self.ignored = Some(reason.into());
        self
    }

    /// Makes it run alone, after the others ([`Scenario::serial`]); adds the label `serial`.
    pub fn serial(mut self) -> Self {
        self.serial = true;
        if !self.labels.iter().any(|l| l == "serial") {
            self.labels.push("serial".into());
        }
        self
    }

    /// Finishes the scenario with its body.
    pub fn run<F, Fut>(self, body: F) -> FnScenario
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        FnScenario {
            name: self.name,
            labels: self.labels,
            requirements: self.requirements,
            demands: self.demands,
            timeout: self.timeout,
            ignored: self.ignored,
            serial: self.serial,
            body: Arc::new(move |ctx| Box::pin(body(ctx))),
        }
    }
}

impl Scenario for FnScenario {
    fn name(&self) -> &str {
        &self.name
    }
    fn labels(&self) -> &[String] {
        &self.labels
    }
    fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
    fn demands(&self) -> &[Demand] {
        &self.demands
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    fn ignored(&self) -> Option<&str> {
        self.ignored.as_deref()
    }
    fn serial(&self) -> bool {
        self.serial
    }
    fn run(&self, ctx: Context) -> BoxFuture<'static, Result<(), Failure>> {
        (self.body)(ctx)
    }
}

/// Checks a scenario's name and labels.
pub(crate) fn validate(s: &dyn Scenario) -> Result<()> {
    let name = s.name();
    let invalid = |reason: &str| Error::InvalidScenarioName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.contains('/') {
        return Err(invalid(
            "use `::` (or build it with `scenario()`, which converts `/`)",
        ));
    }
    for segment in name.split("::") {
        if segment.is_empty() {
            return Err(invalid("empty path segment"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(&format!(
                "character `{c}` is not allowed (letters, digits, `-_.`)"
            )));
        }
    }
    for label in s.labels() {
        if label.is_empty() || !label.chars().all(is_label_char) {
            return Err(Error::InvalidLabel {
                scenario: name.to_string(),
                label: label.clone(),
            });
        }
    }
    Ok(())
}

/// A short form of a name for namespaces and folders: lowercase, `-` for separators.
///
/// ```
/// assert_eq!(hami_e2e_core::slug("nvidia::Allocation::single_device"), "nvidia-allocation-single-device");
/// ```
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> FnScenario {
        FnScenario {
            name: name.to_string(),
            ..scenario("x").run(|_| async { Ok(()) })
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate(&named("a::b-c::d_e.1")).is_ok());
        for bad in ["", "a::::b", "a::b c", "a/b", "::a"] {
            assert!(validate(&named(bad)).is_err(), "{bad}");
        }
        let e = validate(&named("a::b c")).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid scenario name `a::b c`: character ` ` is not allowed (letters, digits, `-_.`)"
        );
    }

    #[test]
    fn labels_are_validated() {
        let s = scenario("a")
            .label("ok")
            .label("not ok")
            .run(|_| async { Ok(()) });
        assert!(matches!(validate(&s), Err(Error::InvalidLabel { .. })));
    }
}
