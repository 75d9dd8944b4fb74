//! Prekeys in Postgres. A claim deletes the row it returns, choosing it with
//! `FOR UPDATE SKIP LOCKED` so that concurrent claims (on any pod) take different rows
//! instead of waiting for, and then missing, the same one.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStore, corrupt, pg_error};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::keys::{
    ClaimedKeys, EcPublicKey, KemPublicKey, KemSignedPreKey, KeyCounts, KeyUpload, PreKey,
    Signature, SignedEcPreKey, SignedPreKey,
};
use crate::storage::{KeyStore, StorageResult};

/// The `kind` of a device's signed keys' rows (the account's registration writes them too).
pub(super) const KIND_EC_SIGNED: &str = "ec_signed";
pub(super) const KIND_KEM_LAST_RESORT: &str = "kem_last_resort";
const ONE_TIME_EC: &str = "ec";
const ONE_TIME_KEM: &str = "kem";

/// A claim that found every remaining row locked by concurrent claims retries this often
/// before it reports the device as out of keys.
const CLAIM_ATTEMPTS: usize = 16;

const CLAIM: &str = "DELETE FROM one_time_pre_keys \
     WHERE (aci, device_id, kind, key_id) = ( \
         SELECT aci, device_id, kind, key_id FROM one_time_pre_keys \
         WHERE aci = $1 AND device_id = $2 AND kind = $3 \
         ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING key_id, public_key, signature";

/// The signed keys and one claimed key of each one-time kind, in one round trip. A kind's
/// claim only happens when the device has a signed prekey, so nothing is consumed for a
/// device that cannot be fetched.
const CLAIM_BUNDLE: &str = "WITH signed AS ( \
         SELECT kind, key_id, public_key, signature FROM signed_pre_keys \
         WHERE aci = $1 AND device_id = $2), \
     ec AS ( \
         DELETE FROM one_time_pre_keys \
         WHERE (aci, device_id, kind, key_id) = ( \
             SELECT aci, device_id, kind, key_id FROM one_time_pre_keys \
             WHERE aci = $1 AND device_id = $2 AND kind = 'ec' \
               AND EXISTS (SELECT 1 FROM signed WHERE kind = 'ec_signed') \
             ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING kind, key_id, public_key, signature), \
     kem AS ( \
         DELETE FROM one_time_pre_keys \
         WHERE (aci, device_id, kind, key_id) = ( \
             SELECT aci, device_id, kind, key_id FROM one_time_pre_keys \
             WHERE aci = $1 AND device_id = $2 AND kind = 'kem' \
               AND EXISTS (SELECT 1 FROM signed WHERE kind = 'ec_signed') \
             ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING kind, key_id, public_key, signature) \
     SELECT kind, key_id, public_key, signature FROM signed \
     UNION ALL SELECT kind, key_id, public_key, signature FROM ec \
     UNION ALL SELECT kind, key_id, public_key, signature FROM kem";

fn signature_of(row: &Row) -> StorageResult<Signature> {
    let bytes: Option<&[u8]> = row.get("signature");
    let bytes = bytes.ok_or_else(|| corrupt("signature", "missing"))?;
    Signature::parse("signature", bytes).map_err(|e| corrupt("signature", e))
}

fn ec_pre_key(row: &Row) -> StorageResult<PreKey> {
    Ok(PreKey {
        key_id: row.get::<_, i32>("key_id") as u32,
        public_key: EcPublicKey::parse("public_key", row.get::<_, &[u8]>("public_key"))
            .map_err(|e| corrupt("one-time prekey", e))?,
    })
}

fn signed_ec(row: &Row) -> StorageResult<SignedEcPreKey> {
    Ok(SignedPreKey {
        key_id: row.get::<_, i32>("key_id") as u32,
        public_key: EcPublicKey::parse("public_key", row.get::<_, &[u8]>("public_key"))
            .map_err(|e| corrupt("signed prekey", e))?,
        signature: signature_of(row)?,
    })
}

fn signed_kem(row: &Row) -> StorageResult<KemSignedPreKey> {
    Ok(SignedPreKey {
        key_id: row.get::<_, i32>("key_id") as u32,
        public_key: KemPublicKey::parse("public_key", row.get::<_, Vec<u8>>("public_key"))
            .map_err(|e| corrupt("Kyber prekey", e))?,
        signature: signature_of(row)?,
    })
}

impl PgStore {
    async fn signed_key_row(
        &self,
        aci: Aci,
        id: DeviceId,
        kind: &str,
    ) -> StorageResult<Option<Row>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT key_id, public_key, signature FROM signed_pre_keys \
                 WHERE aci = $1 AND device_id = $2 AND kind = $3",
            )
            .await
            .map_err(pg_error)?;
        client
            .query_opt(&stmt, &[&aci.uuid(), &i16::from(id.get()), &kind])
            .await
            .map_err(pg_error)
    }

    /// Claims one key of `kind`, retrying while rows exist but are locked by other claims.
    async fn claim_kind(
        &self,
        client: &deadpool_postgres::Object,
        aci: Aci,
        id: DeviceId,
        kind: &str,
    ) -> StorageResult<Option<Row>> {
        let claim = client.prepare_cached(CLAIM).await.map_err(pg_error)?;
        let exists = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM one_time_pre_keys \
                 WHERE aci = $1 AND device_id = $2 AND kind = $3)",
            )
            .await
            .map_err(pg_error)?;
        let params: [&(dyn ToSql + Sync); 3] = [&aci.uuid(), &i16::from(id.get()), &kind];
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(row) = client.query_opt(&claim, &params).await.map_err(pg_error)? {
                return Ok(Some(row));
            }
            let left: bool = client
                .query_one(&exists, &params)
                .await
                .map_err(pg_error)?
                .get(0);
            if !left {
                return Ok(None);
            }
            tokio::task::yield_now().await;
        }
        Ok(None)
    }
}

/// One one-time key as a row to insert.
struct OneTimeRow<'a> {
    key_id: i32,
    public_key: &'a [u8],
    signature: Option<&'a [u8]>,
}

async fn replace_one_time(
    tx: &tokio_postgres::Transaction<'_>,
    aci: Aci,
    id: DeviceId,
    kind: &str,
    keys: &[OneTimeRow<'_>],
) -> StorageResult<()> {
    tx.execute(
        "DELETE FROM one_time_pre_keys WHERE aci = $1 AND device_id = $2 AND kind = $3",
        &[&aci.uuid(), &i16::from(id.get()), &kind],
    )
    .await
    .map_err(pg_error)?;
    let ids: Vec<i32> = keys.iter().map(|k| k.key_id).collect();
    let public: Vec<&[u8]> = keys.iter().map(|k| k.public_key).collect();
    let signatures: Vec<Option<&[u8]>> = keys.iter().map(|k| k.signature).collect();
    tx.execute(
        "INSERT INTO one_time_pre_keys (aci, device_id, kind, key_id, public_key, signature) \
         SELECT $1, $2, $3, k.id, k.public_key, k.signature \
         FROM UNNEST($4::int4[], $5::bytea[], $6::bytea[]) AS k(id, public_key, signature)",
        &[
            &aci.uuid(),
            &i16::from(id.get()),
            &kind,
            &ids,
            &public,
            &signatures,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(super) async fn replace_signed(
    tx: &tokio_postgres::Transaction<'_>,
    aci: Aci,
    id: DeviceId,
    kind: &str,
    key_id: u32,
    public_key: &[u8],
    signature: &[u8],
) -> StorageResult<()> {
    tx.execute(
        "INSERT INTO signed_pre_keys (aci, device_id, kind, key_id, public_key, signature) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (aci, device_id, kind) DO UPDATE \
         SET key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key, \
             signature = EXCLUDED.signature",
        &[
            &aci.uuid(),
            &i16::from(id.get()),
            &kind,
            &(key_id as i32),
            &public_key,
            &signature,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl KeyStore for PgStore {
    async fn store_keys(&self, aci: Aci, id: DeviceId, upload: &KeyUpload) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Lock the device row: a concurrent deletion cannot interleave with the upload.
        let device = tx
            .query_opt(
                "SELECT 1 FROM devices WHERE aci = $1 AND device_id = $2 FOR UPDATE",
                &[&aci.uuid(), &i16::from(id.get())],
            )
            .await
            .map_err(pg_error)?;
        if device.is_none() {
            return Ok(false);
        }
        if let Some(keys) = &upload.pre_keys {
            let rows: Vec<_> = keys
                .iter()
                .map(|k| OneTimeRow {
                    key_id: k.key_id as i32,
                    public_key: k.public_key.as_bytes(),
                    signature: None,
                })
                .collect();
            replace_one_time(&tx, aci, id, ONE_TIME_EC, &rows).await?;
        }
        if let Some(keys) = &upload.pq_pre_keys {
            let rows: Vec<_> = keys
                .iter()
                .map(|k| OneTimeRow {
                    key_id: k.key_id as i32,
                    public_key: k.public_key.as_bytes(),
                    signature: Some(k.signature.as_bytes()),
                })
                .collect();
            replace_one_time(&tx, aci, id, ONE_TIME_KEM, &rows).await?;
        }
        if let Some(k) = &upload.signed_pre_key {
            let (public, signature) = (k.public_key.as_bytes(), k.signature.as_bytes());
            replace_signed(&tx, aci, id, KIND_EC_SIGNED, k.key_id, public, signature).await?;
        }
        if let Some(k) = &upload.pq_last_resort_pre_key {
            let (public, signature) = (k.public_key.as_bytes(), k.signature.as_bytes());
            replace_signed(
                &tx,
                aci,
                id,
                KIND_KEM_LAST_RESORT,
                k.key_id,
                public,
                signature,
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn counts(&self, aci: Aci, id: DeviceId) -> StorageResult<KeyCounts> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE kind = 'ec'), count(*) FILTER (WHERE kind = 'kem') \
                 FROM one_time_pre_keys WHERE aci = $1 AND device_id = $2",
            )
            .await
            .map_err(pg_error)?;
        let row = client
            .query_one(&stmt, &[&aci.uuid(), &i16::from(id.get())])
            .await
            .map_err(pg_error)?;
        Ok(KeyCounts {
            ec: row.get::<_, i64>(0) as u32,
            kem: row.get::<_, i64>(1) as u32,
        })
    }

    async fn claim(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<ClaimedKeys>> {
        // Autocommit: each claim is its own transaction, so a claimed row is gone for every
        // other claim the moment the statement returns.
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(CLAIM_BUNDLE)
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&stmt, &[&aci.uuid(), &i16::from(id.get())])
            .await
            .map_err(pg_error)?;
        let row_of = |kind: &str| rows.iter().find(|r| r.get::<_, &str>("kind") == kind);
        let Some(signed) = row_of(KIND_EC_SIGNED) else {
            return Ok(None);
        };
        // A kind that came back empty may only have had its rows locked by concurrent
        // claims: retry it alone until it is claimed or really empty.
        let ec = match row_of(ONE_TIME_EC) {
            Some(row) => Some(ec_pre_key(row)?),
            None => self
                .claim_kind(&client, aci, id, ONE_TIME_EC)
                .await?
                .as_ref()
                .map(ec_pre_key)
                .transpose()?,
        };
        let kem = match row_of(ONE_TIME_KEM) {
            Some(row) => Some(signed_kem(row)?),
            None => self
                .claim_kind(&client, aci, id, ONE_TIME_KEM)
                .await?
                .as_ref()
                .map(signed_kem)
                .transpose()?,
        };
        Ok(Some(ClaimedKeys {
            signed_pre_key: signed_ec(signed)?,
            pre_key: ec,
            pq_pre_key: kem,
            pq_last_resort_pre_key: row_of(KIND_KEM_LAST_RESORT).map(signed_kem).transpose()?,
        }))
    }

    async fn signed_pre_key(
        &self,
        aci: Aci,
        id: DeviceId,
    ) -> StorageResult<Option<SignedEcPreKey>> {
        self.signed_key_row(aci, id, KIND_EC_SIGNED)
            .await?
            .as_ref()
            .map(signed_ec)
            .transpose()
    }

    async fn pq_last_resort_pre_key(
        &self,
        aci: Aci,
        id: DeviceId,
    ) -> StorageResult<Option<KemSignedPreKey>> {
        self.signed_key_row(aci, id, KIND_KEM_LAST_RESORT)
            .await?
            .as_ref()
            .map(signed_kem)
            .transpose()
    }
}
