//! HAMi on the local cluster, as host processes: HAMi's real scheduler (extender and
//! webhook), a second kube-scheduler whose profile calls it, and the webhook's registration,
//! wired as HAMi's chart wires them in a cluster.
//!
//! [`LocalHami::start`] does, on a [`LocalCluster`]:
//! 1. a CA and a serving certificate for `127.0.0.1` (rcgen), and HAMi's
//!    `device-config.yaml` rendered from the same [`HamiValues`] as the chart's ConfigMap
//!    ([`HamiValues::device_config`]);
//! 2. HAMi's scheduler (`KUBECONFIG` in its environment, HTTPS on a free port, metrics on
//!    another, `--scheduler-name`, `--leader-elect=false`, `--node-lock-timeout`, Ascend on
//!    when its values are), recorded in the cluster's pids file like every component;
//! 3. a second kube-scheduler, `hami-kube-scheduler`, serving only the profile
//!    `hami-scheduler`, with HAMi as its extender (`filter` and `bind`,
//!    `nodeCacheCapable: true`, every managed resource `ignoredByScheduler`);
//! 4. a `MutatingWebhookConfiguration` calling `https://127.0.0.1:<port>/webhook` with the
//!    CA bundle and `failurePolicy: Fail`, labelled for the run so a reaper removes it if
//!    the run is killed.
//!
//! It is ready when HAMi answers `/healthz` and, for each node that
//! [`wait_registered`](LocalHami::wait_registered) is given, its metrics show the node's
//! devices (`hami_gpu_memory_limit_bytes{node=...}`): the port opening says nothing about
//! HAMi's view of the nodes. [`LocalHami::stop`] removes the webhook configuration, then
//! stops both processes.
//!
//! ```no_run
//! # async fn f(cluster: &hami_e2e_k8s::local::LocalCluster, scheduler: hami_e2e_helm::binaries::HamiScheduler) -> hami_e2e_helm::Result<()> {
//! use std::time::Duration;
//! use hami_e2e_helm::{LocalHami, LocalHamiOptions};
//!
//! let hami = LocalHami::start(cluster, &scheduler, LocalHamiOptions::default()).await?;
//! // ... add fake nodes, then:
//! hami.wait_registered(&["gpu-node-0"], Duration::from_secs(30)).await?;
//! println!("{}", hami.endpoint().describe());
//! hami.stop(cluster).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hami_e2e_k8s::local::{LocalCluster, ProcessSpec, SchedulerConfig};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::binaries::HamiScheduler;
use crate::error::{Error, Result};
use crate::values::HamiValues;

/// The name of HAMi's scheduler process on the local cluster (its log: `logs/hami-scheduler.log`).
pub const HAMI_PROCESS: &str = "hami-scheduler";
/// The name of the second kube-scheduler that calls HAMi.
pub const HAMI_KUBE_SCHEDULER_PROCESS: &str = "hami-kube-scheduler";
/// HAMi's webhook name, as in its chart.
pub const WEBHOOK_NAME: &str = "vgpu.hami.io";

/// How to run HAMi on the local cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocalHamiOptions {
    /// The chart values the device config and the policies come from.
    pub values: HamiValues,
    /// `--scheduler-name` and the kube-scheduler profile (default `hami-scheduler`).
    pub scheduler_name: String,
    /// `--node-lock-timeout` (default HAMi's 5 m).
    pub node_lock_timeout: Duration,
    /// `--kube-qps` and `--kube-burst` of HAMi's API client (default HAMi's own: 5 and 10).
    pub kube_qps_burst: Option<(u32, u32)>,
    /// Resource names the extender manages (each `ignoredByScheduler`); default: the
    /// chart's NVIDIA, Cambricon and Hygon names and Ascend's chips.
    pub managed_resources: Vec<String>,
    /// Labels for the webhook configuration (the run's ownership labels).
    pub labels: BTreeMap<String, String>,
    /// The webhook configuration's name (default `hami-e2e-webhook`).
    pub webhook_configuration: String,
    /// HAMi's klog verbosity (default 4, as HAMi's chart).
    pub verbosity: u8,
    /// Further scheduler flags.
    pub extra_args: Vec<String>,
    /// How long HAMi may take to answer `/healthz` (default 60 s).
    pub start_timeout: Duration,
}

impl Default for LocalHamiOptions {
    fn default() -> Self {
        let values = HamiValues::default();
        let managed_resources = default_managed_resources(&values);
        Self {
            values,
            scheduler_name: "hami-scheduler".into(),
            node_lock_timeout: Duration::from_secs(300),
            kube_qps_burst: None,
            managed_resources,
            labels: BTreeMap::new(),
            webhook_configuration: "hami-e2e-webhook".into(),
            verbosity: 4,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// The resource names of `values`' device config: what HAMi's extender manages.
pub fn default_managed_resources(values: &HamiValues) -> Vec<String> {
    let mut names: Vec<String> = crate::values::CHART_RESOURCE_NAMES
        .iter()
        .filter_map(|(k, _)| values.resource_name(k))
        .map(str::to_owned)
        .collect();
    if values.ascend_enabled() {
        for chip in hami_e2e_devices::AscendChip::catalogue() {
            names.extend(chip.names.all().into_iter().map(str::to_owned));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Where a running HAMi listens and logs: what a process that did not start it (a nextest
/// scenario process attached to a shared cluster) needs to use it. Serializable, so the
/// process that started HAMi can publish it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HamiEndpoint {
    /// `https://127.0.0.1:<port>`: `/filter`, `/bind`, `/webhook`, `/healthz`.
    pub url: String,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics_url: String,
    /// `--scheduler-name`: what the webhook writes into pods.
    pub scheduler_name: String,
    /// What `scheduler version` reported (`v2.10.0`).
    pub version: String,
    /// Where the binary came from (`from HAMI_E2E_HAMI_SCHEDULER`).
    pub source: String,
    /// HAMi's log.
    pub log: PathBuf,
    /// The HAMi kube-scheduler's log.
    pub kube_scheduler_log: PathBuf,
    /// The device config HAMi runs with.
    pub device_config: PathBuf,
    /// The MutatingWebhookConfiguration's name.
    pub webhook_configuration: String,
}

impl HamiEndpoint {
    /// One line for a run's summary: `HAMi v2.10.0 (from HAMI_E2E_HAMI_SCHEDULER) at https://127.0.0.1:41234`.
    pub fn describe(&self) -> String {
        format!("HAMi {} ({}) at {}", self.version, self.source, self.url)
    }

    /// HAMi's `/metrics` text.
    ///
    /// # Errors
    ///
    /// [`Error::Hami`] when it does not answer.
    pub async fn metrics(&self) -> Result<String> {
        get_text(&self.metrics_url, false)
            .await
            .map_err(|message| Error::Hami {
                what: format!("GET {}", self.metrics_url),
                message,
            })
    }

    /// The nodes whose devices HAMi's metrics show (`hami_gpu_memory_limit_bytes{node=...}`).
    ///
    /// # Errors
    ///
    /// As [`metrics`](Self::metrics).
    pub async fn registered_nodes(&self) -> Result<Vec<String>> {
        Ok(registered_nodes(&self.metrics().await?))
    }

    /// Waits until HAMi's metrics show the devices of every node of `nodes`.
    ///
    /// # Errors
    ///
    /// [`Error::Hami`] naming the nodes still missing after `timeout`, with the end of
    /// HAMi's log.
    pub async fn wait_registered(&self, nodes: &[&str], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let seen = self.registered_nodes().await.unwrap_or_default();
            let missing: Vec<&str> = nodes
                .iter()
                .copied()
                .filter(|n| !seen.iter().any(|s| s == n))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::Hami {
                    what: format!("registration of node(s) {}", missing.join(", ")),
                    message: format!(
                        "HAMi's metrics do not show them after {:.1?} (registered: {}); last lines of {}:\n{}",
                        started.elapsed(),
                        if seen.is_empty() {
                            "none".into()
                        } else {
                            seen.join(", ")
                        },
                        self.log.display(),
                        self.log_tail(20)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of HAMi's log, leaving out the lines its metrics collection
    /// writes (two per container each time the metrics are read, at HAMi's default
    /// verbosity, which would crowd out the rest).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" metrics.go:"))
            .collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    /// The last `lines` lines of the HAMi kube-scheduler's log.
    pub fn kube_scheduler_log_tail(&self, lines: usize) -> String {
        tail(&self.kube_scheduler_log, lines)
    }

    /// HAMi's log lines that mention `needle` (a pod's name), at most `max`, the last ones:
    /// its filter result for a pod (`FilteringFailed`, the reasons per node).
    pub fn log_lines_about(&self, needle: &str, max: usize) -> Vec<String> {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        lines[lines.len().saturating_sub(max)..].to_vec()
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `node` labels of `hami_gpu_memory_limit_bytes` series in a metrics text.
///
/// ```
/// let text = "# HELP x\nhami_gpu_memory_limit_bytes{device_uuid=\"GPU-0\",node=\"n1\",zone=\"vGPU\"} 1.6e+10\n";
/// assert_eq!(hami_e2e_helm::registered_nodes(text), ["n1"]);
/// ```
pub fn registered_nodes(metrics: &str) -> Vec<String> {
    let mut nodes: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("hami_gpu_memory_limit_bytes{"))
        .filter_map(|l| {
            let start = l.find("node=\"")? + 6;
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_owned())
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// GETs `url` (HTTPS without verifying the certificate when `insecure`); the body, or the
/// error as text.
async fn get_text(url: &str, insecure: bool) -> std::result::Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let base: http::Uri = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .map_err(|e| format!("{e}"))?;
    let mut config = kube::Config::new(base);
    config.accept_invalid_certs = insecure;
    config.read_timeout = Some(Duration::from_secs(10));
    config.connect_timeout = Some(Duration::from_secs(2));
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())
}

/// HAMi running on a local cluster; see the [module docs](self).
#[derive(Debug)]
pub struct LocalHami {
    endpoint: HamiEndpoint,
    args: Vec<String>,
    env: Vec<(String, String)>,
    binary: PathBuf,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Hami {
            what: "a free port".into(),
            message: e.to_string(),
        })
}

/// A CA and a serving certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn certificates() -> Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let pki = |e: rcgen::Error| Error::Hami {
        what: "HAMi's webhook certificate".into(),
        message: e.to_string(),
    };
    let ca_key = KeyPair::generate().map_err(pki)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    ca.distinguished_name
        .push(DnType::CommonName, "hami-e2e-hami-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(pki)?;
    let key = KeyPair::generate().map_err(pki)?;
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).map_err(pki)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "hami-scheduler");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(pki)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

impl LocalHami {
    /// Starts HAMi on `cluster` with `scheduler` (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for bad values; [`Error::Io`] for its files; [`Error::K8s`] when a
    /// process cannot be started or exits (with its log's last lines); [`Error::Hami`]
    /// when HAMi does not answer in time or the webhook cannot be registered. What was
    /// started is stopped again.
    pub async fn start(
        cluster: &LocalCluster,
        scheduler: &HamiScheduler,
        options: LocalHamiOptions,
    ) -> Result<LocalHami> {
        let dir = cluster.dir().join("hami");
        std::fs::create_dir_all(&dir).map_err(io("create folder", &dir))?;
        let device_config = dir.join("device-config.yaml");
        let config = options.values.device_config()?;
        std::fs::write(&device_config, config.to_string()).map_err(io("write", &device_config))?;
        let (ca, cert, key) = certificates()?;
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, &cert).map_err(io("write", &cert_path))?;
        std::fs::write(&key_path, &key).map_err(io("write", &key_path))?;
        let (port, metrics_port) = (free_port()?, free_port()?);
        let v = &options.values;
        let mut args = vec![
            format!("--http_bind=127.0.0.1:{port}"),
            format!("--cert_file={}", cert_path.display()),
            format!("--key_file={}", key_path.display()),
            format!("--scheduler-name={}", options.scheduler_name),
            format!("--device-config-file={}", device_config.display()),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            "--leader-elect=false".into(),
            format!(
                "--node-lock-timeout={}s",
                options.node_lock_timeout.as_secs().max(1)
            ),
            format!("--enable-ascend={}", v.ascend_enabled()),
            format!("-v={}", options.verbosity),
        ];
        if let Some(p) = v.node_scheduler_policy {
            args.push(format!("--node-scheduler-policy={p}"));
        }
        if let Some(p) = v.gpu_scheduler_policy {
            args.push(format!("--gpu-scheduler-policy={p}"));
        }
        if !v.node_label_selector.is_empty() {
            let selector: Vec<String> = v
                .node_label_selector
                .iter()
                .map(|(k, val)| format!("{k}={val}"))
                .collect();
            args.push(format!("--node-label-selector={}", selector.join(",")));
        }
        if let Some((qps, burst)) = options.kube_qps_burst {
            args.push(format!("--kube-qps={qps}"));
            args.push(format!("--kube-burst={burst}"));
        }
        args.extend(options.extra_args.iter().cloned());
        let env = vec![(
            "KUBECONFIG".to_string(),
            cluster.kubeconfig().display().to_string(),
        )];
        let hami = LocalHami {
            endpoint: HamiEndpoint {
                url: format!("https://127.0.0.1:{port}"),
                metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
                scheduler_name: options.scheduler_name.clone(),
                version: scheduler.version.clone(),
                source: scheduler.source.to_string(),
                log: cluster.process_log(HAMI_PROCESS),
                kube_scheduler_log: cluster.process_log(HAMI_KUBE_SCHEDULER_PROCESS),
                device_config,
                webhook_configuration: options.webhook_configuration.clone(),
            },
            args,
            env,
            binary: scheduler.path.clone(),
        };
        let started = Instant::now();
        let result = hami.start_all(cluster, &options, &ca).await;
        if let Err(e) = result {
            let _ = hami.stop(cluster).await;
            return Err(e);
        }
        tracing::info!(hami = %hami.endpoint.describe(), elapsed = ?started.elapsed(), "HAMi ready on the local cluster");
        Ok(hami)
    }

    async fn start_all(
        &self,
        cluster: &LocalCluster,
        options: &LocalHamiOptions,
        ca: &str,
    ) -> Result<()> {
        self.start_scheduler_process(cluster, options.start_timeout)
            .await?;
        let extender = json!({
            "urlPrefix": self.endpoint.url,
            "enableHTTPS": true,
            "tlsConfig": {"insecure": true},
            "filterVerb": "filter",
            "bindVerb": "bind",
            "nodeCacheCapable": true,
            "weight": 1,
            "httpTimeout": "30s",
            "managedResources": options.managed_resources.iter()
                .map(|n| json!({"name": n, "ignoredByScheduler": true}))
                .collect::<Vec<_>>(),
        });
        let config = SchedulerConfig::default()
            .without_default_profile()
            .profile(json!({"schedulerName": options.scheduler_name}))
            .extender(extender);
        cluster
            .start_scheduler(HAMI_KUBE_SCHEDULER_PROCESS, &config)
            .await?;
        self.register_webhook(cluster, options, ca).await
    }

    async fn start_scheduler_process(
        &self,
        cluster: &LocalCluster,
        timeout: Duration,
    ) -> Result<()> {
        self.start_scheduler_binary(cluster, &self.binary, timeout)
            .await
    }

    async fn start_scheduler_binary(
        &self,
        cluster: &LocalCluster,
        binary: &Path,
        timeout: Duration,
    ) -> Result<()> {
        let mut spec = ProcessSpec::new(HAMI_PROCESS, binary).args(self.args.clone());
        for (k, v) in &self.env {
            spec = spec.env(k, v);
        }
        cluster.start_process(spec)?;
        let started = Instant::now();
        let health = format!("{}/healthz", self.endpoint.url);
        loop {
            cluster.check_process(HAMI_PROCESS, "during start-up")?;
            match get_text(&health, true).await {
                Ok(_) => return Ok(()),
                Err(last) if started.elapsed() > timeout => {
                    return Err(Error::Hami {
                        what: format!("GET {health}"),
                        message: format!(
                            "no answer after {:.1?} ({last}); last lines of {}:\n{}",
                            started.elapsed(),
                            self.endpoint.log.display(),
                            self.endpoint.log_tail(20)
                        ),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn register_webhook(
        &self,
        cluster: &LocalCluster,
        options: &LocalHamiOptions,
        ca: &str,
    ) -> Result<()> {
        use k8s_openapi::ByteString;
        let selector = json!({"matchExpressions": [{"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]}]});
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": options.webhook_configuration, "labels": options.labels},
            "webhooks": [{
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1beta1"],
                "clientConfig": {"url": format!("{}/webhook", self.endpoint.url), "caBundle": ByteString(ca.as_bytes().to_vec())},
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "namespaceSelector": selector,
                "objectSelector": selector,
                "reinvocationPolicy": "Never",
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
                "sideEffects": "None",
                "timeoutSeconds": 10,
            }],
        }))
        .map_err(|e| Error::Hami {
            what: "the webhook configuration".into(),
            message: e.to_string(),
        })?;
        let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client());
        let _ = api
            .delete(&options.webhook_configuration, &DeleteParams::default())
            .await;
        api.create(&PostParams::default(), &config)
            .await
            .map_err(|e| Error::Hami {
                what: format!(
                    "create mutatingwebhookconfiguration/{}",
                    options.webhook_configuration
                ),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Where it listens and logs.
    pub fn endpoint(&self) -> &HamiEndpoint {
        &self.endpoint
    }

    /// Waits until HAMi's metrics show every node of `nodes` (see
    /// [`HamiEndpoint::wait_registered`]).
    ///
    /// # Errors
    ///
    /// As [`HamiEndpoint::wait_registered`].
    pub async fn wait_registered(&self, nodes: &[&str], timeout: Duration) -> Result<()> {
        self.endpoint.wait_registered(nodes, timeout).await
    }

    /// Stops HAMi's scheduler and starts it again with the same flags (its usage is then
    /// rebuilt from the pods' annotations), waiting until it answers.
    ///
    /// # Errors
    ///
    /// As [`LocalHami::start`].
    pub async fn restart(&self, cluster: &LocalCluster) -> Result<()> {
        self.restart_with(cluster, &self.binary).await
    }

    /// Stops HAMi's scheduler and starts `binary` in its place with the same flags, port,
    /// certificate and device config (an upgrade to another release, or a rollback);
    /// [`restart`](Self::restart) goes back to the binary it was started with.
    ///
    /// # Errors
    ///
    /// As [`LocalHami::start`]; the log's last lines say why a binary that does not take
    /// these flags exited.
    pub async fn restart_with(&self, cluster: &LocalCluster, binary: &Path) -> Result<()> {
        cluster.stop_process(HAMI_PROCESS).await?;
        self.start_scheduler_binary(cluster, binary, Duration::from_secs(60))
            .await
    }

    /// Removes the webhook configuration, then stops the HAMi kube-scheduler and HAMi.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::Hami`] when the webhook configuration cannot be deleted (the processes are
    /// stopped all the same); [`Error::K8s`] when the pids record cannot be written.
    pub async fn stop(&self, cluster: &LocalCluster) -> Result<()> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client());
        let deleted = match api
            .delete(
                &self.endpoint.webhook_configuration,
                &DeleteParams::default(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Hami {
                what: format!(
                    "delete mutatingwebhookconfiguration/{}",
                    self.endpoint.webhook_configuration
                ),
                message: e.to_string(),
            }),
        };
        cluster.stop_process(HAMI_KUBE_SCHEDULER_PROCESS).await?;
        cluster.stop_process(HAMI_PROCESS).await?;
        deleted
    }
}
