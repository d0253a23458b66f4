//! `--web-config FILE`: TLS and basic auth for /metrics in the format of the Prometheus
//! exporter-toolkit (the `--web.config.file` that node_exporter reads), so one file serves
//! every exporter of a site.
//!
//! Supported: `tls_server_config` (`cert_file`/`key_file` or inline `cert`/`key`,
//! `client_auth_type` NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert with
//! `client_ca_file`/`client_ca`, `min_version`/`max_version` TLS12 or TLS13),
//! `http_server_config` (`headers`; `http2` is accepted, /metrics speaks HTTP/1.1) and
//! `basic_auth_users` (user: bcrypt hash). As in exporter-toolkit, unknown keys are errors; the
//! toolkit's keys otwatch does not implement are refused by name rather than ignored. The file
//! is read once at start (the toolkit rereads it per request).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    /// Newer exporter-toolkit releases: refused (not silently ignored).
    #[serde(default)]
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What the server needs from a web config.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

/// The response headers exporter-toolkit lets a config set.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--web-config {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, dir).map_err(|e| format!("--web-config {}: {e}", path.display()))
    }

    /// Parses a config; relative file names are taken from `dir`, as exporter-toolkit does.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        // An empty file (or only comments) is a valid config that changes nothing.
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        let raw: RawConfig = if blank {
            RawConfig::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| e.to_string())?
        };
        if raw.rate_limit.is_some() {
            return Err("rate_limit is not supported by otwatch".into());
        }
        let mut cfg = WebConfig::default();
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|e| format!("basic_auth_users: {user}: not a bcrypt hash ({e})"))?;
            // bcrypt refuses to check a cost outside 4-31 (every password would be refused,
            // silently); past 16 one check takes seconds on the server's one checking thread.
            let cost = parts.get_cost();
            if !(4..=16).contains(&cost) {
                return Err(format!(
                    "basic_auth_users: {user}: bcrypt cost {cost}: use 4 to 16 (htpasswd -B -C 10)"
                ));
            }
            cfg.users.insert(user, hash);
        }
        if let Some(http) = raw.http_server_config {
            let _ = http.http2;
            for (name, value) in http.headers {
                if !ALLOWED_HEADERS
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&name))
                {
                    return Err(format!("HTTP header {name:?} can not be configured"));
                }
                let n = hyper::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("header {name:?}: {e}"))?;
                let v = hyper::header::HeaderValue::from_str(&value)
                    .map_err(|e| format!("header {name:?}: {e}"))?;
                cfg.headers.push((n, v));
            }
        }
        if let Some(tls) = raw.tls_server_config {
            cfg.tls = Some(tls_config(tls, dir)?);
        }
        Ok(cfg)
    }
}

fn pem(
    inline: Option<String>,
    file: Option<PathBuf>,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_file are given")),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(f)) => {
            let f = dir.join(f);
            std::fs::read(&f)
                .map(Some)
                .map_err(|e| format!("{what}_file {}: {e}", f.display()))
        }
        (None, None) => Ok(None),
    }
}

fn version(v: Option<&str>, default: u8, key: &str) -> Result<u8, String> {
    match v {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        // rustls speaks no TLS 1.0/1.1: a floor below 1.2 is met by 1.2.
        Some("TLS10" | "TLS11") if key == "min_version" => Ok(12),
        Some(other) => Err(format!("{key} {other}: expected TLS12 or TLS13")),
    }
}

fn tls_config(raw: RawTls, dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    for (key, set) in [
        ("cipher_suites", !raw.cipher_suites.is_empty()),
        ("curve_preferences", !raw.curve_preferences.is_empty()),
        (
            "prefer_server_cipher_suites",
            raw.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", !raw.client_allowed_sans.is_empty()),
    ] {
        if set {
            return Err(format!(
                "tls_server_config.{key} is not supported by otwatch"
            ));
        }
    }
    let cert = pem(raw.cert, raw.cert_file, dir, "cert")?.ok_or("missing cert_file")?;
    let key = pem(raw.key, raw.key_file, dir, "key")?.ok_or("missing key_file")?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert: {e}"))?;
    if chain.is_empty() {
        return Err("cert: no certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("key: {e}"))?;
    let (min, max) = (
        version(raw.min_version.as_deref(), 12, "min_version")?,
        version(raw.max_version.as_deref(), 13, "max_version")?,
    );
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let client_ca = pem(raw.client_ca, raw.client_ca_file, dir, "client_ca")?;
    let auth = raw.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match (auth, client_ca) {
        ("NoClientCert", None) => builder.with_no_client_auth(),
        ("NoClientCert", Some(_)) => {
            return Err("Client CA's have been configured without a Client Auth Policy".into())
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots
                    .add(c.map_err(|e| format!("client_ca: {e}"))?)
                    .map_err(|e| format!("client_ca: {e}"))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if auth == "VerifyClientCertIfGiven" {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!("client_auth_type {auth} needs client_ca_file"))
        }
        (other, _) => {
            return Err(format!(
                "client_auth_type {other}: otwatch supports NoClientCert, VerifyClientCertIfGiven and RequireAndVerifyClientCert"
            ))
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert/key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_changes_nothing() {
        let c = WebConfig::parse("# nothing\n\n", Path::new(".")).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.headers.is_empty());
    }

    #[test]
    fn unknown_and_unsupported_keys_are_errors_that_name_the_key() {
        let e = WebConfig::parse("foo: 1\n", Path::new(".")).err().unwrap();
        assert!(e.contains("foo"), "{e}");
        let e = WebConfig::parse("tls_server_config:\n  cert_fil: x\n", Path::new("."))
            .err()
            .unwrap();
        assert!(e.contains("cert_fil"), "{e}");
        let e = WebConfig::parse("rate_limit:\n  interval: 1s\n", Path::new("."))
            .err()
            .unwrap();
        assert!(e.contains("rate_limit"), "{e}");
    }

    #[test]
    fn users_need_bcrypt_hashes_and_headers_are_the_allowed_five() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: '{hash}'\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.headers.len(), 1);
        assert!(WebConfig::parse("basic_auth_users:\n  bob: notahash\n", Path::new(".")).is_err());
        assert!(WebConfig::parse(
            "http_server_config:\n  headers:\n    X-Foo: bar\n",
            Path::new(".")
        )
        .is_err());
    }

    #[test]
    fn tls_needs_a_certificate_and_a_key() {
        let e = WebConfig::parse("tls_server_config:\n  key_file: k.pem\n", Path::new("."))
            .err()
            .unwrap();
        assert!(e.contains("cert"), "{e}");
    }
}
