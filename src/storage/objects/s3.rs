//! `ObjectStore` on an S3-compatible bucket (AWS, MinIO, Garage, Ceph RGW, R2), through
//! Apache Arrow's `object_store` crate: a well-kept crate whose `AmazonS3` already signs
//! SigV4, speaks the multipart API, presigns URLs and retries what is safe to retry, so none
//! of that is written here. The one request it has no call for, a bucket's lifecycle
//! configuration, is signed with its public `AwsAuthorizer`. Credentials never reach an
//! error message or a log line: errors carry the request URL (no secret in it) and the
//! service's error code.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::HttpErrorKind;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore as _, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{
    ByteStream, ObjectMeta, ObjectStore, PartTag, UploadId, check_key, check_part_number,
    check_prefix, refused,
};
use crate::storage::{StorageError, StorageResult};

/// Where the bucket is and the keys to it. `Debug` hides the secret.
#[derive(Clone)]
pub struct S3Settings {
    /// The service's http(s) base URL, without the bucket.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `<endpoint>/<bucket>/<key>` when true, else `<bucket>.<endpoint host>/<key>`.
    pub path_style: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("path_style", &self.path_style)
            .finish()
    }
}

impl S3Settings {
    /// The bucket's base URL in the configured addressing style.
    pub fn bucket_url(&self) -> StorageResult<url::Url> {
        let mut url =
            url::Url::parse(&self.endpoint).map_err(|_| refused("the S3 endpoint is not a URL"))?;
        if self.path_style {
            let path = format!("{}/{}", url.path().trim_end_matches('/'), self.bucket);
            url.set_path(&path);
        } else {
            let host = url
                .host_str()
                .ok_or_else(|| refused("the S3 endpoint has no host"))?;
            let host = format!("{}.{host}", self.bucket);
            url.set_host(Some(&host))
                .map_err(|_| refused("the bucket does not make a host name"))?;
        }
        Ok(url)
    }
}

/// Retries of a failed request (5xx, 429, a dropped connection), within `RETRY_TIMEOUT`:
/// fewer than object_store's 10 in 3 minutes, so a request waiting on a bucket that is down
/// (an upload part, a download) fails within seconds instead of holding its client.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct S3Objects {
    s3: AmazonS3,
    /// The bucket's name (its policy names it).
    bucket: String,
    /// For the requests `object_store` has no call for (the lifecycle configuration).
    bucket_url: url::Url,
    region: String,
    http: reqwest::Client,
}

/// An `object_store` failure as a storage error; its text names the operation and URL and
/// the service's answer, never a credential. A service that cannot be reached (connecting,
/// timing out, after the retries) is `Unavailable`, anything it answered is `Backend`.
fn backend(error: object_store::Error) -> StorageError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut unreachable = false;
    let mut root = String::new();
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            unreachable |= matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        root = current.to_string();
        cause = current.source();
    }
    // object_store's messages quote most of their causes: the text, and the first cause
    // (connection refused, say) when it does not, rather than the chain, which repeats.
    let text = error.to_string();
    let error = match text.contains(&root) {
        true => anyhow!("{text}"),
        false => anyhow!("{text}: {root}"),
    };
    match unreachable {
        true => StorageError::Unavailable(error),
        false => StorageError::Backend(error),
    }
}

fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

fn path(key: &str) -> StorageResult<Path> {
    check_key(key)?;
    Path::parse(key).map_err(|_| refused(format_args!("invalid object key {key:?}")))
}

/// An upload id goes into a query string: an empty one would turn a part upload into a
/// plain PUT of the object (and an abort into a DELETE), so it is refused before it is sent.
fn check_upload(upload: &UploadId) -> StorageResult<()> {
    if upload.0.is_empty() || !upload.0.chars().all(|c| c.is_ascii_graphic()) {
        return Err(refused(format_args!("invalid upload id {:?}", upload.0)));
    }
    Ok(())
}

impl S3Objects {
    /// A client for the bucket; nothing is sent until the first call.
    pub fn new(settings: &S3Settings) -> StorageResult<Self> {
        let bucket_url = settings.bucket_url()?;
        let http_endpoint = settings.endpoint.starts_with("http://");
        // No overall request timeout: a download streams for as long as its reader needs
        // (the connect timeout and retries still apply).
        let options = ClientOptions::new()
            .with_allow_http(http_endpoint)
            .with_timeout_disabled();
        let endpoint = match settings.path_style {
            true => settings.endpoint.clone(),
            // object_store takes a virtual-hosted endpoint with the bucket already in it.
            false => bucket_url.as_str().trim_end_matches('/').to_owned(),
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_client_options(options)
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| refused(format_args!("the S3 configuration: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| StorageError::Backend(anyhow!("an HTTP client: {e}")))?;
        Ok(Self {
            s3,
            bucket: settings.bucket.clone(),
            bucket_url,
            region: settings.region.clone(),
            http,
        })
    }

    /// A signed `PUT <bucket>?<query>` of a bucket configuration (lifecycle, policy): the
    /// requests `object_store` has no call for.
    async fn put_subresource(
        &self,
        query: &str,
        body: Bytes,
        content_type: &str,
    ) -> StorageResult<(url::Url, reqwest::Response)> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let mut url = self.bucket_url.clone();
        url.set_query(Some(query));
        let mut request = object_store::client::HttpRequest::new(body.clone().into());
        *request.method_mut() = reqwest::Method::PUT;
        *request.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|_| refused("the bucket URL is not a URI"))?;
        let headers = request.headers_mut();
        headers.insert(
            "content-md5",
            md5.parse().map_err(|_| refused("Content-MD5"))?,
        );
        headers.insert(
            "content-type",
            content_type.parse().map_err(|_| refused("Content-Type"))?,
        );
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(backend)?;
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
        let response = self
            .http
            .put(url.as_str())
            .headers(request.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let cause = anyhow::Error::new(e.without_url());
                StorageError::Unavailable(cause.context(format!("PUT {url}")))
            })?;
        Ok((url, response))
    }

    async fn head_meta(&self, location: &Path) -> StorageResult<Option<ObjectMeta>> {
        match self.s3.head(location).await {
            Ok(meta) => Ok(Some(ObjectMeta {
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }
}

fn empty_stream() -> ByteStream {
    futures_util::stream::empty().boxed()
}

/// A bucket policy letting anyone GET the objects under `prefix` (nothing else: no listing,
/// no writes), for avatars read straight from the bucket (PROTOCOL.md 13.4).
pub fn public_read_policy(bucket: &str, prefix: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "SealpostAnonymousReads",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject"],
            "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}*")],
        }],
    })
    .to_string()
}

/// The lifecycle configuration PROTOCOL.md 12.3 asks for: objects under `attachments/`
/// expire after `retention_days`, unfinished multipart uploads are aborted after
/// `abort_days`.
pub fn lifecycle_xml(retention_days: u32, abort_days: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Rule><ID>sealpost-attachments-expire</ID><Filter><Prefix>attachments/</Prefix></Filter>\
         <Status>Enabled</Status><Expiration><Days>{retention_days}</Days></Expiration></Rule>\
         <Rule><ID>sealpost-abort-incomplete-uploads</ID><Filter><Prefix>attachments/</Prefix>\
         </Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload>\
         <DaysAfterInitiation>{abort_days}</DaysAfterInitiation>\
         </AbortIncompleteMultipartUpload></Rule>\
         </LifecycleConfiguration>"
    )
}

/// The `<Code>` of an S3 error body.
fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn start_upload(&self, key: &str) -> StorageResult<UploadId> {
        let location = path(key)?;
        let id = self.s3.create_multipart(&location).await.map_err(backend)?;
        Ok(UploadId(id))
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        bytes: Bytes,
    ) -> StorageResult<PartTag> {
        let location = path(key)?;
        check_part_number(number)?;
        check_upload(upload)?;
        // object_store numbers parts from 0 (part_idx) and sends part_idx + 1.
        let part = self
            .s3
            .put_part(
                &location,
                &upload.0,
                number as usize - 1,
                PutPayload::from(bytes),
            )
            .await
            .map_err(backend)?;
        Ok(PartTag {
            number,
            etag: part.content_id,
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[PartTag],
    ) -> StorageResult<()> {
        let location = path(key)?;
        check_upload(upload)?;
        // object_store completes an empty list by uploading an empty part, and numbers the
        // parts by their position: refuse both cases here, as the trait asks.
        super::check_part_list(parts)?;
        let ids = parts
            .iter()
            .map(|part| PartId {
                content_id: part.etag.clone(),
            })
            .collect();
        self.s3
            .complete_multipart(&location, &upload.0, ids)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> StorageResult<()> {
        let location = path(key)?;
        check_upload(upload)?;
        match self.s3.abort_multipart(&location, &upload.0).await {
            Err(e) if !is_not_found(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        self.head_meta(&path(key)?).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<Option<ByteStream>> {
        let location = path(key)?;
        if let Some(range) = &range
            && range.start >= range.end
        {
            // Nothing to read; only whether the object exists matters.
            return Ok(self.head_meta(&location).await?.map(|_| empty_stream()));
        }
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.s3.get_opts(&location, options).await {
            // Streamed as the service sends it: nothing is buffered whole.
            Ok(result) => Ok(Some(
                result
                    .into_stream()
                    .map_err(|e| StorageError::Backend(anyhow!(e)))
                    .boxed(),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => match range {
                // A range starting at or past the end gets 416 from S3: the trait's answer
                // is an empty stream for an object that exists.
                Some(range) => match self.head_meta(&location).await? {
                    None => Ok(None),
                    Some(meta) if range.start >= meta.size => Ok(Some(empty_stream())),
                    Some(_) => Err(backend(e)),
                },
                None => Err(backend(e)),
            },
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let location = path(key)?;
        match self.s3.delete(&location).await {
            Err(e) if !is_not_found(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn list_older(
        &self,
        prefix: &str,
        before_ms: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        check_prefix(prefix)?;
        let mut keys = Vec::new();
        let mut page_token = None;
        // A raw prefix (not object_store's `Path` prefix, which means whole segments), and
        // S3's own key order and `start-after`.
        while keys.len() < limit {
            let options = PaginatedListOptions {
                offset: after.map(str::to_owned),
                max_keys: Some(1000),
                page_token: page_token.take(),
                ..PaginatedListOptions::default()
            };
            let page = self
                .s3
                .list_paginated((!prefix.is_empty()).then_some(prefix), options)
                .await
                .map_err(backend)?;
            keys.extend(
                page.result
                    .objects
                    .into_iter()
                    .filter(|meta| meta.last_modified.timestamp_millis() < before_ms)
                    .map(|meta| meta.location.to_string()),
            );
            match page.page_token {
                Some(token) => page_token = Some(token),
                None => break,
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    async fn presigned_get(&self, key: &str, expires: Duration) -> StorageResult<Option<String>> {
        let location = path(key)?;
        let url = self
            .s3
            .signed_url(reqwest::Method::GET, &location, expires)
            .await
            .map_err(backend)?;
        Ok(Some(url.to_string()))
    }

    async fn allow_anonymous_reads(&self, prefix: &str) -> StorageResult<bool> {
        check_prefix(prefix)?;
        let body = Bytes::from(public_read_policy(&self.bucket, prefix));
        let (url, response) = self
            .put_subresource("policy", body, "application/json")
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        let text = response.text().await.unwrap_or_default();
        let code = error_code(&text).unwrap_or("");
        if status == reqwest::StatusCode::NOT_IMPLEMENTED || code == "NotImplemented" {
            return Ok(false);
        }
        Err(StorageError::Backend(anyhow!(
            "PUT {url} answered {status} {code}"
        )))
    }

    async fn apply_lifecycle(
        &self,
        retention_days: u32,
        abort_incomplete_days: u32,
    ) -> StorageResult<bool> {
        let body = Bytes::from(lifecycle_xml(retention_days, abort_incomplete_days));
        let (url, response) = self
            .put_subresource("lifecycle", body, "application/xml")
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        let text = response.text().await.unwrap_or_default();
        let code = error_code(&text).unwrap_or("");
        // Some S3-compatible services and gateways have no lifecycles: the sweeper does it.
        let unsupported = status == reqwest::StatusCode::NOT_IMPLEMENTED
            || (status == reqwest::StatusCode::BAD_REQUEST
                && matches!(code, "NotImplemented" | "NotSupported"));
        if unsupported {
            return Ok(false);
        }
        Err(StorageError::Backend(anyhow!(
            "PUT {url} answered {status} {code}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str, path_style: bool) -> S3Settings {
        S3Settings {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: "attachments".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "hunter2".into(),
            path_style,
        }
    }

    #[test]
    fn the_bucket_url_follows_the_addressing_style() {
        let path = settings("http://minio:9000", true).bucket_url().unwrap();
        assert_eq!(path.as_str(), "http://minio:9000/attachments");
        let virtual_host = settings("https://s3.eu-west-1.amazonaws.com", false)
            .bucket_url()
            .unwrap();
        assert_eq!(
            virtual_host.as_str(),
            "https://attachments.s3.eu-west-1.amazonaws.com/"
        );
    }

    #[test]
    fn settings_never_show_the_secret() {
        assert!(!format!("{:?}", settings("http://minio:9000", true)).contains("hunter2"));
    }

    #[test]
    fn the_avatar_policy_allows_anonymous_gets_under_the_prefix_only() {
        let policy: serde_json::Value =
            serde_json::from_str(&public_read_policy("b", "profiles/")).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(statement["Principal"], "*");
        assert_eq!(statement["Action"], serde_json::json!(["s3:GetObject"]));
        assert_eq!(
            statement["Resource"],
            serde_json::json!(["arn:aws:s3:::b/profiles/*"])
        );
        assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_lifecycle_has_both_rules_and_s3_error_codes_are_read() {
        let xml = lifecycle_xml(45, 7);
        assert!(xml.contains("<Days>45</Days>"), "{xml}");
        assert!(xml.contains("<DaysAfterInitiation>7</DaysAfterInitiation>"));
        assert_eq!(xml.matches("<Prefix>attachments/</Prefix>").count(), 2);
        let body = "<Error><Code>NotImplemented</Code><Message>no</Message></Error>";
        assert_eq!(error_code(body), Some("NotImplemented"));
        assert_eq!(error_code("<html/>"), None);
    }
}
