//! Clients from kubeconfig files, with errors that name the file and context and never
//! carry credentials.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// A client for the cluster of `path`, in `context` (default: the current context).
///
/// # Errors
///
/// [`Error::Kubeconfig`] naming the file (and context) when the file is missing or
/// malformed, the context unknown, or the credentials unusable.
pub async fn client_from_kubeconfig(path: &Path, context: Option<&str>) -> Result<kube::Client> {
    let name = describe(path, context);
    let invalid = |message: String| Error::Kubeconfig {
        source_name: name.clone(),
        message,
    };
    if !path.exists() {
        return Err(invalid("the file does not exist".into()));
    }
    let file = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| invalid(e.to_string()))
}

/// `` `path` (context `c`) ``, as errors name a kubeconfig.
pub(crate) fn describe(path: &Path, context: Option<&str>) -> String {
    match context {
        Some(c) => format!("`{}` (context `{c}`)", path.display()),
        None => format!("`{}`", path.display()),
    }
}
