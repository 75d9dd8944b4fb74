//! The composition root: the only place that names concrete backends. `Application::build`
//! binds the listeners (port 0 works, for tests), connects the stores, migrates, and wires
//! the services; `run_until_stopped` serves until the given shutdown future resolves.

mod push;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

use crate::api::bounds::ConnectionAdmission;
use crate::auth::Authenticator;
use crate::auth::password::Passwords;
use crate::config::{Config, StoreConfig};
use crate::delivery::memory::LocalNotifier;
use crate::delivery::redis::RedisNotifier;
use crate::delivery::{Notifier, ProvisioningSockets, Registry};
use crate::descriptors::Budget;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::service::accounts::{AccountParts, AccountService};
use crate::service::attachment_sweeper::AttachmentSweeper;
use crate::service::attachments::AttachmentService;
use crate::service::avatars::AvatarService;
use crate::service::calling::CallingService;
use crate::service::invites::InviteService;
use crate::service::keys::KeyService;
use crate::service::messages::MessageService;
use crate::service::presence::PresenceService;
use crate::service::profiles::{ProfileParts, ProfileService};
use crate::service::push::{PushParts, PushService};
use crate::service::reports::ReportService;
use crate::service::uploads::{UploadParts, UploadService};
use crate::service::usernames::UsernameService;
use crate::service::wakeups::{WakeupParts, WakeupService};
use crate::state::{AppState, Readiness};
use crate::storage::cache::{self, AccountCache, CachedAccountStore};
use crate::storage::memory::{
    MemoryAccountStore, MemoryInviteStore, MemoryLinkCodeStore, MemoryLinkedDeviceStore,
    MemoryMessageStore, MemoryProfileStore, MemoryPushScheduleStore, MemoryRateLimitStore,
    MemoryReportStore, MemorySecretStore, MemoryUploadStore, MemoryUsernameStore,
};
use crate::storage::objects::ObjectStore;
use crate::storage::objects::directory::DirectoryObjects;
use crate::storage::objects::memory::MemoryObjects;
use crate::storage::objects::s3::{S3Objects, S3Settings};
use crate::storage::postgres::PgStore;
use crate::storage::redis::RedisStore;
use crate::storage::{QueuePolicy, Stores};
use tokio_util::sync::CancellationToken;

/// How long start-up keeps retrying a database that does not answer yet.
const MIGRATION_DEADLINE: Duration = Duration::from_secs(60);

pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin: Server,
    state: web::Data<AppState>,
}

/// Builds the stores the configuration names, migrating Postgres first.
/// With Postgres, account reads go through the account cache, which stays off until
/// [`AccountCache::resume`] (the pub/sub listener calls it once it hears invalidations).
/// Attachments are kept in memory here: the tools and storage tests that call this do not
/// read them (the server's own come from [`objects`]).
pub async fn connect_stores(config: &StoreConfig, queue: QueuePolicy) -> anyhow::Result<Stores> {
    Ok(connect(config, queue, None, Arc::new(MemoryObjects::new()))
        .await?
        .0)
}

/// Where the server keeps attachment bytes: the S3 bucket when one is configured (in either
/// mode), else memory in the embedded mode and the data directory's `objects/` otherwise.
pub fn objects(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(s3) = &config.attachments.s3 {
        let settings = S3Settings {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: s3.secret_access_key.expose().to_owned(),
            path_style: s3.path_style,
        };
        let store =
            S3Objects::new(&settings).map_err(|e| anyhow::anyhow!("the attachment bucket: {e}"))?;
        tracing::info!(endpoint = %s3.endpoint, bucket = %s3.bucket, "attachments in an S3 bucket");
        return Ok(Arc::new(store));
    }
    Ok(match config.stores {
        StoreConfig::Embedded => Arc::new(MemoryObjects::with_clock(config.clock.clone())),
        // Created on the first upload, so a read-only working directory (a container) or a
        // checkout running the tests is not written to by a server that stores nothing.
        StoreConfig::External { .. } => {
            Arc::new(DirectoryObjects::lazy(config.data_dir.join("objects")))
        }
    })
}

/// Lets anyone read avatars straight from the bucket (PROTOCOL.md 13.4: the cdn-0 base is
/// the bucket's URL), as `migrate` and every start do unless `SEALPOST_CDN0_URL` is set
/// (the bucket's policy is replaced). Never fails: a bucket that refuses is logged (point
/// `SEALPOST_CDN0_URL` at `<public URL>/cdn0` then, which serves both).
pub async fn allow_avatar_reads(objects: &dyn ObjectStore) {
    match objects
        .allow_anonymous_reads(crate::domain::profiles::AVATAR_PREFIX)
        .await
    {
        Ok(true) => tracing::info!("anonymous reads of profiles/* allowed by the bucket policy"),
        // The local stores (sealpost serves avatars itself), or a service without policies.
        Ok(false) => tracing::info!(
            "the object store takes no bucket policy: avatars are read through sealpost's \
             /cdn0 (with a bucket, set SEALPOST_CDN0_URL to <public URL>/cdn0)"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not allow anonymous reads of profiles/*: clients cannot read avatars from \
             the bucket; set SEALPOST_CDN0_URL to <public URL>/cdn0 to serve them through sealpost"
        ),
    }
}

/// Where avatars are posted (PROTOCOL.md 13.4): with a bucket, straight to it under forms
/// signed with its credentials (cdn-0 = the bucket's URL); without one, to sealpost's own
/// `/cdn0/` under forms signed with a server secret. `SEALPOST_CDN0_URL` overrides the base.
async fn avatars(
    config: &Config,
    stores: &Stores,
    limiter: RateLimiter,
    bound: std::net::SocketAddr,
) -> anyhow::Result<AvatarService> {
    let (key, base) = match &config.attachments.s3 {
        Some(s3) => {
            let settings = S3Settings {
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: String::new(),
                path_style: s3.path_style,
            };
            let bucket = settings
                .bucket_url()
                .map_err(|e| anyhow::anyhow!("the avatar bucket: {e}"))?;
            let key = crate::domain::post_policy::PolicyKey {
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.expose().to_owned(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
            };
            (key, bucket.as_str().trim_end_matches('/').to_owned())
        }
        None => {
            let secret = stores
                .secrets
                .secret(crate::service::avatars::AVATAR_SECRET)
                .await
                .map_err(|e| anyhow::anyhow!("reading the avatar-form secret: {e}"))?;
            let public = config.attachments.public_base(bound);
            (AvatarService::local_key(&secret), format!("{public}/cdn0"))
        }
    };
    let base = config.attachments.cdn0_url.clone().unwrap_or(base);
    Ok(AvatarService::new(
        stores.objects.clone(),
        limiter,
        key,
        base,
        config.clock.clone(),
    ))
}

/// Unfinished multipart uploads are aborted after this many days (PROTOCOL.md 12.3).
pub const ABORT_INCOMPLETE_UPLOAD_DAYS: u32 = 7;

/// Hands the retention to the object store's lifecycle (PROTOCOL.md 12.3), as `migrate`
/// and every start do. Never fails: a store that cannot is logged, and the sweeper does it.
/// Whether the store took it.
pub async fn apply_lifecycle(objects: &dyn ObjectStore, retention_days: u32) -> bool {
    let applied = objects
        .apply_lifecycle(retention_days, ABORT_INCOMPLETE_UPLOAD_DAYS)
        .await;
    match applied {
        Ok(true) => {
            tracing::info!(
                retention_days,
                abort_incomplete_days = ABORT_INCOMPLETE_UPLOAD_DAYS,
                "attachment lifecycle applied to the bucket"
            );
            return true;
        }
        Ok(false) => tracing::warn!(
            retention_days,
            "the object store has no lifecycle configuration: the sweeper will enforce \
             attachment retention"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            retention_days,
            "could not apply the attachment lifecycle: the sweeper will enforce retention"
        ),
    }
    false
}

/// The stores, and the Redis store itself when there is one (pub/sub uses it too).
async fn connect(
    config: &StoreConfig,
    queue: QueuePolicy,
    metrics: Option<Metrics>,
    objects: Arc<dyn ObjectStore>,
) -> anyhow::Result<(Stores, Option<RedisStore>)> {
    match config {
        StoreConfig::Embedded => {
            tracing::warn!(
                "EMBEDDED MODE: SEALPOST_DATABASE_URL and SEALPOST_REDIS_URL are not set, so \
                 accounts, keys and messages live in this process's memory only. \
                 NOTHING PERSISTS: a restart loses everything. Do not use this in production."
            );
            let accounts = Arc::new(MemoryAccountStore::new());
            let reports = Arc::new(MemoryReportStore::new());
            let stores = Stores {
                accounts: accounts.clone(),
                keys: accounts.clone(),
                push: accounts,
                objects,
                push_schedule: Arc::new(MemoryPushScheduleStore::new()),
                profiles: Arc::new(MemoryProfileStore::new()),
                uploads: Arc::new(MemoryUploadStore::new()),
                usernames: Arc::new(MemoryUsernameStore::new()),
                report_hashes: reports.clone(),
                spam_reports: reports,
                invites: Arc::new(MemoryInviteStore::new()),
                rate_limits: Arc::new(MemoryRateLimitStore::new()),
                messages: Arc::new(MemoryMessageStore::new(queue)),
                link_codes: Arc::new(MemoryLinkCodeStore::new()),
                linked_devices: Arc::new(MemoryLinkedDeviceStore::new()),
                secrets: Arc::new(MemorySecretStore::new()),
                probes: Vec::new(),
                account_cache: None,
            };
            Ok((stores, None))
        }
        StoreConfig::External {
            database_url,
            database_pool_size,
            redis_url,
            redis_key_prefix,
        } => {
            let pg = PgStore::connect(database_url.expose(), *database_pool_size)?;
            migrate_with_retry(&pg).await?;
            let redis = RedisStore::connect(redis_url.expose(), redis_key_prefix, queue)?;
            tracing::info!(database = %database_url, redis = %redis_url, "using external stores");
            let pg = Arc::new(pg);
            let shared = Arc::new(redis.clone());
            let account_cache = AccountCache::new(cache::DEFAULT_TTL);
            let accounts = Arc::new(CachedAccountStore::new(
                pg.clone(),
                account_cache.clone(),
                shared.clone(),
                metrics,
            ));
            let stores = Stores {
                accounts,
                keys: pg.clone(),
                rate_limits: shared.clone(),
                messages: shared.clone(),
                link_codes: shared.clone(),
                linked_devices: shared.clone(),
                secrets: pg.clone(),
                push: pg.clone(),
                profiles: pg.clone(),
                objects,
                push_schedule: shared.clone(),
                uploads: shared.clone(),
                usernames: pg.clone(),
                report_hashes: shared.clone(),
                spam_reports: pg.clone(),
                invites: pg.clone(),
                probes: vec![pg, shared],
                account_cache: Some(account_cache),
            };
            Ok((stores, Some(redis)))
        }
    }
}

async fn migrate_with_retry(pg: &PgStore) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match pg.migrate().await {
            Ok(applied) => {
                tracing::info!(applied, "database schema is up to date");
                return Ok(());
            }
            Err(e) if started.elapsed() < MIGRATION_DEADLINE => {
                tracing::warn!(error = %format!("{e:#}"), "database not ready for migrations; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context("migrating the database")),
        }
    }
}

/// actix's default: one worker per core.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The descriptor budget under this process's open-file limit (raised to the hard limit),
/// logged once; the configured socket maximum when the limit cannot be read.
fn descriptor_budget(config: &Config) -> Budget {
    let workers = config.workers.unwrap_or_else(default_workers);
    let pool = match &config.stores {
        StoreConfig::Embedded => 0,
        StoreConfig::External {
            database_pool_size, ..
        } => *database_pool_size,
    };
    let Some(limit) = crate::descriptors::raise_and_read_limit() else {
        return Budget::new(u64::MAX, workers, pool, config.max_websockets);
    };
    let budget = Budget::new(limit, workers, pool, config.max_websockets);
    tracing::info!(
        descriptor_limit = budget.limit,
        reserved = budget.reserved,
        connections = budget.connections,
        max_websockets = budget.max_websockets,
        "descriptor budget"
    );
    if budget.max_websockets < config.max_websockets {
        tracing::warn!(
            configured = config.max_websockets,
            max_websockets = budget.max_websockets,
            "the open-file limit (ulimit -n) allows fewer sockets than max_websockets"
        );
    }
    budget
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let metrics = Metrics::new();
        // Bound first: the upload form names the public listener's real address when no
        // public URL is configured (port 0 in tests).
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen).map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (admin): {e}", config.admin_listen)
        })?;

        let objects = objects(&config)?;
        // In the background: a bucket that is slow to answer does not hold up the start.
        // Until (unless) the bucket takes the rule, the sweeper expires attachments itself.
        let sweeper_expires = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn({
            let (objects, days) = (objects.clone(), config.attachments.retention_days);
            let sweeper_expires = sweeper_expires.clone();
            // Only when clients read avatars from the bucket (no SEALPOST_CDN0_URL): the
            // policy replaces any the bucket had.
            let public_avatars = config.attachments.cdn0_url.is_none();
            async move {
                if apply_lifecycle(&*objects, days).await {
                    sweeper_expires.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                if public_avatars {
                    allow_avatar_reads(&*objects).await;
                }
            }
        });
        let (stores, redis) = connect(
            &config.stores,
            config.queue_policy(),
            Some(metrics.clone()),
            objects,
        )
        .await?;
        let address_secret = stores
            .secrets
            .secret(crate::limits::ADDRESS_SECRET)
            .await
            .map_err(|e| anyhow::anyhow!("reading the address-hash secret: {e}"))?;
        let limiter = RateLimiter::new(
            &config.rate_limits,
            stores.rate_limits.clone(),
            metrics.clone(),
            address_secret,
        );
        if !config.rate_limits.enabled {
            tracing::warn!("rate limits are OFF (SEALPOST_RATE_LIMITS=off)");
        }
        let passwords = Passwords::per_core();
        let authenticator = {
            let (accounts, limiter, metrics, passwords) = (
                stores.accounts.clone(),
                limiter.clone(),
                metrics.clone(),
                passwords.clone(),
            );
            tokio::task::spawn_blocking(move || {
                Authenticator::new(accounts, limiter, metrics, passwords)
            })
            .await??
        };
        let registry = Registry::new();
        let provisioning = ProvisioningSockets::new();
        let shutdown = CancellationToken::new();
        let notifier: Arc<dyn Notifier> = match (&config.stores, &redis) {
            (StoreConfig::External { redis_url, .. }, Some(redis)) => {
                let notifier = RedisNotifier::new(
                    redis_url.expose(),
                    redis.clone(),
                    registry.clone(),
                    provisioning.clone(),
                    stores.account_cache.clone(),
                    stores.accounts.clone(),
                    metrics.clone(),
                )?;
                tokio::spawn(notifier.clone().listen(shutdown.clone()));
                notifier
            }
            _ => Arc::new(LocalNotifier::new(registry.clone(), provisioning.clone())),
        };
        let providers = push::providers(&config, &stores, &metrics).await?;
        let wakeups = WakeupService::new(WakeupParts {
            push: stores.push.clone(),
            schedule: stores.push_schedule.clone(),
            messages: stores.messages.clone(),
            notifier: notifier.clone(),
            senders: providers.senders,
            clock: config.clock.clone(),
            metrics: metrics.clone(),
        });
        let messages = MessageService::new(
            stores.accounts.clone(),
            stores.messages.clone(),
            notifier.clone(),
            limiter.clone(),
            metrics.clone(),
            wakeups.clone(),
            stores.report_hashes.clone(),
        );
        let invites = InviteService::new(
            stores.invites.clone(),
            config.registration,
            config.clock.clone(),
            metrics.clone(),
        );
        let reports = ReportService::new(
            stores.report_hashes.clone(),
            stores.spam_reports.clone(),
            limiter.clone(),
            metrics.clone(),
            config.clock.clone(),
        );
        let signer = match &config.certificate_dir {
            Some(dir) => crate::certificates::load(dir)
                .map_err(|e| e.context(format!("loading certificates from {}", dir.display())))?,
            None => crate::certificates::ephemeral(),
        };
        let calling =
            CallingService::new(config.turn.clone(), limiter.clone(), config.clock.clone());
        let avatars = avatars(&config, &stores, limiter.clone(), listener.local_addr()?).await?;
        let profiles = ProfileService::new(ProfileParts {
            accounts: stores.accounts.clone(),
            profiles: stores.profiles.clone(),
            avatars,
            limiter: limiter.clone(),
            signer,
            certificate_ttl: config.sender_certificate_ttl,
            metrics: metrics.clone(),
        });
        let usernames = UsernameService::new(
            stores.usernames.clone(),
            limiter.clone(),
            config.clock.clone(),
        );
        let accounts = AccountService::new(AccountParts {
            accounts: stores.accounts.clone(),
            limiter: limiter.clone(),
            authenticator: authenticator.clone(),
            passwords,
            messages: messages.clone(),
            links: crate::service::accounts::LinkStores {
                codes: stores.link_codes.clone(),
                linked: stores.linked_devices.clone(),
            },
            metrics: metrics.clone(),
            profiles: profiles.clone(),
            usernames: usernames.clone(),
            invites: invites.clone(),
        });
        let identity = crate::service::identity::IdentityService::new(
            stores.accounts.clone(),
            limiter.clone(),
            usernames.clone(),
        );
        let devices = crate::service::devices::DeviceService::new(
            stores.accounts.clone(),
            stores.linked_devices.clone(),
            limiter.clone(),
            shutdown.clone(),
        );
        let keys = KeyService::new(
            stores.accounts.clone(),
            stores.keys.clone(),
            limiter.clone(),
            metrics.clone(),
        );
        let presence = PresenceService::new(
            registry.clone(),
            provisioning.clone(),
            notifier.clone(),
            authenticator.clone(),
        );
        let push = PushService::new(PushParts {
            accounts: stores.accounts.clone(),
            push: stores.push.clone(),
            limiter: limiter.clone(),
            allow_private: config.webpush_allow_private,
            wakeups: wakeups.clone(),
            vapid_public_key: providers.vapid_public_key,
        });
        let upload_secret = stores
            .secrets
            .secret(crate::service::attachments::UPLOAD_SECRET)
            .await
            .map_err(|e| anyhow::anyhow!("reading the upload-token secret: {e}"))?;
        let attachments_base = config.attachments.attachments_base(listener.local_addr()?);
        let attachments = AttachmentService::new(
            stores.objects.clone(),
            limiter.clone(),
            upload_secret,
            config.attachments.max_bytes,
            attachments_base.clone(),
            config.clock.clone(),
        )?
        .redirecting(config.attachments.redirect);
        let uploads = UploadService::new(UploadParts {
            objects: stores.objects.clone(),
            uploads: stores.uploads.clone(),
            limiter: limiter.clone(),
            secret: upload_secret,
            clock: config.clock.clone(),
            max_bytes: config.attachments.max_bytes,
            base: attachments_base,
            metrics: metrics.clone(),
            max_streams: config.attachments.max_concurrent_uploads,
        })?;
        let sweeper = AttachmentSweeper {
            objects: stores.objects.clone(),
            uploads: uploads.clone(),
            clock: config.clock.clone(),
            retention: config.attachments.retention(),
            expire_objects: sweeper_expires,
            metrics: metrics.clone(),
        };
        let budget = descriptor_budget(&config);
        let state = web::Data::new(AppState {
            config: config.clone(),
            stores,
            authenticator,
            accounts,
            identity,
            devices,
            attachments,
            uploads,
            usernames,
            calling,
            reports,
            invites,
            keys,
            messages,
            profiles,
            presence,
            push,
            wakeups,
            metrics,
            readiness: Readiness::default(),
            registry,
            provisioning,
            notifier,
            sockets: crate::limits::sockets::SocketSlots::new(
                budget.max_websockets,
                config.max_websockets_per_client,
            ),
            shutdown,
        });

        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();

        let app_state = state.clone();
        // Behind a proxy every connection comes from the proxy: no per-peer cap then.
        let per_peer = match config.trust_forwarded_for {
            true => 0,
            false => config.max_connections_per_client,
        };
        let connections = crate::limits::clients::PerClient::new(per_peer);
        let workers = config.workers.unwrap_or_else(default_workers);
        // The wake-up worker runs on the first HTTP worker thread, not on this one: the
        // Redis connection is made lazily by its first user and its driver task stays on
        // that user's thread, so a first user here would put every request's Redis reply
        // through one more thread (measured: 13% fewer `pairs` messages/s).
        let wakeup_worker = Arc::new(std::sync::Once::new());
        let sweep_interval = config.attachments.sweep_interval;
        let server = HttpServer::new(move || {
            wakeup_worker.call_once(|| {
                actix_web::rt::spawn(app_state.wakeups.clone().run(app_state.shutdown.clone()));
                actix_web::rt::spawn(
                    sweeper
                        .clone()
                        .run(sweep_interval, app_state.shutdown.clone()),
                );
            });
            crate::api::app(app_state.clone()).app_data(crate::ws::tunnel::per_worker(
                app_state.clone(),
                crate::api::tunnel_app,
            ))
        })
        .on_connect(move |connection, data| {
            let tcp = connection.downcast_ref::<actix_web::rt::net::TcpStream>();
            if let Some(tcp) = tcp {
                use std::os::fd::AsRawFd;
                data.insert(crate::api::attachments::ConnectionSocket(tcp.as_raw_fd()));
            }
            let peer = tcp.and_then(|tcp| tcp.peer_addr().ok());
            let peer = peer.map(|a| a.ip()).unwrap_or([0, 0, 0, 0].into());
            data.insert(ConnectionAdmission::admit(&connections, peer));
        })
        .listen(listener)?
        .disable_signals()
        .workers(workers)
        // The connections the descriptor budget allows, split between the workers, so the
        // public side can never take the descriptors the stores and the admin listener need.
        .max_connections((budget.connections / workers).max(1))
        .client_request_timeout(config.request_head_timeout)
        .shutdown_timeout(config.shutdown_timeout.as_secs());
        let server = server.run();

        let admin_state = state.clone();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(admin_state.clone())
                .configure(crate::api::admin::configure)
        })
        .listen(admin_listener)?
        .workers(1)
        .max_connections(crate::descriptors::ADMIN_CONNECTIONS)
        .disable_signals()
        .shutdown_timeout(1)
        .run();

        state.readiness.set_listening();
        tracing::info!(
            api = %format!("{}:{port}", config.listen.ip()),
            admin = %format!("{}:{admin_port}", config.admin_listen.ip()),
            "sealpost is listening"
        );
        Ok(Self {
            port,
            admin_port,
            server,
            admin,
            state,
        })
    }

    /// What the descriptor limit allowed this process (see `descriptors`).
    pub fn max_websockets(&self) -> usize {
        self.state.sockets.max()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The stores this application serves from (tests read what a request stored).
    pub fn stores(&self) -> Stores {
        self.state.stores.clone()
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves until `shutdown` resolves, then: readiness goes 503, the API stops accepting
    /// and finishes in-flight requests (up to the configured timeout), and this returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let server_handle = self.server.handle();
        let admin_handle = self.admin.handle();
        let server = tokio::spawn(self.server);
        let admin = tokio::spawn(self.admin);
        shutdown.await;
        tracing::info!("shutting down: closing sockets, draining in-flight requests");
        self.state.readiness.set_shutting_down();
        self.state.shutdown.cancel();
        server_handle.stop(true).await;
        admin_handle.stop(true).await;
        server.await??;
        admin.await??;
        tracing::info!("stopped");
        Ok(())
    }
}
