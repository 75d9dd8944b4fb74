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

/// A provider's `Retry-After`, in seconds (the form FCM and APNs use; an HTTP date is not
/// something they send, so it is ignored rather than parsed).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Why a request got no answer, fit for an [`Outcome`](super::Outcome) reason: the kind of
/// failure and its causes, never the URL (reqwest's own message names it, and an APNs URL
/// holds the device token).
pub fn transport_reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut reason = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// A provider's error word (an APNs `reason`, an FCM `status` or `errorCode`) as it may go
/// into an outcome's reason: these are fixed upper-camel or upper-snake words, so anything
/// else is cut, which keeps whatever a provider echoes back out of logs and metrics.
pub fn provider_word(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_and_anything_else_is_ignored() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn provider_words_keep_only_word_characters() {
        assert_eq!(provider_word("BadDeviceToken"), "BadDeviceToken");
        assert_eq!(provider_word("INVALID_ARGUMENT"), "INVALID_ARGUMENT");
        assert_eq!(provider_word("a/b c\n{d}"), "abcd");
        assert_eq!(provider_word(&"x".repeat(100)).len(), 64);
    }
}
