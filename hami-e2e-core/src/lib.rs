//! Scenarios, fixtures and a libtest-compatible runner for end-to-end tests.
//!
//! `hami-e2e-core` is the bottom layer of [hami-e2e](https://github.com/hami-e2e/hami-e2e): it
//! knows nothing of Kubernetes or HAMi. It gives you
//!
//! - [`Scenario`]: a named (`nvidia::allocation::single-device`), labelled async body with
//!   requirements, a timeout and named steps ([`Context::step`]);
//! - [`Fixture`]: set-up shared per run or per scenario, with teardown that runs after
//!   success, failure, panic, timeout and Ctrl-C, in reverse order of set-up;
//! - [`admission`]: scenarios declare the devices they hold ([`Demand`]), and the runner
//!   starts them only when the devices the probe found ([`PoolDevice`]) can hold them
//!   beside the running ones, across processes too ([`SharedPool`]);
//! - [`Runner`]: name and label filters ([`LabelExpr`]), parallelism, per-scenario timeouts,
//!   retries of transient failures only ([`FailureKind::Transient`]), `--fail-fast`,
//!   `--repeat`, `--until-it-fails`, `--dry-run`, and reports: live human lines, JUnit XML
//!   (`--junit`) and JSON lines (`--json`);
//! - libtest compatibility: a `harness = false` test target built on [`Runner::main`]
//!   answers `cargo test` and `cargo nextest` (`--list --format terse`, `--exact`,
//!   `--ignored`, `--skip`, `test result:` closing line). Every runner flag also reads an
//!   environment variable (`HAMI_E2E_LABEL_FILTER`, `HAMI_E2E_JUNIT`, ...), see [`Args`].
//!
//! # Writing a scenario and a fixture
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use hami_e2e_core::{ensure, scenario, Failure, Fixture, FixtureContext, RunConfig, Runner, Scope, TeardownContext};
//!
//! /// A run-scoped "server" (in real suites: a cluster), counting what it hands out.
//! struct Server;
//!
//! impl Fixture for Server {
//!     type Output = AtomicU32;
//!     fn scope(&self) -> Scope { Scope::Run }
//!     async fn setup(&self, _ctx: &FixtureContext) -> Result<AtomicU32, Failure> {
//!         Ok(AtomicU32::new(0))
//!     }
//!     async fn teardown(&self, leases: &AtomicU32, _ctx: &TeardownContext) -> Result<(), Failure> {
//!         println!("server handed out {} leases", leases.load(Ordering::SeqCst));
//!         Ok(())
//!     }
//! }
//!
//! /// A scenario-scoped lease that depends on the server.
//! struct Lease;
//!
//! impl Fixture for Lease {
//!     type Output = u32;
//!     async fn setup(&self, ctx: &FixtureContext) -> Result<u32, Failure> {
//!         let server = ctx.fixture::<Server>().await?;
//!         Ok(server.fetch_add(1, Ordering::SeqCst) + 1)
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let conclusion = Runner::new()
//!     .fixture(Server)
//!     .fixture(Lease)
//!     .scenario(scenario("leases/first").label("smoke").run(|ctx| async move {
//!         let lease = ctx.step("take a lease", ctx.fixture::<Lease>()).await?;
//!         ensure!(*lease >= 1, "lease numbers start at 1, got {lease}");
//!         Ok(())
//!     }))
//!     .scenario(scenario("leases/second").run(|ctx| async move {
//!         ctx.fixture::<Lease>().await?;
//!         ctx.defer("say goodbye", async { Ok(()) });
//!         Ok(())
//!     }))
//!     .run(RunConfig::default())
//!     .await?;
//! assert!(conclusion.success());
//! # Ok::<(), hami_e2e_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Under `cargo nextest`
//!
//! nextest runs each scenario in a process of its own (`<binary> <name> --exact`), so
//! run-scoped fixtures are set up once per process there. A fixture that is expensive to
//! start (a local cluster) shares itself between processes on its own, with a lock file
//! keyed by `NEXTEST_RUN_ID`; see `hami-e2e-k8s`. The listing phase never sets anything up.
//!
//! # Minimum supported Rust version
//!
//! 1.89, as kube's.

pub mod admission;
mod args;
mod cancel;
mod context;
mod duration;
mod error;
mod event;
mod failure;
mod filter;
mod fixture;
pub mod progress;
pub mod report;
mod requirement;
mod runner;
mod scenario;
mod sink;

pub use admission::{Demand, DevicePool, GrantedDevice, PoolDevice, Reservation, SharedPool};
pub use args::{Args, IgnoredMode, ListFormat, RunConfig};
pub use cancel::CancelToken;
pub use context::Context;
pub use duration::{format_duration, parse_duration};
pub use error::{Error, Result};
pub use event::{
    Attachment, CancelReason, Event, EventKind, FailureReason, Outcome, RunSummary, ScenarioReport,
    SignalKind, StepRecord,
};
pub use failure::{
    BoxError, Failure, FailureKind, TransientClassifier, is_transient,
    register_transient_classifier,
};
pub use filter::{LabelExpr, NameFilter};
pub use fixture::{Fixture, FixtureContext, Scope, TeardownContext};
pub use report::Reporter;
pub use requirement::{Capabilities, Requirement};
pub use runner::{Conclusion, Runner, exit_code, init_tracing};
pub use scenario::{FnScenario, Scenario, ScenarioBuilder, scenario, slug};
