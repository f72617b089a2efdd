//! The HTTP clients, and what they trust: like Nix, the system's certificate store plus the
//! certificates of `NIX_SSL_CERT_FILE` and `SSL_CERT_FILE` when set (a private CA, a
//! TLS-inspecting proxy). `SSL_CERT_FILE` and `SSL_CERT_DIR` also stand in for the system
//! store, as OpenSSL takes them.

use std::path::Path;

use super::retry::error_chain;
use super::DownloadOptions;
use crate::net::Error;

/// The variables whose certificate files are trusted besides the system store, in Nix's order.
const CERT_FILE_VARIABLES: [&str; 2] = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"];

/// The client for whole files and small requests, and one for ranges: HTTP/1.1 only, so
/// that ranges fetched at once travel over separate TCP connections (each with its own
/// window, which is the point on a far link) rather than as streams of one HTTP/2 connection.
pub(super) fn clients(
    options: &DownloadOptions,
) -> Result<(reqwest::Client, reqwest::Client), Error> {
    let roots = extra_roots()?;
    let builder = || {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("srcgrab/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.stall_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            // Idle connections kept for the next request: as many as a host may have open,
            // look-ups included, or every answer beyond the cap costs a new connection.
            .pool_max_idle_per_host(
                options
                    .max_per_host
                    .max(options.max_lookups_per_host)
                    .max(1),
            );
        for root in &roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    };
    let build = |builder: reqwest::ClientBuilder| {
        builder
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e)))
    };
    Ok((build(builder())?, build(builder().http1_only())?))
}

/// The certificates of the files the environment names. A file that is named but cannot
/// be read or holds no certificate stops the run: Nix would fail every download with it.
fn extra_roots() -> Result<Vec<reqwest::Certificate>, Error> {
    let mut roots = Vec::new();
    for variable in CERT_FILE_VARIABLES {
        let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) else {
            continue;
        };
        roots.extend(certificates_in(variable, Path::new(&path))?);
    }
    Ok(roots)
}

fn certificates_in(variable: &str, path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let bad =
        |reason: String| Error::HttpClient(format!("{variable}={}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(error_chain(&e)))?;
    if certificates.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certificates)
}
