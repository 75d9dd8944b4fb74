//! A real S3 server in the test process: s3s speaking the protocol and checking every SigV4
//! signature (`SimpleAuth`), s3s-fs keeping the objects in a temporary directory. It runs
//! on its own thread and tokio runtime, started once (`OnceLock`), so it outlives each
//! `#[tokio::test]` runtime; each [`TestBucket`] is a bucket of its own, emptied and deleted
//! when it drops.
//!
//! Two servers on two roots: [`Faithful`] wraps s3s-fs with what real S3 (and MinIO) do and
//! s3s-fs does not (a multipart upload bound to its key, ETags and sizes checked before a
//! completion, which keeps the upload when refused, and bucket lifecycle configurations
//! kept in memory, bucket policies that let anonymous readers GET what they grant), and a
//! plain s3s-fs that answers NotImplemented to a lifecycle, as services without lifecycle
//! support do.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use sealpost::config::{S3Config, Secret};
use sealpost::storage::objects::ObjectStore;
use sealpost::storage::objects::s3::{S3Objects, S3Settings};
use uuid::Uuid;

pub const ACCESS_KEY: &str = "sealpost-test-access-key";
pub const SECRET_KEY: &str = "sealpost-test-secret-key-0123456789";
pub const REGION: &str = "us-east-1";

/// The lifecycle configurations the faithful server was given, by bucket.
type Lifecycles = Arc<Mutex<HashMap<String, BucketLifecycleConfiguration>>>;
/// The bucket policies (JSON) the faithful server was given, by bucket.
type Policies = Arc<Mutex<HashMap<String, String>>>;

struct Servers {
    faithful: SocketAddr,
    plain: SocketAddr,
    lifecycles: Lifecycles,
}

/// What real S3 does with a bucket policy, as far as sealpost uses one: an anonymous
/// GetObject is allowed when a statement allows `s3:GetObject` to `*` on a resource
/// `arn:aws:s3:::<bucket>/<prefix>*` whose prefix starts the key; every other anonymous
/// request is denied (s3s's default).
struct PolicyAccess {
    policies: Policies,
}

impl PolicyAccess {
    fn grants(&self, bucket: &str, key: &str) -> bool {
        let policies = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        let Some(policy) = policies
            .get(bucket)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        else {
            return false;
        };
        let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
        statements.iter().any(|statement| {
            let list = |v: &serde_json::Value| -> Vec<String> {
                match v {
                    serde_json::Value::String(s) => vec![s.clone()],
                    serde_json::Value::Array(items) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            statement["Effect"] == "Allow"
                && statement["Principal"] == "*"
                && list(&statement["Action"])
                    .iter()
                    .any(|a| a == "s3:GetObject")
                && list(&statement["Resource"]).iter().any(|r| {
                    r.strip_prefix(&format!("arn:aws:s3:::{bucket}/"))
                        .and_then(|p| p.strip_suffix('*'))
                        .is_some_and(|prefix| key.starts_with(prefix))
                })
        })
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for PolicyAccess {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        if let (s3s::path::S3Path::Object { bucket, key }, "GetObject") =
            (cx.s3_path(), cx.s3_op().name())
            && self.grants(bucket, key)
        {
            return Ok(());
        }
        Err(s3_error!(AccessDenied, "Signature is required"))
    }
}

static SERVERS: OnceLock<Servers> = OnceLock::new();
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Removes the servers' directory when the test process exits (statics never drop).
extern "C" fn remove_root() {
    if let Some(root) = ROOT.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let root = ROOT.get_or_init(|| {
            std::env::temp_dir().join(format!("sealpost-s3-{}", Uuid::new_v4().simple()))
        });
        // SAFETY: registers a plain function with no arguments, as atexit expects.
        unsafe { libc::atexit(remove_root) };
        let (faithful_root, plain_root) = (root.join("faithful"), root.join("plain"));
        for dir in [&faithful_root, &plain_root] {
            std::fs::create_dir_all(dir).expect("the S3 server's directory");
        }
        let lifecycles = Lifecycles::default();
        let policies = Policies::default();
        let (sent, addresses) = std::sync::mpsc::channel();
        let kept = lifecycles.clone();
        std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the S3 server's runtime");
                runtime.block_on(async move {
                    let faithful = Faithful {
                        fs: FileSystem::new(&faithful_root).expect("s3s-fs"),
                        root: faithful_root,
                        uploads: Mutex::default(),
                        lifecycles: kept,
                        policies: policies.clone(),
                    };
                    let faithful = serve(faithful, Some(PolicyAccess { policies })).await;
                    let plain = serve(FileSystem::new(&plain_root).expect("s3s-fs"), None).await;
                    let _ = sent.send((faithful, plain));
                    std::future::pending::<()>().await
                })
            })
            .expect("the S3 server's thread");
        let (faithful, plain) = addresses.recv().expect("the S3 server starts");
        Servers {
            faithful,
            plain,
            lifecycles,
        }
    })
}

/// Serves `s3` on an ephemeral loopback port, checking signatures with the test keys (and
/// anonymous requests with `access`, when given).
async fn serve(s3: impl S3, access: Option<PolicyAccess>) -> SocketAddr {
    let service = {
        let mut builder = S3ServiceBuilder::new(s3);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        if let Some(access) = access {
            builder.set_access(access);
        }
        builder.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the S3 server");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    address
}

/// A multipart upload as S3 tracks it: its key and its parts' ETags and sizes.
struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, (String, u64)>,
}

/// s3s-fs with the multipart checks of real S3 and lifecycle configurations in memory.
struct Faithful {
    fs: FileSystem,
    root: PathBuf,
    // std: held for map operations only, never across an await.
    uploads: Mutex<HashMap<String, Upload>>,
    lifecycles: Lifecycles,
    policies: Policies,
}

fn etag_value(etag: &ETag) -> &str {
    match etag {
        ETag::Strong(value) | ETag::Weak(value) => value,
    }
}

impl Faithful {
    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upload `id`, checked to be `bucket`/`key`'s.
    fn check_upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        match self.uploads().get(id) {
            Some(upload) if upload.bucket == bucket && upload.key == key => Ok(()),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }
}

/// The methods s3s-fs implements, handed to it as they are; then the ones `Faithful` adds.
macro_rules! faithful_s3 {
    ({ $($name:ident: $input:ident => $output:ident),* $(,)? } $($own:tt)*) => {
        #[async_trait::async_trait]
        impl S3 for Faithful {
            $(
                async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.fs.$name(req).await
                }
            )*
            $($own)*
        }
    };
}

faithful_s3!({
    create_bucket: CreateBucketInput => CreateBucketOutput,
    copy_object: CopyObjectInput => CopyObjectOutput,
    delete_bucket: DeleteBucketInput => DeleteBucketOutput,
    delete_object: DeleteObjectInput => DeleteObjectOutput,
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
    get_object: GetObjectInput => GetObjectOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    list_buckets: ListBucketsInput => ListBucketsOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
    put_object: PutObjectInput => PutObjectOutput,
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
    list_parts: ListPartsInput => ListPartsOutput,
}

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &response.output.upload_id {
            self.uploads().insert(
                id.clone(),
                Upload {
                    bucket,
                    key,
                    parts: BTreeMap::new(),
                },
            );
        }
        Ok(response)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = &req.input;
        let (id, number) = (input.upload_id.clone(), input.part_number);
        self.check_upload(&id, &input.bucket, &input.key)?;
        let response = self.fs.upload_part(req).await?;
        let etag = response.output.e_tag.as_ref().map(etag_value).unwrap_or("").to_owned();
        // Where s3s-fs keeps a part (`FileSystem::resolve_upload_part_path`).
        let size = std::fs::metadata(self.root.join(format!(".upload_id-{id}.part-{number}")))
            .map(|m| m.len())
            .unwrap_or(0);
        if let Some(upload) = self.uploads().get_mut(&id) {
            upload.parts.insert(number, (etag, size));
        }
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = &req.input;
        let id = input.upload_id.clone();
        self.check_upload(&id, &input.bucket, &input.key)?;
        let listed: Vec<(i32, String)> = input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .map(|parts| {
                parts
                    .iter()
                    .map(|p| {
                        let etag = p.e_tag.as_ref().map(etag_value).unwrap_or("").to_owned();
                        (p.part_number.unwrap_or(0), etag)
                    })
                    .collect()
            })
            .unwrap_or_default();
        {
            let uploads = self.uploads();
            let stored = &uploads.get(&id).ok_or_else(|| s3_error!(NoSuchUpload))?.parts;
            if listed.is_empty() {
                return Err(s3_error!(MalformedXML));
            }
            if listed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
                return Err(s3_error!(InvalidPartOrder));
            }
            for (i, (number, etag)) in listed.iter().enumerate() {
                match stored.get(number) {
                    Some((stored_etag, _)) if stored_etag != etag => {
                        return Err(s3_error!(InvalidPart));
                    }
                    None => return Err(s3_error!(InvalidPart)),
                    Some((_, size)) if i + 1 < listed.len() && *size < 5 * 1024 * 1024 => {
                        return Err(s3_error!(EntityTooSmall));
                    }
                    Some(_) => {}
                }
            }
        }
        let response = self.fs.complete_multipart_upload(req).await?;
        self.uploads().remove(&id);
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = &req.input;
        let id = input.upload_id.clone();
        self.check_upload(&id, &input.bucket, &input.key)?;
        let response = self.fs.abort_multipart_upload(req).await?;
        self.uploads().remove(&id);
        Ok(response)
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let configuration = input
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML))?;
        self.lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(input.bucket, configuration);
        Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let input = req.input;
        serde_json::from_str::<serde_json::Value>(&input.policy)
            .map_err(|_| s3_error!(MalformedPolicy))?;
        self.policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(input.bucket, input.policy);
        Ok(S3Response::new(PutBucketPolicyOutput::default()))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let kept = self
            .lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.input.bucket)
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchLifecycleConfiguration))?;
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(kept.rules),
            ..Default::default()
        }))
    }
);

/// A bucket of its own on the in-process server; its objects and itself are deleted when
/// it drops (best effort, never a panic).
pub struct TestBucket {
    pub config: S3Config,
    /// Which server's directory holds its objects.
    root: &'static str,
}

impl TestBucket {
    /// A bucket on the server that keeps lifecycle configurations.
    pub async fn new() -> Self {
        Self::on(servers().faithful, "faithful").await
    }

    /// A bucket on plain s3s-fs, which answers NotImplemented to a lifecycle configuration.
    pub async fn without_lifecycle() -> Self {
        Self::on(servers().plain, "plain").await
    }

    async fn on(server: SocketAddr, root: &'static str) -> Self {
        let name = format!(
            "sealpost-test-{}",
            &Uuid::new_v4().simple().to_string()[..20]
        );
        let config = S3Config {
            endpoint: format!("http://{server}"),
            region: REGION.into(),
            bucket: name,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: Secret::new(SECRET_KEY),
            path_style: true,
        };
        let response = on_bucket(&config, reqwest::Method::PUT)
            .await
            .expect("the S3 test server answers");
        assert!(
            response.status().is_success(),
            "creating the test bucket: {}",
            response.status()
        );
        Self { config, root }
    }

    /// The file s3s-fs keeps object `key` of this bucket in (on the lifecycle-keeping server),
    /// for a test that ages an object by its modification time, as S3's LastModified.
    #[allow(dead_code)]
    pub fn object_file(&self, key: &str) -> PathBuf {
        ROOT.get()
            .expect("the S3 servers run")
            .join(self.root)
            .join(&self.config.bucket)
            .join(key)
    }

    /// The store sealpost makes of this bucket.
    pub fn store(&self) -> S3Objects {
        S3Objects::new(&settings(&self.config)).expect("an S3 store on the test bucket")
    }

    /// The lifecycle configuration the bucket was given, if any.
    pub fn lifecycle(&self) -> Option<BucketLifecycleConfiguration> {
        servers()
            .lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.config.bucket)
            .cloned()
    }
}

/// A signed request on the bucket itself (create, delete).
async fn on_bucket(
    config: &S3Config,
    method: reqwest::Method,
) -> reqwest::Result<reqwest::Response> {
    let url = format!("{}/{}", config.endpoint, config.bucket);
    let mut request = object_store::client::HttpRequest::new(Vec::new().into());
    *request.method_mut() = method.clone();
    *request.uri_mut() = url.parse().expect("a bucket URI");
    let credential = AwsCredential {
        key_id: config.access_key_id.clone(),
        secret_key: config.secret_access_key.expose().to_owned(),
        token: None,
    };
    AwsAuthorizer::new(&credential, "s3", &config.region).authorize(&mut request, None);
    reqwest::Client::new()
        .request(method, url)
        .headers(request.headers().clone())
        .send()
        .await
}

/// sealpost's store settings for `config`.
pub fn settings(config: &S3Config) -> S3Settings {
    S3Settings {
        endpoint: config.endpoint.clone(),
        region: config.region.clone(),
        bucket: config.bucket.clone(),
        access_key_id: config.access_key_id.clone(),
        secret_access_key: config.secret_access_key.expose().to_owned(),
        path_style: config.path_style,
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let config = self.config.clone();
        // Drop runs outside any async context we could await in: a thread with its own
        // small runtime, waited for so the bucket is gone when the test ends.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(store) = S3Objects::new(&settings(&config)) {
                    let keys = store.list_older("", i64::MAX, None, 100_000).await;
                    for key in keys.unwrap_or_default() {
                        let _ = store.delete(&key).await;
                    }
                }
                let _ = on_bucket(&config, reqwest::Method::DELETE).await;
            });
        })
        .join();
    }
}
