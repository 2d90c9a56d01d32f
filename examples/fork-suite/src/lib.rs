//! A downstream fork's suite: all of hami-e2e's scenarios, the fork's vendor backend (the
//! made-up XPU of `examples/xpu-backend`) and a scenario of its own.
//!
//! ```
//! let names: Vec<String> = fork_suite::suite().scenarios().iter().map(|s| s.name().to_string()).collect();
//! assert!(names.contains(&"cluster::nodes-ready".to_string())); // ours, kept
//! assert!(names.contains(&"devices::xpu::fake-node".to_string())); // the fork's backend
//! assert!(names.contains(&"fork::quota-is-enforced".to_string())); // the fork's scenario
//! ```

use std::collections::BTreeMap;

use hami_e2e_core::{ensure, scenario};
use hami_e2e_k8s::{NamespaceFixture, PodBuilder};
use hami_e2e_suite::Suite;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The fork's suite.
///
/// # Panics
///
/// Never: the XPU vendor name is not among the built-in ones.
pub fn suite() -> Suite {
    Suite::new()
        .backend(xpu_backend::Xpu::default())
        .expect("xpu is not a built-in vendor")
        .scenario(
            scenario("fork/quota-is-enforced")
                .labels(["fork", "smoke"])
                .run(|ctx| async move {
                    let ns = ctx.fixture::<NamespaceFixture>().await?;
                    let quota = ResourceQuota {
                        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                            name: Some("one-pod".into()),
                            ..Default::default()
                        },
                        spec: Some(ResourceQuotaSpec {
                            hard: Some(BTreeMap::from([(
                                "pods".to_string(),
                                Quantity("1".into()),
                            )])),
                            ..Default::default()
                        }),
                        status: None,
                    };
                    ns.apply(&quota).await?;
                    ns.create_object(&PodBuilder::new("first").build()).await?;
                    let second = ns.create_object(&PodBuilder::new("second").build()).await;
                    let refused = match second {
                        Ok(_) => false,
                        Err(e) => std::error::Error::source(&e)
                            .is_some_and(|s| s.to_string().contains("exceeded quota")),
                    };
                    ensure!(refused, "a second pod was admitted past a quota of one");
                    Ok(())
                }),
        )
}
