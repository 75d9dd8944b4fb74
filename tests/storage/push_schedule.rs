//! `PushScheduleStore` on every backend (PROTOCOL.md 11.4, 11.6): a background push at most
//! once per device per interval and never moved once scheduled, a delayed one replaced by
//! a later schedule, both cancelled together, due entries taken earliest first by exactly
//! one caller however many race, and a job claimed by one caller per TTL. Redis keeps it
//! all under the configured prefix.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sealpost::domain::ids::{Aci, DeviceId};
use sealpost::storage::{DuePush, PushScheduleStore, ScheduledKind};

use super::support::stores;
use crate::common::Backend;

/// PROTOCOL.md 11.6's 20 minutes.
const INTERVAL: i64 = 20 * 60 * 1000;
/// A time far from the real clock: the store must use only the times it is given.
const T0: i64 = 1_000_000_000;

fn device(id: u32) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn due(aci: Aci, id: u32, kind: ScheduledKind) -> DuePush {
    DuePush {
        aci,
        device: device(id),
        kind,
    }
}

async fn a_background_push_is_due_at_once_unless_one_went_out_within_the_interval(
    backend: Backend,
) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let aci = Aci::random();
    let primary = DeviceId::PRIMARY;
    assert_eq!(
        schedule
            .schedule_background(aci, primary, T0, INTERVAL)
            .await
            .unwrap(),
        T0,
        "none went out: due now"
    );
    assert_eq!(
        schedule.take_due(T0, 10, INTERVAL).await.unwrap(),
        [due(aci, 1, ScheduledKind::Background)]
    );
    // One went out at T0: the next waits for the interval to pass.
    let later = T0 + 5 * 60 * 1000;
    assert_eq!(
        schedule
            .schedule_background(aci, primary, later, INTERVAL)
            .await
            .unwrap(),
        T0 + INTERVAL
    );
    assert_eq!(schedule.take_due(later, 10, INTERVAL).await.unwrap(), []);
    assert_eq!(
        schedule
            .take_due(T0 + INTERVAL, 10, INTERVAL)
            .await
            .unwrap(),
        [due(aci, 1, ScheduledKind::Background)]
    );
    // Once the interval since the last one has passed, due at once again.
    let much_later = T0 + 3 * INTERVAL;
    assert_eq!(
        schedule
            .schedule_background(aci, primary, much_later, INTERVAL)
            .await
            .unwrap(),
        much_later
    );
    // Another device of the same account has its own interval.
    assert_eq!(
        schedule
            .schedule_background(aci, device(2), T0 + INTERVAL + 1, INTERVAL)
            .await
            .unwrap(),
        T0 + INTERVAL + 1
    );
}

async fn a_scheduled_background_push_is_never_moved(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let aci = Aci::random();
    let primary = DeviceId::PRIMARY;
    schedule
        .schedule_background(aci, primary, T0, INTERVAL)
        .await
        .unwrap();
    // Earlier or later, a second schedule keeps the first time.
    for now in [T0 + 1000, T0 - 1000] {
        assert_eq!(
            schedule
                .schedule_background(aci, primary, now, INTERVAL)
                .await
                .unwrap(),
            T0
        );
    }
    assert_eq!(schedule.take_due(T0 - 1, 10, INTERVAL).await.unwrap(), []);
    assert_eq!(schedule.take_due(T0, 10, INTERVAL).await.unwrap().len(), 1);
}

async fn a_delayed_push_is_replaced_by_a_later_schedule(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let aci = Aci::random();
    let primary = DeviceId::PRIMARY;
    schedule.schedule_delayed(aci, primary, T0).await.unwrap();
    schedule
        .schedule_delayed(aci, primary, T0 + 60_000)
        .await
        .unwrap();
    assert_eq!(
        schedule.take_due(T0 + 59_999, 10, INTERVAL).await.unwrap(),
        [],
        "the first time was replaced"
    );
    assert_eq!(
        schedule.take_due(T0 + 60_000, 10, INTERVAL).await.unwrap(),
        [due(aci, 1, ScheduledKind::Delayed)],
        "one pending per device"
    );
    // Taking a delayed push is not a background push: the next background one is due now.
    assert_eq!(
        schedule
            .schedule_background(aci, primary, T0 + 60_000, INTERVAL)
            .await
            .unwrap(),
        T0 + 60_000
    );
}

async fn cancelling_removes_both_kinds_and_says_whether_any_was_scheduled(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let (aci, other) = (Aci::random(), Aci::random());
    let primary = DeviceId::PRIMARY;
    assert!(!schedule.cancel(aci, primary).await.unwrap());
    schedule
        .schedule_background(aci, primary, T0, INTERVAL)
        .await
        .unwrap();
    schedule.schedule_delayed(aci, primary, T0).await.unwrap();
    schedule.schedule_delayed(other, primary, T0).await.unwrap();
    schedule.schedule_delayed(aci, device(2), T0).await.unwrap();
    assert!(schedule.cancel(aci, primary).await.unwrap());
    assert!(
        !schedule.cancel(aci, primary).await.unwrap(),
        "nothing left"
    );
    // Only a delayed one scheduled: still reported.
    assert!(schedule.cancel(aci, device(2)).await.unwrap());
    assert_eq!(
        schedule.take_due(T0, 10, INTERVAL).await.unwrap(),
        [due(other, 1, ScheduledKind::Delayed)],
        "other devices keep theirs"
    );
}

async fn due_pushes_are_taken_earliest_first_up_to_the_limit(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let aci = Aci::random();
    // Interleaved kinds and times, scheduled out of order.
    schedule
        .schedule_delayed(aci, device(3), T0 + 30)
        .await
        .unwrap();
    schedule
        .schedule_background(aci, device(1), T0 + 10, INTERVAL)
        .await
        .unwrap();
    schedule
        .schedule_background(aci, device(4), T0 + 40, INTERVAL)
        .await
        .unwrap();
    schedule
        .schedule_delayed(aci, device(2), T0 + 20)
        .await
        .unwrap();
    schedule
        .schedule_delayed(aci, device(5), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(schedule.take_due(T0 + 9, 10, INTERVAL).await.unwrap(), []);
    assert_eq!(
        schedule.take_due(T0 + 40, 3, INTERVAL).await.unwrap(),
        [
            due(aci, 1, ScheduledKind::Background),
            due(aci, 2, ScheduledKind::Delayed),
            due(aci, 3, ScheduledKind::Delayed),
        ]
    );
    assert_eq!(schedule.take_due(T0 + 40, 0, INTERVAL).await.unwrap(), []);
    assert_eq!(
        schedule.take_due(T0 + 40, 10, INTERVAL).await.unwrap(),
        [due(aci, 4, ScheduledKind::Background)],
        "what is not due yet stays"
    );
    assert_eq!(
        schedule.take_due(T0 + 5000, 10, INTERVAL).await.unwrap(),
        [due(aci, 5, ScheduledKind::Delayed)]
    );
    assert_eq!(
        schedule.take_due(T0 + 5000, 10, INTERVAL).await.unwrap(),
        []
    );
    // Taking device 4's background push at T0 + 40 recorded it, with the taker's time.
    assert_eq!(
        schedule
            .schedule_background(aci, device(4), T0 + 100, INTERVAL)
            .await
            .unwrap(),
        T0 + 40 + INTERVAL
    );
}

/// A due push as a set member (`DuePush` is not `Hash`).
fn key(push: DuePush) -> (Aci, DeviceId, bool) {
    (
        push.aci,
        push.device,
        push.kind == ScheduledKind::Background,
    )
}

/// 300 entries, 8 pods taking at once: each entry is handed out exactly once.
async fn racing_takers_get_every_due_push_exactly_once(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule: Arc<dyn PushScheduleStore> = stores.push_schedule.clone();
    let mut scheduled = HashSet::new();
    for i in 0..150 {
        let aci = Aci::random();
        schedule
            .schedule_background(aci, DeviceId::PRIMARY, T0 + i, INTERVAL)
            .await
            .unwrap();
        schedule
            .schedule_delayed(aci, device(2), T0 + 150 - i)
            .await
            .unwrap();
        scheduled.insert(key(due(aci, 1, ScheduledKind::Background)));
        scheduled.insert(key(due(aci, 2, ScheduledKind::Delayed)));
    }
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let schedule = schedule.clone();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let batch = schedule.take_due(T0 + 1000, 7, INTERVAL).await.unwrap();
                    if batch.is_empty() {
                        return taken;
                    }
                    taken.extend(batch);
                }
            })
        })
        .collect();
    let mut taken = Vec::new();
    for taker in takers {
        taken.extend(taker.await.unwrap());
    }
    assert_eq!(taken.len(), 300, "no entry handed out twice");
    assert_eq!(
        taken.into_iter().map(key).collect::<HashSet<_>>(),
        scheduled
    );
}

async fn a_job_is_claimed_by_one_caller_until_its_ttl_passes(backend: Backend) {
    let (stores, _test) = stores(backend).await;
    let schedule = &stores.push_schedule;
    let ttl_ms = 300;
    let claims = futures_util::future::join_all(
        (0..8).map(|_| schedule.claim_job("idle-reminders:2026-12-03", ttl_ms)),
    )
    .await;
    assert_eq!(
        claims.into_iter().filter(|c| *c.as_ref().unwrap()).count(),
        1,
        "one winner"
    );
    assert!(
        !schedule
            .claim_job("idle-reminders:2026-12-03", ttl_ms)
            .await
            .unwrap()
    );
    assert!(
        schedule
            .claim_job("idle-reminders:2026-12-04", ttl_ms)
            .await
            .unwrap(),
        "another job is its own"
    );
    // A timing test: the TTL is what is checked.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        schedule
            .claim_job("idle-reminders:2026-12-03", ttl_ms)
            .await
            .unwrap()
    );
}

on_both_backends!(
    a_background_push_is_due_at_once_unless_one_went_out_within_the_interval,
    a_scheduled_background_push_is_never_moved,
    a_delayed_push_is_replaced_by_a_later_schedule,
    cancelling_removes_both_kinds_and_says_whether_any_was_scheduled,
    due_pushes_are_taken_earliest_first_up_to_the_limit,
    racing_takers_get_every_due_push_exactly_once,
    a_job_is_claimed_by_one_caller_until_its_ttl_passes,
);

/// Every key lives under the configured prefix (so the harness's prefix cleanup removes
/// them); taken entries leave nothing behind but the last background push, which expires
/// after the interval.
#[tokio::test]
async fn the_redis_schedule_lives_under_the_prefix_and_leaves_only_expiring_keys() {
    let (stores, test) = stores(Backend::External).await;
    let redis = test.redis.as_ref().unwrap();
    let schedule = &stores.push_schedule;
    let aci = Aci::random();
    let primary = DeviceId::PRIMARY;
    schedule
        .schedule_background(aci, primary, T0, INTERVAL)
        .await
        .unwrap();
    schedule.schedule_delayed(aci, primary, T0).await.unwrap();
    schedule.claim_job("daily", 60_000).await.unwrap();
    let base = format!("{}push:{{schedule}}:", redis.prefix);
    let mut keys = redis.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{}job:daily", redis.prefix),
            format!("{base}background"),
            format!("{base}delayed"),
        ]
    );
    assert_eq!(schedule.take_due(T0, 10, INTERVAL).await.unwrap().len(), 2);
    let last = format!("{base}last:{aci}:1");
    let mut keys = redis.keys();
    keys.sort();
    assert_eq!(keys, [format!("{}job:daily", redis.prefix), last.clone()]);
    let client = redis::Client::open(crate::common::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let (value, pttl): (i64, i64) = redis::pipe()
        .cmd("GET")
        .arg(&last)
        .cmd("PTTL")
        .arg(&last)
        .query(&mut conn)
        .unwrap();
    assert_eq!(value, T0, "the taker's time, not Redis's clock");
    assert!(0 < pttl && pttl <= INTERVAL, "expires after the interval");
}
