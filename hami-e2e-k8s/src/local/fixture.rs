//! The local cluster as a run-scoped fixture of the core runner.

use hami_e2e_core::{Failure, Fixture, FixtureContext, Scope, TeardownContext};

use super::{LocalCluster, LocalClusterOptions};

/// A [`LocalCluster`] started once per run, on first use, and stopped after the last
/// scenario, whatever the outcome.
///
/// ```no_run
/// use hami_e2e_core::{Runner, scenario};
/// use hami_e2e_k8s::local::LocalClusterFixture;
///
/// Runner::new()
///     .fixture(LocalClusterFixture::default())
///     .scenario(scenario("cluster/answers").run(|ctx| async move {
///         let cluster = ctx.fixture::<LocalClusterFixture>().await?;
///         cluster.client().apiserver_version().await?;
///         Ok(())
///     }))
///     .main();
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalClusterFixture {
    options: LocalClusterOptions,
}

impl LocalClusterFixture {
    /// A fixture starting the cluster with `options`.
    pub fn new(options: LocalClusterOptions) -> Self {
        Self { options }
    }
}

impl Fixture for LocalClusterFixture {
    type Output = LocalCluster;

    fn name(&self) -> String {
        "local-cluster".into()
    }

    fn scope(&self) -> Scope {
        Scope::Run
    }

    async fn setup(&self, _ctx: &FixtureContext) -> Result<LocalCluster, Failure> {
        Ok(LocalCluster::start(self.options.clone()).await?)
    }

    async fn teardown(
        &self,
        cluster: &LocalCluster,
        _ctx: &TeardownContext,
    ) -> Result<(), Failure> {
        Ok(cluster.stop().await?)
    }
}
