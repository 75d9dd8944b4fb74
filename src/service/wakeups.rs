//! When a sleeping device is woken (PROTOCOL.md 11.4, 11.5, 11.8): an urgent push at once
//! for a message queued while no socket of the device was open on any pod, a background
//! push at most once per 20 minutes for the rest, an urgent push a minute after a socket
//! closed with messages still queued, daily idle reminders, and none of it while the device
//! is draining. Schedules live in the shared store, so any pod sends what is due and none
//! sends it twice. Nothing here ever makes a request wait: every entry point returns at
//! once and the work runs on tasks, at most [`MAX_IN_FLIGHT`] pushes at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::delivery::{DeviceEvent, Notifier};
use crate::domain::clock::Clock;
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::push::PushRegistration;
use crate::metrics::Metrics;
use crate::push::Notification;
use crate::push::senders::{Senders, Sent};
use crate::storage::{MessageStore, PushScheduleStore, PushStore, ScheduledKind};

/// A device gets at most one background push per this long (11.4 step 2).
pub const BACKGROUND_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// An urgent push this long after a socket closed with messages queued (11.4 step 3).
pub const CLOSE_DELAY: Duration = Duration::from_secs(60);
/// Pushes one pod has in flight at most; an urgent push past it is scheduled instead (the
/// worker sends it when there is room), so a flood of sends cannot spawn without bound.
pub const MAX_IN_FLIGHT: usize = 256;
/// How often a pod looks for scheduled pushes that are due.
pub const POLL: Duration = Duration::from_secs(1);
/// Due pushes taken per look.
const TAKE_BATCH: usize = 100;
/// The local hour the daily idle reminders go out (11.8: 14:00 server time).
pub const IDLE_REMINDER_HOUR: u32 = 14;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct WakeupService(Arc<Inner>);

struct Inner {
    push: Arc<dyn PushStore>,
    schedule: Arc<dyn PushScheduleStore>,
    messages: Arc<dyn MessageStore>,
    notifier: Arc<dyn Notifier>,
    senders: Senders,
    clock: Clock,
    metrics: Metrics,
    in_flight: Arc<Semaphore>,
}

/// The stores and providers wake-ups use.
pub struct WakeupParts {
    pub push: Arc<dyn PushStore>,
    pub schedule: Arc<dyn PushScheduleStore>,
    pub messages: Arc<dyn MessageStore>,
    pub notifier: Arc<dyn Notifier>,
    pub senders: Senders,
    pub clock: Clock,
    pub metrics: Metrics,
}

impl WakeupService {
    pub fn new(parts: WakeupParts) -> Self {
        Self(Arc::new(Inner {
            push: parts.push,
            schedule: parts.schedule,
            messages: parts.messages,
            notifier: parts.notifier,
            senders: parts.senders,
            clock: parts.clock,
            metrics: parts.metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }))
    }

    /// 11.4 steps 1-2: a non-ephemeral message was queued for a device no pod holds a socket
    /// for. Urgent: a push now; otherwise a background push, coalesced.
    pub fn message_queued(&self, aci: Aci, device: DeviceId, urgent: bool) {
        let this = self.clone();
        if !urgent {
            spawn(async move { this.schedule_background(aci, device).await });
            return;
        }
        match self.0.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                spawn(async move {
                    this.send_now(aci, device, Notification::NewMessage { urgent: true })
                        .await;
                    drop(permit);
                });
            }
            Err(_) => {
                spawn(async move {
                    let now = this.0.clock.now_ms();
                    this.schedule_delayed(aci, device, now, "delayed").await;
                });
            }
        }
    }

    /// 11.4 step 3: an authenticated socket closed; if its queue still holds messages, an
    /// urgent push in a minute (replacing an earlier one).
    pub fn socket_closed(&self, aci: Aci, device: DeviceId) {
        let this = self.clone();
        spawn(async move {
            match this.0.messages.read(aci, device, 0, 1).await {
                Ok(queued) if !queued.is_empty() => {
                    let at = this.0.clock.now_ms() + CLOSE_DELAY.as_millis() as i64;
                    this.schedule_delayed(aci, device, at, "delayed").await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not check a closed socket's queue"),
            }
        });
    }

    /// 11.4 step 4: the device's socket started draining its queue: nothing scheduled for
    /// it is needed any more.
    pub fn draining(&self, aci: Aci, device: DeviceId) {
        let this = self.clone();
        spawn(async move {
            match this.0.schedule.cancel(aci, device).await {
                Ok(true) => this.0.metrics.push_cancelled.inc(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not cancel scheduled pushes"),
            }
        });
    }

    /// 11.8: a fresh WebPush subscription gets its activation push right away.
    pub fn webpush_subscribed(&self, aci: Aci, device: DeviceId) {
        let this = self.clone();
        spawn(async move {
            let Ok(Some(stored)) = this.0.push.push(aci, device).await else {
                return;
            };
            if let PushRegistration::WebPush(registration) = &stored.registration
                && !registration.active
            {
                let _permit = this.0.in_flight.clone().acquire_owned().await;
                let notification = Notification::WebPushActivation(registration.activation);
                this.deliver(aci, device, &stored, notification).await;
            }
        });
    }

    /// Every pod's worker: sends the scheduled pushes that are due (each taken by exactly one
    /// pod) and, once a day, schedules the idle reminders. Stops with `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reminded_day = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            self.send_due().await;
            let now = self.0.clock.now_ms();
            let (day, hour) = local_day_and_hour(now);
            if hour >= IDLE_REMINDER_HOUR && reminded_day != Some(day) {
                reminded_day = Some(day);
                let job = format!("idle-reminders:{day}");
                match self.0.schedule.claim_job(&job, DAY_MS).await {
                    Ok(true) => self.remind_idle(now).await,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim the idle-reminder job");
                        reminded_day = None;
                    }
                }
            }
        }
    }

    async fn send_due(&self) {
        loop {
            let now = self.0.clock.now_ms();
            let due = match self
                .0
                .schedule
                .take_due(now, TAKE_BATCH, BACKGROUND_INTERVAL.as_millis() as i64)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read scheduled pushes");
                    return;
                }
            };
            let more = due.len() == TAKE_BATCH;
            for push in due {
                let Ok(permit) = self.0.in_flight.clone().acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                spawn(async move {
                    // A socket opened since (on any pod) drains the queue itself.
                    if !this.is_online(push.aci, push.device).await {
                        let urgent = push.kind == ScheduledKind::Delayed;
                        this.send_now(push.aci, push.device, Notification::NewMessage { urgent })
                            .await;
                    }
                    drop(permit);
                });
            }
            if !more {
                return;
            }
        }
    }

    /// 11.4 step 5 as 11.8 has it: devices with a push registration idle 3-30 days with
    /// messages queued, or 60-75 days with none (so a healthy install is not pruned), get
    /// one urgent push.
    async fn remind_idle(&self, now: i64) {
        let ranges = [(3, 30, true), (60, 75, false)];
        for (from_days, until_days, with_messages) in ranges {
            let (from, until) = (now - until_days * DAY_MS, now - from_days * DAY_MS);
            let mut after = None;
            loop {
                let page = match self.0.push.idle_devices(from, until, after, 500).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list idle devices");
                        break;
                    }
                };
                after = page.last().copied();
                for (aci, device) in &page {
                    let queued = match self.0.messages.read(*aci, *device, 0, 1).await {
                        Ok(queued) => !queued.is_empty(),
                        Err(_) => continue,
                    };
                    if queued == with_messages {
                        self.schedule_delayed(*aci, *device, now, "idle").await;
                    }
                }
                if page.len() < 500 {
                    break;
                }
            }
        }
    }

    async fn schedule_background(&self, aci: Aci, device: DeviceId) {
        let now = self.0.clock.now_ms();
        match self
            .0
            .schedule
            .schedule_background(aci, device, now, BACKGROUND_INTERVAL.as_millis() as i64)
            .await
        {
            Ok(_) => self
                .0
                .metrics
                .push_scheduled
                .with_label_values(&["background"])
                .inc(),
            Err(e) => tracing::warn!(error = %e, "could not schedule a background push"),
        }
    }

    async fn schedule_delayed(&self, aci: Aci, device: DeviceId, at: i64, label: &str) {
        match self.0.schedule.schedule_delayed(aci, device, at).await {
            Ok(()) => self
                .0
                .metrics
                .push_scheduled
                .with_label_values(&[label])
                .inc(),
            Err(e) => tracing::warn!(error = %e, "could not schedule a push"),
        }
    }

    /// Whether a pod holds a socket for the device now (the event only makes that socket
    /// look at its queue again).
    async fn is_online(&self, aci: Aci, device: DeviceId) -> bool {
        self.0
            .notifier
            .publish(aci, device, DeviceEvent::MessageAvailable)
            .await
            .unwrap_or(false)
    }

    async fn send_now(&self, aci: Aci, device: DeviceId, notification: Notification) {
        let stored = match self.0.push.push(aci, device).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                self.0
                    .metrics
                    .push_skipped
                    .with_label_values(&["no_registration"])
                    .inc();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read a push registration");
                return;
            }
        };
        if let PushRegistration::WebPush(registration) = &stored.registration
            && !registration.active
        {
            self.0
                .metrics
                .push_skipped
                .with_label_values(&["not_activated"])
                .inc();
            return;
        }
        self.deliver(aci, device, &stored, notification).await;
    }

    /// Sends, and forgets a token the provider no longer knows (11.5): only if the device
    /// still holds that same registration, and for APNs only if the token was not updated
    /// after APNs invalidated it.
    async fn deliver(
        &self,
        aci: Aci,
        device: DeviceId,
        stored: &crate::storage::StoredPush,
        notification: Notification,
    ) {
        if let Sent::Unregistered { invalidated_ms } = self
            .0
            .senders
            .send(&stored.registration, notification)
            .await
            && invalidated_ms.is_none_or(|at| at > stored.updated_ms)
        {
            if let Err(e) = self
                .0
                .push
                .clear_push_if(aci, device, &stored.registration)
                .await
            {
                tracing::warn!(error = %e, "could not clear an unregistered push token");
            }
            let _ = self.0.schedule.cancel(aci, device).await;
        }
    }
}

/// Runs `task` on the current runtime; a caller outside any (a socket dropped while its
/// runtime is torn down) has nothing to wake and is ignored rather than panicking.
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// The local calendar day (a number that changes at local midnight) and hour of `ms`, in the
/// server's time zone (`TZ`, else the system's).
fn local_day_and_hour(ms: i64) -> (i64, u32) {
    let seconds = (ms / 1000) as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` it is given and reads `seconds`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let converted = unsafe { !libc::localtime_r(&seconds, &mut tm).is_null() };
    if !converted {
        return (ms / DAY_MS, ((ms % DAY_MS) / 3_600_000) as u32);
    }
    let day = i64::from(tm.tm_year) * 1000 + i64::from(tm.tm_yday);
    (day, tm.tm_hour.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_day_changes_with_the_date_and_the_hour_is_in_range() {
        let (day, hour) = local_day_and_hour(1_764_770_400_000);
        let (next, _) = local_day_and_hour(1_764_770_400_000 + DAY_MS);
        assert_ne!(day, next);
        assert!(hour < 24);
    }
}
