//! What every handler can reach: the services, the authenticator, metrics and readiness.
//! Built once by `startup`; handlers get it as `web::Data<AppState>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::delivery::{Notifier, ProvisioningSockets, Registry};
use crate::metrics::Metrics;
use crate::service::accounts::AccountService;
use crate::service::attachments::AttachmentService;
use crate::service::calling::CallingService;
use crate::service::invites::InviteService;
use crate::service::keys::KeyService;
use crate::service::messages::MessageService;
use crate::service::presence::PresenceService;
use crate::service::profiles::ProfileService;
use crate::service::push::PushService;
use crate::service::reports::ReportService;
use crate::service::uploads::UploadService;
use crate::service::usernames::UsernameService;
use crate::service::wakeups::WakeupService;
use crate::storage::Stores;

pub struct AppState {
    pub config: Arc<Config>,
    pub stores: Stores,
    pub authenticator: Authenticator,
    pub accounts: AccountService,
    /// The account identity (`whoami`) and the existence check.
    pub identity: crate::service::identity::IdentityService,
    /// The device list, renaming, the wait for a linked device.
    pub devices: crate::service::devices::DeviceService,
    /// Attachment upload forms.
    pub attachments: AttachmentService,
    /// Resumable attachment uploads (the TUS endpoint).
    pub uploads: UploadService,
    /// Usernames and username links.
    pub usernames: UsernameService,
    /// TURN relay credentials for calls.
    pub calling: CallingService,
    /// Spam reports.
    pub reports: ReportService,
    /// Who may register, and invite tokens.
    pub invites: InviteService,
    pub keys: KeyService,
    pub messages: MessageService,
    pub profiles: ProfileService,
    /// Which pod holds which socket (device and provisioning sockets alike).
    pub presence: PresenceService,
    /// Push registrations (tokens and WebPush subscriptions).
    pub push: PushService,
    /// When sleeping devices are woken, and the worker sending what is scheduled.
    pub wakeups: WakeupService,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// This pod's authenticated sockets.
    pub registry: Arc<Registry>,
    /// This pod's provisioning sockets (devices waiting to be linked).
    pub provisioning: Arc<ProvisioningSockets>,
    pub notifier: Arc<dyn Notifier>,
    /// This process's open sockets, against `max_websockets`.
    pub sockets: Arc<crate::limits::sockets::SocketSlots>,
    /// Cancelled when shutdown begins: sockets close with 1001, workers stop.
    pub shutdown: CancellationToken,
}

/// What `/health/ready` knows besides the stores: whether the listeners are bound and
/// whether shutdown has begun.
#[derive(Default)]
pub struct Readiness {
    listening: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Listening and not shutting down.
    pub fn serving(&self) -> bool {
        self.listening.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}
