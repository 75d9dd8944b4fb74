//! Test harness: the real application on port 0, either embedded or against a freshly
//! created Postgres database and a fresh Redis key prefix, both removed afterwards.
#![allow(dead_code)]

pub mod process;
pub mod push;
pub mod s3;
pub mod turn;

use std::time::Duration;

use sealpost::client::Client;
use sealpost::config::{Config, SecretUrl, StoreConfig};
use sealpost::startup::Application;
use uuid::Uuid;

pub fn database_admin_url() -> String {
    std::env::var("SEALPOST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("SEALPOST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Which stores a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    External,
}

/// A database created for one test and dropped (with its connections) when this drops.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("sealpost_test_{}", Uuid::new_v4().simple());
        let (client, connection) =
            tokio_postgres::connect(&database_admin_url(), tokio_postgres::NoTls)
                .await
                .expect(
                    "the test Postgres answers (see README: run the tests through scripts/test)",
                );
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let base = database_admin_url();
        let cut = base.rfind('/').expect("database URL has a path");
        let url = format!("{}/{name}", &base[..cut]);
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could await in: use a thread with its own
        // small runtime, and wait for it so the database is gone when the test ends.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&database_admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A Redis key prefix for one test; its keys are deleted when this drops.
pub struct TestRedis {
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            prefix: format!("sealpost-test:{}:", Uuid::new_v4().simple()),
        }
    }

    pub fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut conn = client.get_connection().expect("the test Redis answers");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .expect("KEYS");
        keys
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// The stores one test (and every server it starts) shares.
pub struct TestStores {
    pub db: Option<TestDatabase>,
    pub redis: Option<TestRedis>,
    /// The data directory (attachments) of the external mode, removed when this drops.
    pub data: TestDir,
    /// A bucket of the in-process S3 server for attachments, when the test asked for one.
    pub s3: Option<s3::TestBucket>,
}

/// A directory of its own under the system's temporary one, removed when dropped.
pub struct TestDir(pub std::path::PathBuf);

impl TestDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("sealpost-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestStores {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self {
                db: None,
                redis: None,
                data: TestDir::new(),
                s3: None,
            },
            Backend::External => Self {
                db: Some(TestDatabase::create().await),
                redis: Some(TestRedis::new()),
                data: TestDir::new(),
                s3: None,
            },
        }
    }

    /// Like `new`, with attachments in a bucket of the in-process S3 server.
    pub async fn with_s3(backend: Backend) -> Self {
        Self {
            s3: Some(s3::TestBucket::new().await),
            ..Self::new(backend).await
        }
    }

    pub fn store_config(&self) -> StoreConfig {
        match (&self.db, &self.redis) {
            (Some(db), Some(redis)) => StoreConfig::External {
                database_url: SecretUrl::new(db.url.clone()),
                database_pool_size: 4,
                redis_url: SecretUrl::new(redis_url()),
                redis_key_prefix: redis.prefix.clone(),
            },
            _ => StoreConfig::Embedded,
        }
    }

    /// The environment that points a `sealpost` process at these stores.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        let mut env = match (&self.db, &self.redis) {
            (Some(db), Some(redis)) => vec![
                ("SEALPOST_DATABASE_URL", db.url.clone()),
                ("SEALPOST_REDIS_URL", redis_url()),
                ("SEALPOST_REDIS_KEY_PREFIX", redis.prefix.clone()),
                ("SEALPOST_DATA_DIR", self.data.0.display().to_string()),
            ],
            _ => Vec::new(),
        };
        if let Some(bucket) = &self.s3 {
            let s3 = &bucket.config;
            env.extend([
                ("SEALPOST_S3_ENDPOINT", s3.endpoint.clone()),
                ("SEALPOST_S3_REGION", s3.region.clone()),
                ("SEALPOST_S3_BUCKET", s3.bucket.clone()),
                ("SEALPOST_S3_ACCESS_KEY_ID", s3.access_key_id.clone()),
                (
                    "SEALPOST_S3_SECRET_ACCESS_KEY",
                    s3.secret_access_key.expose().to_owned(),
                ),
                (
                    "SEALPOST_S3_PATH_STYLE",
                    if s3.path_style { "on" } else { "off" }.into(),
                ),
            ]);
        }
        env
    }

    /// `config()` with one rate limit set to `bucket_size` permits, regaining one every
    /// `permit_period_ms`.
    pub fn config_with_limit(
        &self,
        limit: sealpost::limits::Limit,
        bucket_size: u64,
        permit_period_ms: f64,
    ) -> Config {
        let mut config = self.config();
        config.rate_limits.specs.insert(
            limit,
            sealpost::limits::BucketSpec {
                bucket_size,
                permit_period_ms,
            },
        );
        config
    }

    /// A configuration on ephemeral ports against these stores.
    pub fn config(&self) -> Config {
        let mut config = Config::embedded_for_tests();
        config.stores = self.store_config();
        config.data_dir = self.data.0.clone();
        config.workers = Some(1);
        config.attachments.s3 = self.s3.as_ref().map(|bucket| bucket.config.clone());
        config
    }
}

/// A running server.
pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub client: Client,
    /// The stores the server serves from, to read what a request stored.
    pub stores: sealpost::storage::Stores,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn start(config: Config) -> Self {
        let app = Application::build(config)
            .await
            .expect("the application builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let admin_address = format!("http://127.0.0.1:{}", app.admin_port());
        let stores = app.stores();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            client: Client::new(&address),
            stores,
            address,
            admin_address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops in time")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_address))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of the sample `name{labels}` (labels as rendered), or 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

/// Registers an account with the given sealed-sender access settings.
pub async fn register_with(
    app: &TestApp,
    access_key: Option<[u8; 16]>,
    unrestricted: bool,
) -> (
    sealpost::client::DeviceCredentials,
    sealpost::client::AccountKeys,
) {
    let mut attributes = sealpost::client::default_attributes();
    attributes.unidentified_access_key =
        access_key.map(|k| sealpost::domain::encoding::encode_base64(&k));
    attributes.unrestricted_unidentified_access = unrestricted;
    let keys = sealpost::client::AccountKeys::generate();
    let password = sealpost::client::random_password();
    let aci = app
        .client
        .register(&keys.registration_request(attributes), &password)
        .await
        .expect("registration succeeds")
        .identity
        .uuid;
    let credentials = sealpost::client::DeviceCredentials {
        aci,
        device: sealpost::domain::ids::DeviceId::PRIMARY,
        password,
    };
    (credentials, keys)
}

/// Adds device `id` to an account straight in Postgres and returns its credentials. The
/// server's account cache does not hear of it: call this only before the account was read
/// through the server (right after registration), or link through the API instead.
pub async fn add_device(
    stores: &TestStores,
    owner: &sealpost::client::DeviceCredentials,
    id: u8,
    registration_id: i32,
) -> sealpost::client::DeviceCredentials {
    let password = sealpost::client::random_password();
    let hash = sealpost::auth::password::hash(&password).expect("hashing");
    let db_url = &stores.db.as_ref().expect("a Postgres test").url;
    let (db, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    db.execute(
        "INSERT INTO devices (aci, device_id, password_hash, registration_id, fetches_messages, \
         created_ms, last_seen_day_ms) VALUES ($1, $2, $3, $4, true, 0, 0)",
        &[&owner.aci.uuid(), &i16::from(id), &hash, &registration_id],
    )
    .await
    .expect("insert device");
    sealpost::client::DeviceCredentials {
        aci: owner.aci,
        device: sealpost::domain::ids::DeviceId::new(u32::from(id)).expect("device id"),
        password,
    }
}

/// Starts one server on fresh stores of `backend`.
pub async fn spawn_app(backend: Backend) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    (app, stores)
}

/// Defines `mod embedded` and `mod external` running each named async test function
/// (taking a `Backend`) on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Embedded).await
                }
            )+
        }
        mod external {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::External).await
                }
            )+
        }
    };
}
