//! Selecting and connecting to a cluster: bad kubeconfigs are named, credentials never
//! appear in errors, and a local cluster's kubeconfig works like any other.

use std::path::PathBuf;

use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions};
use hami_e2e_k8s::{Cluster, ClusterSource};

fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hami-e2e-test-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

async fn connect_err(path: PathBuf, context: Option<&str>) -> String {
    let source = ClusterSource::kubeconfig(path.clone(), context.map(str::to_string));
    let err = Cluster::connect(source)
        .await
        .expect_err("must fail")
        .to_string();
    let _ = std::fs::remove_file(&path);
    err
}

fn kubeconfig(server: &str, user: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Config",
  "clusters": [{{"name": "c", "cluster": {{"server": "{server}", "insecure-skip-tls-verify": true}}}}],
  "users": [{{"name": "u", "user": {user}}}],
  "contexts": [{{"name": "ctx", "context": {{"cluster": "c", "user": "u"}}}}],
  "current-context": "ctx"}}"#
    )
}

#[tokio::test]
async fn a_missing_kubeconfig_is_named() {
    let err = connect_err("/nonexistent/kubeconfig".into(), None).await;
    assert_eq!(
        err,
        "invalid kubeconfig `/nonexistent/kubeconfig`: the file does not exist"
    );
}

#[tokio::test]
async fn a_malformed_kubeconfig_is_named() {
    let path = temp_file("malformed", "clusters: [this is: not valid");
    let err = connect_err(path.clone(), None).await;
    assert!(
        err.starts_with(&format!("invalid kubeconfig `{}`", path.display())),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_context_is_named() {
    let path = temp_file(
        "context",
        &kubeconfig("https://127.0.0.1:1", r#"{"token": "t"}"#),
    );
    let err = connect_err(path, Some("nope")).await;
    assert!(
        err.contains("(context `nope`)") && err.contains("nope"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_token() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = temp_file(
        "unreachable",
        &kubeconfig(
            &format!("https://127.0.0.1:{port}"),
            r#"{"token": "s3cr3t-t0ken"}"#,
        ),
    );
    let err = connect_err(path.clone(), None).await;
    assert!(
        err.starts_with(&format!(
            "invalid kubeconfig `{}`: the API server does not answer",
            path.display()
        )),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_clusters_kubeconfig_connects_and_wrong_credentials_are_refused() {
    let local = LocalCluster::start(LocalClusterOptions::default())
        .await
        .unwrap();
    let cluster = Cluster::connect(ClusterSource::kubeconfig(
        local.kubeconfig().to_path_buf(),
        None,
    ))
    .await
    .unwrap();
    assert!(cluster.local().is_none());
    assert!(
        cluster
            .description()
            .ends_with(&format!("Kubernetes {}", local.version())),
        "{}",
        cluster.description()
    );

    // A token the API server does not know: 401, named, and the token is not echoed.
    let path = temp_file(
        "bad-token",
        &kubeconfig(local.server(), r#"{"token": "s3cr3t-t0ken"}"#),
    );
    let err = connect_err(path, None).await;
    assert!(err.contains("Unauthorized") || err.contains("401"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    local.stop().await.unwrap();
}
