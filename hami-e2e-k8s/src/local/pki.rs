//! Certificates and the admin kubeconfig of a local cluster, generated in-process.
//!
//! As kwokctl does: one CA and one leaf (`CN=hami-e2e-admin, O=system:masters`) that is both
//! the API server's serving certificate and every client's certificate, plus a separate
//! service-account signing key pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub(crate) ca_crt: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) admin_crt: PathBuf,
    pub(crate) admin_key: PathBuf,
    pub(crate) sa_key: PathBuf,
    pub(crate) sa_pub: PathBuf,
}

fn pki_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Pki { what, source }
}

fn write(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Generates the PKI into `dir`. Extra SANs (host names, IPs) may be added for components
/// that serve TLS with the same certificate.
pub(crate) fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create folder",
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key = KeyPair::generate().map_err(pki_err("CA key"))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA certificate"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hami-e2e-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(pki_err("CA certificate"))?;

    let sans: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
        "10.96.0.1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let admin_key = KeyPair::generate().map_err(pki_err("admin key"))?;
    let mut params = CertificateParams::new(sans).map_err(pki_err("admin certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "hami-e2e-admin");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let admin = params
        .signed_by(&admin_key, &ca)
        .map_err(pki_err("admin certificate"))?;

    let sa = KeyPair::generate().map_err(pki_err("service-account key"))?;

    let pki = Pki {
        ca_crt: dir.join("ca.crt"),
        ca_pem: ca.pem(),
        admin_crt: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    write(&pki.ca_crt, &pki.ca_pem)?;
    write(&pki.admin_crt, &admin.pem())?;
    write(&pki.admin_key, &admin_key.serialize_pem())?;
    write(&pki.sa_key, &sa.serialize_pem())?;
    write(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

/// The admin kubeconfig, with absolute paths, as JSON (which is YAML).
pub(crate) fn kubeconfig(pki: &Pki, server: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "hami-e2e", "cluster": {"server": server, "certificate-authority": pki.ca_crt}}],
        "users": [{"name": "hami-e2e-admin", "user": {"client-certificate": pki.admin_crt, "client-key": pki.admin_key}}],
        "contexts": [{"name": "hami-e2e", "context": {"cluster": "hami-e2e", "user": "hami-e2e-admin"}}],
        "current-context": "hami-e2e",
    })
    .to_string()
}
