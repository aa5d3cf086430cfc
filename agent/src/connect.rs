//! How the agent reaches its config server: HTTP/2 in plain text (`http://`), or
//! over TLS (`https://`) with the server's certificate verified against the CA
//! given ([`crate::Options::ca`]), presenting the proxy's workload certificate once
//! it has one, so that a server which requires proxies to prove who they are lets
//! its stream through.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::AgentError;
use crate::identity::Certificate as Workload;

/// The config server, with the connection's settings.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// With TLS verifying the server, and no certificate of the proxy's.
    endpoint: Endpoint,
    /// TLS to verify the server with; none: plain text.
    tls: Option<ClientTlsConfig>,
}

impl Server {
    /// The server at `url`, its certificate verified with the CA certificates
    /// (PEM) in the file `ca` when `url` is `https://`.
    pub(crate) async fn new(url: &str, ca: Option<&Path>) -> Result<Self, AgentError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(AgentError::NoScheme {
                url: url.to_owned(),
            });
        };
        let tls = if scheme.eq_ignore_ascii_case("https") {
            // Without a CA to verify it with, the token would go to whoever answers.
            let ca = ca.ok_or_else(|| AgentError::NoCa {
                url: url.to_owned(),
            })?;
            let pem = tokio::fs::read(ca).await.map_err(|e| AgentError::Ca {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        } else if scheme.eq_ignore_ascii_case("http") {
            None
        } else {
            return Err(AgentError::Scheme {
                url: url.to_owned(),
                rest: rest.to_owned(),
            });
        };
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| AgentError::Server {
            url: url.to_owned(),
            // The transport's own words are "transport error"; the URI's are below.
            reason: crate::error::reason(&e),
        })?;
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        let endpoint = match &tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| AgentError::Server {
                    url: url.to_owned(),
                    reason: crate::error::reason(&e),
                })?,
            None => endpoint,
        };
        Ok(Self { endpoint, tls })
    }

    /// The endpoint that presents no certificate of the proxy's (for `Certify`).
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether the connection is TLS, so a new workload certificate is worth
    /// connecting again for.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint a stream is opened on: over TLS, presenting `certificate` when
    /// there is one.
    pub(crate) fn presenting(&self, certificate: Option<&Workload>) -> Result<Endpoint, String> {
        match (&self.tls, certificate) {
            (Some(tls), Some(cert)) => {
                let identity = Identity::from_pem(&cert.chain, &cert.key);
                (self.endpoint.clone())
                    .tls_config(tls.clone().identity(identity))
                    .map_err(|e| format!("the workload certificate: {}", crate::error::reason(&e)))
            }
            _ => Ok(self.endpoint.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(url: &str, ca: Option<&Path>) -> String {
        Server::new(url, ca).await.expect_err("refused").to_string()
    }

    #[tokio::test]
    async fn a_server_url_says_what_to_write() {
        assert_eq!(
            refused("127.0.0.1:7070", None).await,
            r#"config server "127.0.0.1:7070" needs a scheme: http://127.0.0.1:7070"#
        );
        assert_eq!(
            refused("config.internal:7070", None).await,
            r#"config server "config.internal:7070" needs a scheme: http://config.internal:7070"#
        );
        let https = refused("https://config.internal:7070", None).await;
        assert!(
            https.contains("--ca") && https.contains("ca.pem"),
            "{https}"
        );
        let ftp = refused("ftp://config.internal:7070", None).await;
        assert!(
            ftp.ends_with("give it as http://config.internal:7070 or https://config.internal:7070"),
            "{ftp}"
        );
        let missing = refused(
            "https://127.0.0.1:7070",
            Some(Path::new("/nonexistent/ca.pem")),
        );
        assert!(missing.await.starts_with("/nonexistent/ca.pem: "));
        let bad = refused("http://exa mple:7070", None).await;
        assert!(
            bad.starts_with(r#"config server "http://exa mple:7070" is not a URL: "#)
                && !bad.contains("transport error"),
            "{bad}"
        );
        assert!(
            !Server::new("http://127.0.0.1:7070", None)
                .await
                .unwrap()
                .is_tls()
        );
        assert!(Server::new("HTTP://127.0.0.1:7070", None).await.is_ok());
    }
}
