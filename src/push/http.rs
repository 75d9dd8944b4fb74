//! The HTTP client every push sender uses: connection reuse (HTTP/2 where the provider
//! speaks it), a 10 s timeout, no redirects, and the operator's extra trust roots.

use std::time::Duration;

/// How long one push request may take, connect to last byte (PROTOCOL.md 11.8).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a push client trusts besides the public roots.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// PEM certificates (`SEALPOST_PUSH_CA_FILE`): a push distributor with its own CA, or a
    /// test's provider.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// How long one request may take; `None` is [`REQUEST_TIMEOUT`] (a test waits less for
    /// a provider that never answers).
    pub request_timeout: Option<Duration>,
}

/// A client for one provider.
pub fn client(options: &HttpOptions) -> anyhow::Result<reqwest::ClientBuilder> {
    let timeout = options.request_timeout.unwrap_or(REQUEST_TIMEOUT);
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sealpost/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &options.extra_roots_pem {
        for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}
