//! `https://`: rustls (ring; TLS 1.3 and 1.2) over the request's TCP
//! connection, trusting the host's CA certificates: `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`, else the usual bundle of each distribution. No built-in
//! roots: a host (and a Nomad exec chroot, which binds /etc) has its own,
//! kept current by its updates, and a private MinIO's CA is one
//! `SSL_CERT_FILE` away.

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Where distributions keep their CA bundle.
const BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The client configuration, made once per process.
fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = roots()?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

fn add_file(store: &mut RootCertStore, path: &Path) -> usize {
    let Ok(certs) = CertificateDer::pem_file_iter(path) else {
        return 0;
    };
    let certs: Vec<CertificateDer<'static>> = certs.filter_map(Result::ok).collect();
    store.add_parsable_certificates(certs).0
}

/// The trusted CA certificates: those of `SSL_CERT_FILE` and of the files
/// in `SSL_CERT_DIR` (both, as OpenSSL reads them) where either is set,
/// else the first distribution bundle that has any.
fn roots() -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let (file, dirs) = (var("SSL_CERT_FILE"), var("SSL_CERT_DIR"));
    if file.is_some() || dirs.is_some() {
        if let Some(f) = &file {
            add_file(&mut store, Path::new(f));
        }
        for dir in dirs.iter().flat_map(std::env::split_paths) {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    add_file(&mut store, &e.path());
                }
            }
        }
        if store.is_empty() {
            let show = |v: &Option<std::ffi::OsString>| {
                v.as_ref().map_or("unset".into(), |v| v.to_string_lossy().into_owned())
            };
            return Err(format!(
                "no PEM certificate in SSL_CERT_FILE ({}) or SSL_CERT_DIR ({})",
                show(&file),
                show(&dirs)
            ));
        }
        return Ok(store);
    }
    for b in BUNDLES {
        if add_file(&mut store, Path::new(b)) > 0 {
            return Ok(store);
        }
    }
    Err(format!(
        "no CA certificates to check the server with (none in {}): set SSL_CERT_FILE to a PEM bundle",
        BUNDLES.join(", ")
    ))
}

/// A TLS connection over `tcp` to `host` (a name or an IP address, no port).
pub fn connect(tcp: TcpStream, host: &str) -> Result<Box<dyn crate::ReadWrite>, (String, bool)> {
    let config = config().map_err(|e| (e, false))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| (format!("TLS: server name {host:?}: {e}"), false))?;
    let conn = ClientConnection::new(config, name).map_err(|e| (format!("TLS: {e}"), false))?;
    Ok(Box::new(StreamOwned::new(conn, tcp)))
}
