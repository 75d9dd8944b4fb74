//! Push registrations in Postgres: one row per device (`push_registrations`), replaced in
//! one statement, removed with the device by its foreign key.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{PgStore, corrupt, pg_error};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::push::{
    PushKind, PushRegistration, PushToken, WebPushRegistration, WebPushSubscription,
};
use crate::storage::{PushStore, StorageResult, StoredPush};

/// The columns of a registration besides its device: kind, token, endpoint, public_key,
/// auth, activation, active.
type Columns<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Option<Uuid>,
    bool,
);

fn columns(registration: &PushRegistration) -> Columns<'_> {
    let kind = registration.kind().label();
    match registration {
        PushRegistration::Fcm(token) | PushRegistration::Apns(token) => {
            (kind, Some(token.as_str()), None, None, None, None, false)
        }
        PushRegistration::WebPush(web) => (
            kind,
            None,
            Some(web.subscription.endpoint()),
            Some(web.subscription.public_key().as_slice()),
            Some(web.subscription.auth().as_slice()),
            Some(web.activation),
            web.active,
        ),
    }
}

fn read(row: &Row) -> StorageResult<StoredPush> {
    let kind: &str = row.get("kind");
    let token = || {
        let token: Option<&str> = row.get("token");
        PushToken::parse("token", token.unwrap_or_default()).map_err(|e| corrupt("push token", e))
    };
    let registration = match kind {
        "fcm" => PushRegistration::Fcm(token()?),
        "apns" => PushRegistration::Apns(token()?),
        "webpush" => {
            let endpoint: Option<&str> = row.get("endpoint");
            let public_key: Option<&[u8]> = row.get("public_key");
            let auth: Option<&[u8]> = row.get("auth");
            let subscription = WebPushSubscription::from_parts(
                endpoint.unwrap_or_default(),
                public_key.unwrap_or_default(),
                auth.unwrap_or_default(),
            )
            .map_err(|e| corrupt("WebPush subscription", e))?;
            let activation: Option<Uuid> = row.get("activation");
            PushRegistration::WebPush(WebPushRegistration {
                subscription,
                activation: activation
                    .ok_or_else(|| corrupt("WebPush subscription", "no activation token"))?,
                active: row.get("active"),
            })
        }
        other => return Err(corrupt("push registration kind", other)),
    };
    Ok(StoredPush {
        registration,
        updated_ms: row.get("updated_ms"),
    })
}

/// Stores a new device's registration inside the transaction that creates the device.
pub(super) async fn insert_in(
    tx: &deadpool_postgres::Transaction<'_>,
    aci: Aci,
    id: DeviceId,
    registration: &PushRegistration,
    now_ms: i64,
) -> StorageResult<()> {
    let (kind, token, endpoint, public_key, auth, activation, active) = columns(registration);
    tx.execute(
        "INSERT INTO push_registrations \
         (aci, device_id, kind, token, endpoint, public_key, auth, activation, active, \
          updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &aci.uuid(),
            &i16::from(id.get()),
            &kind,
            &token,
            &endpoint,
            &public_key,
            &auth,
            &activation,
            &active,
            &now_ms,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl PushStore for PgStore {
    async fn set_push(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let client = self.client().await?;
        let (kind, token, endpoint, public_key, auth, activation, active) = columns(registration);
        // Only for an existing device: the SELECT finds no row otherwise.
        let written = client
            .execute(
                "INSERT INTO push_registrations \
                 (aci, device_id, kind, token, endpoint, public_key, auth, activation, active, \
                  updated_ms) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM devices \
                 WHERE aci = $1 AND device_id = $2 \
                 ON CONFLICT (aci, device_id) DO UPDATE SET kind = EXCLUDED.kind, \
                 token = EXCLUDED.token, endpoint = EXCLUDED.endpoint, \
                 public_key = EXCLUDED.public_key, auth = EXCLUDED.auth, \
                 activation = EXCLUDED.activation, active = EXCLUDED.active, \
                 updated_ms = EXCLUDED.updated_ms",
                &[
                    &aci.uuid(),
                    &i16::from(id.get()),
                    &kind,
                    &token,
                    &endpoint,
                    &public_key,
                    &auth,
                    &activation,
                    &active,
                    &now_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(written == 1)
    }

    async fn clear_push(&self, aci: Aci, id: DeviceId, kind: PushKind) -> StorageResult<bool> {
        let client = self.client().await?;
        let removed = client
            .execute(
                "DELETE FROM push_registrations WHERE aci = $1 AND device_id = $2 AND kind = $3",
                &[&aci.uuid(), &i16::from(id.get()), &kind.label()],
            )
            .await
            .map_err(pg_error)?;
        Ok(removed == 1)
    }

    async fn clear_push_if(
        &self,
        aci: Aci,
        id: DeviceId,
        registration: &PushRegistration,
    ) -> StorageResult<bool> {
        let client = self.client().await?;
        let (kind, token, endpoint, public_key, auth, activation, _) = columns(registration);
        let removed = client
            .execute(
                "DELETE FROM push_registrations WHERE aci = $1 AND device_id = $2 \
                 AND kind = $3 AND token IS NOT DISTINCT FROM $4 \
                 AND endpoint IS NOT DISTINCT FROM $5 AND public_key IS NOT DISTINCT FROM $6 \
                 AND auth IS NOT DISTINCT FROM $7 AND activation IS NOT DISTINCT FROM $8",
                &[
                    &aci.uuid(),
                    &i16::from(id.get()),
                    &kind,
                    &token,
                    &endpoint,
                    &public_key,
                    &auth,
                    &activation,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(removed == 1)
    }

    async fn activate_webpush(&self, aci: Aci, id: DeviceId, token: Uuid) -> StorageResult<bool> {
        let client = self.client().await?;
        let activated = client
            .execute(
                "UPDATE push_registrations SET active = TRUE WHERE aci = $1 AND device_id = $2 \
                 AND kind = 'webpush' AND activation = $3",
                &[&aci.uuid(), &i16::from(id.get()), &token],
            )
            .await
            .map_err(pg_error)?;
        Ok(activated == 1)
    }

    async fn push(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<StoredPush>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT kind, token, endpoint, public_key, auth, activation, active, updated_ms \
                 FROM push_registrations WHERE aci = $1 AND device_id = $2",
                &[&aci.uuid(), &i16::from(id.get())],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(read).transpose()
    }

    async fn idle_devices(
        &self,
        seen_from_day_ms: i64,
        seen_until_day_ms: i64,
        after: Option<(Aci, DeviceId)>,
        limit: usize,
    ) -> StorageResult<Vec<(Aci, DeviceId)>> {
        let client = self.client().await?;
        // Merges both tables' primary keys from the keyset on: no other index is needed, and
        // the daily job's pages together read each row once. The keyset is stated for both
        // tables because Postgres does not carry a row comparison across the join: without
        // it, every page would scan devices from the start.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.map(|(aci, id)| (aci.uuid(), i16::from(id.get())));
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&seen_from_day_ms, &seen_until_day_ms, &limit];
        let keyset = match &after {
            Some((aci, id)) => {
                params.extend([aci as &(dyn ToSql + Sync), id]);
                "AND (p.aci, p.device_id) > ($4, $5) AND (d.aci, d.device_id) > ($4, $5) "
            }
            None => "",
        };
        let stmt = client
            .prepare_cached(&format!(
                "SELECT p.aci, p.device_id FROM push_registrations p \
                 JOIN devices d ON d.aci = p.aci AND d.device_id = p.device_id \
                 WHERE d.last_seen_day_ms BETWEEN $1 AND $2 \
                 AND (p.kind <> 'webpush' OR p.active) {keyset}\
                 ORDER BY p.aci, p.device_id LIMIT $3"
            ))
            .await
            .map_err(pg_error)?;
        client
            .query(&stmt, &params)
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                let aci = Aci::from_uuid(row.get::<_, Uuid>("aci"));
                let id = DeviceId::new(row.get::<_, i16>("device_id") as u32)
                    .map_err(|e| corrupt("device id", e))?;
                Ok((aci, id))
            })
            .collect()
    }
}
