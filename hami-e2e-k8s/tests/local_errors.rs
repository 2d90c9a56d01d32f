//! A component that dies during start-up: the error names it and quotes its log, and
//! nothing it or the components before it started is left behind. Alone in its test
//! binary so that no other cluster's processes are children of this process.

use hami_e2e_k8s::Error;
use hami_e2e_k8s::local::{LocalCluster, LocalClusterOptions, NodeSpec};

fn children_of_this_process() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) && fields[0] != "Z" {
            found.push(head.to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_exits_is_named_with_its_log_and_nothing_is_left() {
    let err = LocalCluster::start(LocalClusterOptions::default().apiserver_arg("--no-such-flag"))
        .await
        .expect_err("kube-apiserver refuses an unknown flag");
    let text = err.to_string();
    assert!(matches!(err, Error::ComponentExited { .. }), "{text}");
    assert!(text.starts_with("kube-apiserver exited"), "{text}");
    assert!(text.contains("unknown flag: --no-such-flag"), "{text}");
    // etcd, started before, was stopped; the folder is gone.
    assert_eq!(children_of_this_process(), Vec::<String>::new());
    let prefix = format!("hami-e2e-cluster-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A bad node is refused before the cluster starts anything for it.
    let err = LocalCluster::start(LocalClusterOptions::default().node(NodeSpec::new("Bad_Name")))
        .await
        .expect_err("invalid node name");
    assert!(err.to_string().contains("node name `Bad_Name`"), "{err}");
    assert_eq!(children_of_this_process(), Vec::<String>::new());
}
