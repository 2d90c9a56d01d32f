//! Running commands in containers and reading their logs, for device verification on
//! real clusters (`nvidia-smi` in a CUDA container) and for diagnostics.
//!
//! On the local cluster there are no containers: KWOK answers `exec` by running the command
//! on the host when the cluster is started with
//! `LocalClusterOptions::host_exec` (in `local`), and
//! `logs` with the content of a file; both go through the real API server's
//! streaming protocol, so these functions are tested for real there.
//!
//! ```no_run
//! # async fn f(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) -> hami_e2e_k8s::Result<()> {
//! let out = hami_e2e_k8s::exec(&pods, "cuda", None, ["nvidia-smi", "-L"]).await?;
//! assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr);
//! println!("{}", out.stdout);
//! # Ok(()) }
//! ```

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, LogParams};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

/// What a command run in a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Its exit code (0 on success).
    pub exit_code: i32,
}

/// Runs `command` in `container` of pod `name` (the pod's only or default container with
/// `None`) and collects its output and exit code. A non-zero exit is not an error: check
/// [`ExecOutput::exit_code`].
///
/// # Errors
///
/// [`Error::Exec`] naming the pod, container and command when it cannot be started
/// (no such pod or container, the kubelet unreachable) or its stream breaks.
///
/// # Cancel safety
///
/// Cancel safe for the caller; the command may go on running in the container.
pub async fn exec<I, S>(
    api: &Api<Pod>,
    name: &str,
    container: Option<&str>,
    command: I,
) -> Result<ExecOutput>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let command: Vec<String> = command.into_iter().map(Into::into).collect();
    let target = format!(
        "pod/{}/{name}{}",
        api.namespace().unwrap_or("-"),
        container
            .map(|c| format!(" container `{c}`"))
            .unwrap_or_default()
    );
    let failed = |source: kube::Error| Error::Exec {
        command: command.join(" "),
        container: target.clone(),
        source: Box::new(source),
    };
    let mut params = AttachParams::default()
        .stdout(true)
        .stderr(true)
        .stdin(false);
    if let Some(c) = container {
        params = params.container(c);
    }
    let mut process = api
        .exec(name, command.clone(), &params)
        .await
        .map_err(failed)?;
    let status = process.take_status();
    let mut stdout_reader = process.stdout();
    let mut stderr_reader = process.stderr();
    let read_out = async {
        let mut bytes = Vec::new();
        match stdout_reader.as_mut() {
            Some(r) => r.read_to_end(&mut bytes).await.map(|_| bytes),
            None => Ok(bytes),
        }
    };
    let read_err = async {
        let mut bytes = Vec::new();
        match stderr_reader.as_mut() {
            Some(r) => r.read_to_end(&mut bytes).await.map(|_| bytes),
            None => Ok(bytes),
        }
    };
    let (stdout, stderr) = tokio::join!(read_out, read_err);
    let broken = |e: std::io::Error| Error::Exec {
        command: command.join(" "),
        container: target.clone(),
        source: Box::new(e),
    };
    // Output that is not UTF-8 (a binary, another encoding) is kept, lossily.
    let stdout = String::from_utf8_lossy(&stdout.map_err(broken)?).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.map_err(broken)?).into_owned();
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    drop(stdout_reader);
    drop(stderr_reader);
    process.join().await.map_err(|source| Error::Exec {
        command: command.join(" "),
        container: target.clone(),
        source: Box::new(source),
    })?;
    // Without the final status the stream ended early: the command's fate is unknown.
    let Some(status) = status else {
        return Err(broken(std::io::Error::other(
            "the stream ended without the command's exit status",
        )));
    };
    let mut stderr = stderr;
    let (exit_code, known) = exit_code(&status);
    if !known {
        // Not the command's own exit: say why on stderr, as kubectl does.
        stderr.push_str(status.message.as_deref().unwrap_or("exec failed"));
    }
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code,
    })
}

/// The exit code in the `Status` the API server sends at the end of an exec, and whether
/// it is the command's own: 0 for `Success`; the `ExitCode` cause of `NonZeroExitCode` (what
/// the kubelet sends); a message ending in `exit status N` (what KWOK's host exec sends);
/// else 1, not the command's.
fn exit_code(status: &Status) -> (i32, bool) {
    if status.status.as_deref() == Some("Success") {
        return (0, true);
    }
    let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
    let from_cause = causes
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse().ok());
    let from_message = || {
        let message = status.message.as_deref()?;
        let (_, code) = message.trim_end().rsplit_once("exit status ")?;
        code.parse().ok()
    };
    match from_cause.or_else(from_message) {
        Some(code) => (code, true),
        None => (1, false),
    }
}

/// The logs of `container` of pod `name` (its only container with `None`); with
/// `previous`, those of its previous run; with `tail`, only the last lines.
///
/// # Errors
///
/// [`Error::Api`] naming the pod and container, with the server's message (`previous
/// terminated container not found`, ...).
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn logs(
    api: &Api<Pod>,
    name: &str,
    container: Option<&str>,
    previous: bool,
    tail: Option<i64>,
) -> Result<String> {
    let params = LogParams {
        container: container.map(str::to_string),
        previous,
        tail_lines: tail,
        ..Default::default()
    };
    api.logs(name, &params).await.map_err(|source| Error::Api {
        action: if previous {
            "read the previous logs of"
        } else {
            "read the logs of"
        },
        object: format!(
            "pod/{}/{name}{}",
            api.namespace().unwrap_or("-"),
            container
                .map(|c| format!(" container `{c}`"))
                .unwrap_or_default()
        ),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_the_status() {
        let ok: Status = serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code(&ok), (0, true));
        let three: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .unwrap();
        assert_eq!(exit_code(&three), (3, true));
        let kwok: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "InternalError", "code": 500,
            "message": "Internal error occurred: error executing command in container: cmd wait: sh -c exit 3: exit status 3"
        }))
        .unwrap();
        assert_eq!(exit_code(&kwok), (3, true));
        let other: Status =
            serde_json::from_value(serde_json::json!({"status": "Failure"})).unwrap();
        assert_eq!(exit_code(&other), (1, false));
    }
}
