//! The store's HTTP client: ureq over rustls with the system trust store (never a bundled
//! root list), redirects followed by hand so that credentials only go to the host they belong
//! to, and transport failures told apart from definite answers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use super::{Error, Result};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Largest metadata body (JSON listings, index pages) read into memory.
const MAX_TEXT_BODY: u64 = 64 << 20;

/// Which redirects [`Http::send`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Every redirect (downloads).
    All,
    /// Only redirects to a relative location (the Hub's renamed repos); an absolute location
    /// (a CDN) is returned to the caller with its headers, as `huggingface_hub` does.
    Relative,
}

/// A blocking HTTP client with per-host credentials.
#[derive(Debug)]
pub struct Http {
    agent: Agent,
    /// (authority, Authorization header value): sent only to that authority.
    credentials: Vec<(String, String)>,
}

impl Http {
    /// A client trusting the system's certificate store (`SSL_CERT_FILE`/`SSL_CERT_DIR`
    /// honoured through `rustls-native-certs`).
    pub fn new() -> Result<Self> {
        let loaded = rustls_native_certs::load_native_certs();
        if loaded.certs.is_empty() {
            let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
            return Err(Error::Tls(format!(
                "no certificates found in the system trust store ({}); install ca-certificates or set SSL_CERT_FILE",
                errors.join("; ")
            )));
        }
        let roots: Vec<Certificate<'static>> = loaded
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&roots))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("mlcli/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Ok(Self {
            agent: config.into(),
            credentials: Vec::new(),
        })
    }

    /// Sends `Authorization: Bearer TOKEN` to the authority of `base_url` (and nowhere else).
    pub fn with_bearer(mut self, base_url: &str, token: Option<&str>) -> Self {
        if let Some(t) = token {
            self.credentials
                .push((authority(base_url).to_string(), format!("Bearer {t}")));
        }
        self
    }

    /// Strips `user:password@` from `url`, remembering it as Basic credentials for that
    /// authority (pip's convention for private indexes); returns the cleaned URL.
    pub fn with_userinfo(mut self, url: &str) -> (Self, String) {
        let (clean, user) = split_userinfo(url);
        if let Some(user) = user {
            let encoded = base64::engine::general_purpose::STANDARD.encode(user);
            self.credentials
                .push((authority(&clean).to_string(), format!("Basic {encoded}")));
        }
        (self, clean)
    }

    /// Sends a GET or HEAD with `headers`, following redirects as `follow` says. Returns the
    /// URL that answered and the response, whatever its status.
    pub fn send(
        &self,
        head: bool,
        url: &str,
        headers: &[(&str, &str)],
        follow: Follow,
    ) -> Result<(String, Response<Body>)> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = if head {
                self.agent.head(&url)
            } else {
                self.agent.get(&url)
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some((_, auth)) = self.credentials.iter().find(|(a, _)| *a == authority(&url)) {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().map_err(|e| transport_error(&url, e))?;
            if !resp.status().is_redirection() {
                return Ok((url, resp));
            }
            let Some(location) = header(&resp, "location") else {
                return Ok((url, resp));
            };
            let relative = !location.contains("://");
            if follow == Follow::Relative && !relative {
                return Ok((url, resp));
            }
            url = join(&url, &location);
        }
        Err(Error::Protocol {
            url,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// GET of a small text body (JSON, HTML) that must answer 200; other statuses are
    /// returned as [`Error::Http`] with the server's message.
    pub fn get_text(&self, url: &str, headers: &[(&str, &str)]) -> Result<(Response<()>, String)> {
        let (url, resp) = self.send(false, url, headers, Follow::All)?;
        let (parts, mut body) = resp.into_parts();
        let text = body
            .with_config()
            .limit(MAX_TEXT_BODY)
            .read_to_string()
            .map_err(|e| transport_error(&url, e))?;
        let resp = Response::from_parts(parts, ());
        if resp.status().as_u16() != 200 {
            return Err(status_error(&url, resp.status().as_u16(), &text));
        }
        Ok((resp, text))
    }
}

/// An [`Error::Http`] with the first line of the server's message.
pub fn status_error(url: &str, status: u16, body: &str) -> Error {
    let msg = body.lines().next().unwrap_or("").trim();
    let detail = if msg.is_empty() {
        String::new()
    } else {
        format!(": {}", msg.chars().take(200).collect::<String>())
    };
    Error::Http {
        url: url.to_string(),
        status,
        detail,
    }
}

/// Classifies a transport error: no answer at all is [`Error::Unreachable`].
pub fn transport_error(url: &str, e: ureq::Error) -> Error {
    use ureq::Error as E;
    let unreachable = match &e {
        E::HostNotFound
        | E::ConnectionFailed
        | E::Timeout(_)
        | E::Tls(_)
        | E::Rustls(_)
        | E::ConnectProxyFailed(_) => true,
        E::Io(io) => !matches!(io.kind(), std::io::ErrorKind::InvalidData),
        _ => false,
    };
    if unreachable {
        Error::Unreachable {
            host: authority(url).to_string(),
            reason: e.to_string(),
        }
    } else {
        Error::Protocol {
            url: url.to_string(),
            reason: e.to_string(),
        }
    }
}

/// A response header as text.
pub fn header<B>(resp: &Response<B>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `host[:port]` of a URL, without credentials.
pub fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    auth.rsplit_once('@').map_or(auth, |(_, a)| a)
}

/// (`url` without `user:password@`, the `user:password` part).
pub fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((user, host)) => (
            format!("{scheme}://{host}{}", &rest[end..]),
            Some(user.to_string()),
        ),
        None => (url.to_string(), None),
    }
}

/// Resolves `href` against the URL `base` (RFC 3986 for the cases indexes and redirects use:
/// absolute, scheme-relative, absolute-path and relative-path references, with `..`).
pub fn join(base: &str, href: &str) -> String {
    if href.contains("://") {
        return href.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(h) = href.strip_prefix("//") {
        return format!("{scheme}://{h}");
    }
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..auth_end]);
    if href.starts_with('/') {
        return format!("{origin}{href}");
    }
    let path = rest[auth_end..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    let (href_path, suffix) = match href.find(['?', '#']) {
        Some(i) => href.split_at(i),
        None => (href, ""),
    };
    let parts: Vec<&str> = href_path.split('/').collect();
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            ".." => {
                segments.pop();
            }
            "." => {}
            "" if i + 1 < parts.len() => {}
            s => segments.push(s),
        }
    }
    let trailing = if href_path.ends_with('/') && !href_path.is_empty() {
        "/"
    } else {
        ""
    };
    let joined = segments.join("/");
    let trailing = if joined.is_empty() { "" } else { trailing };
    format!("{origin}/{joined}{trailing}{suffix}")
}

/// Percent-encodes a path, keeping `/` between its segments.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_resolves_the_reference_forms_indexes_use() {
        let base = "https://idx.example/simple/pkg/";
        assert_eq!(
            join(base, "../../files/a.whl#sha256=ab"),
            "https://idx.example/files/a.whl#sha256=ab"
        );
        assert_eq!(join(base, "a.whl"), "https://idx.example/simple/pkg/a.whl");
        assert_eq!(join(base, "/x/a.whl"), "https://idx.example/x/a.whl");
        assert_eq!(join(base, "//cdn.example/a"), "https://cdn.example/a");
        assert_eq!(join(base, "http://o/a"), "http://o/a");
        assert_eq!(
            join(
                "http://h:1/org/repo/resolve/main/f",
                "/new/repo/resolve/main/f"
            ),
            "http://h:1/new/repo/resolve/main/f"
        );
    }

    #[test]
    fn credentials_are_split_from_urls_and_hosts_compare_without_them() {
        let (clean, user) = split_userinfo("https://u:p%40@idx.example:8443/simple/");
        assert_eq!(clean, "https://idx.example:8443/simple/");
        assert_eq!(user.as_deref(), Some("u:p%40"));
        assert_eq!(authority("https://u:p@h.example:1/x?y"), "h.example:1");
        assert_eq!(split_userinfo("https://h/a@b").1, None);
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_path("dir/a b+c.gguf"), "dir/a%20b%2Bc.gguf");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    }

    #[test]
    fn only_transport_failures_and_server_errors_count_as_unreachable() {
        let e = transport_error("http://127.0.0.1:9/x", ureq::Error::ConnectionFailed);
        assert!(matches!(&e, Error::Unreachable { host, .. } if host == "127.0.0.1:9"));
        assert!(e.is_unreachable());
        assert!(status_error("u", 503, "").is_unreachable());
        assert!(!status_error("u", 404, "").is_unreachable());
    }
}
