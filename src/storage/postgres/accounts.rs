//! Accounts, devices and signed keys in Postgres.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::keys::{KIND_EC_SIGNED, KIND_KEM_LAST_RESORT};
use super::{PgStore, corrupt, pg_error};
use crate::domain::accounts::{
    AccessKey, AccessSettings, Account, Capabilities, Device, DeviceAttributes, NewAccount,
    NewDevice, lowest_free_device_id,
};
use crate::domain::ids::{Aci, DeviceId, RegistrationId};
use crate::domain::keys::EcPublicKey;
use crate::domain::keys::{KemSignedPreKey, SignedEcPreKey};
use crate::storage::{AccountStore, DeviceAdded, StorageResult};

const DEVICE_COLUMNS: &str = "device_id, password_hash, registration_id, name, fetches_messages, \
                              capabilities, created_ms, last_seen_day_ms, created_at_ciphertext";

fn device_from_row(aci: Aci, row: &Row) -> StorageResult<Device> {
    let id = DeviceId::new(row.get::<_, i16>("device_id") as u32)
        .map_err(|e| corrupt("device id", e))?;
    let registration_id = RegistrationId::new(row.get::<_, i32>("registration_id").into())
        .map_err(|e| corrupt("registration id", e))?;
    let capabilities: Capabilities =
        serde_json::from_value(row.get("capabilities")).map_err(|e| corrupt("capabilities", e))?;
    Ok(Device {
        aci,
        id,
        password_hash: row.get("password_hash"),
        attributes: DeviceAttributes {
            fetches_messages: row.get("fetches_messages"),
            registration_id,
            name: row.get("name"),
            capabilities,
        },
        created_ms: row.get("created_ms"),
        last_seen_day_ms: row.get("last_seen_day_ms"),
        created_at_ciphertext: row.get("created_at_ciphertext"),
    })
}

fn access_key_from(bytes: Option<Vec<u8>>) -> StorageResult<Option<AccessKey>> {
    bytes
        .map(|b| AccessKey::parse("unidentified_access_key", &b))
        .transpose()
        .map_err(|e| corrupt("access key", e))
}

async fn insert_device(tx: &tokio_postgres::Transaction<'_>, device: &Device) -> StorageResult<()> {
    let attrs = &device.attributes;
    let capabilities = serde_json::to_value(&attrs.capabilities)
        .map_err(|e| crate::storage::StorageError::Backend(e.into()))?;
    tx.execute(
        "INSERT INTO devices (aci, device_id, password_hash, registration_id, name, \
         fetches_messages, capabilities, created_ms, last_seen_day_ms, created_at_ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &device.aci.uuid(),
            &i16::from(device.id.get()),
            &device.password_hash,
            &i32::from(attrs.registration_id.get()),
            &attrs.name,
            &attrs.fetches_messages,
            &capabilities,
            &device.created_ms,
            &device.last_seen_day_ms,
            &device.created_at_ciphertext,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn insert_signed_keys(
    tx: &tokio_postgres::Transaction<'_>,
    aci: Aci,
    id: DeviceId,
    ec: &SignedEcPreKey,
    kem: &KemSignedPreKey,
) -> StorageResult<()> {
    let (ec_key, ec_signature) = (ec.public_key.as_bytes(), ec.signature.as_bytes());
    super::keys::replace_signed(tx, aci, id, KIND_EC_SIGNED, ec.key_id, ec_key, ec_signature)
        .await?;
    let (kem_key, kem_signature) = (kem.public_key.as_bytes(), kem.signature.as_bytes());
    super::keys::replace_signed(
        tx,
        aci,
        id,
        KIND_KEM_LAST_RESORT,
        kem.key_id,
        kem_key,
        kem_signature,
    )
    .await
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create(&self, new: &NewAccount) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let aci = new.account.aci.uuid();
        tx.execute(
            "INSERT INTO accounts (aci, identity_key, unidentified_access_key, \
             unrestricted_unidentified_access, auth_credential_salt) VALUES ($1, $2, $3, $4, $5)",
            &[
                &aci,
                &new.account.identity_key.as_bytes(),
                &new.account
                    .access
                    .unidentified_access_key
                    .as_ref()
                    .map(|k| &k.as_bytes()[..]),
                &new.account.access.unrestricted_unidentified_access,
                &&new.account.auth_credential_salt[..],
            ],
        )
        .await
        .map_err(pg_error)?;
        insert_device(&tx, &new.primary).await?;
        insert_signed_keys(
            &tx,
            new.account.aci,
            new.primary.id,
            &new.signed_pre_key,
            &new.pq_last_resort_pre_key,
        )
        .await?;
        if let Some(push) = &new.push {
            let (aci, id) = (new.account.aci, new.primary.id);
            super::push::insert_in(&tx, aci, id, push, new.primary.created_ms).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn account(&self, aci: Aci) -> StorageResult<Option<Account>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT identity_key, unidentified_access_key, unrestricted_unidentified_access, \
                 auth_credential_salt FROM accounts WHERE aci = $1",
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = client
            .query_opt(&stmt, &[&aci.uuid()])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let identity_key = EcPublicKey::parse("identity_key", row.get::<_, &[u8]>("identity_key"))
            .map_err(|e| corrupt("identity key", e))?;
        Ok(Some(Account {
            aci,
            identity_key,
            access: AccessSettings {
                unidentified_access_key: access_key_from(row.get("unidentified_access_key"))?,
                unrestricted_unidentified_access: row.get("unrestricted_unidentified_access"),
            },
            auth_credential_salt: row
                .get::<_, &[u8]>("auth_credential_salt")
                .try_into()
                .map_err(|e| corrupt("auth credential salt", e))?,
        }))
    }

    async fn device(&self, aci: Aci, id: DeviceId) -> StorageResult<Option<Device>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE aci = $1 AND device_id = $2"
            ))
            .await
            .map_err(pg_error)?;
        client
            .query_opt(&stmt, &[&aci.uuid(), &i16::from(id.get())])
            .await
            .map_err(pg_error)?
            .map(|row| device_from_row(aci, &row))
            .transpose()
    }

    async fn devices(&self, aci: Aci) -> StorageResult<Vec<Device>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE aci = $1 ORDER BY device_id"
            ))
            .await
            .map_err(pg_error)?;
        client
            .query(&stmt, &[&aci.uuid()])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| device_from_row(aci, row))
            .collect()
    }

    async fn update_attributes(
        &self,
        aci: Aci,
        id: DeviceId,
        attributes: &DeviceAttributes,
        access: Option<&AccessSettings>,
    ) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let capabilities = serde_json::to_value(&attributes.capabilities)
            .map_err(|e| crate::storage::StorageError::Backend(e.into()))?;
        let updated = tx
            .execute(
                "UPDATE devices SET registration_id = $3, name = $4, fetches_messages = $5, \
                 capabilities = $6 WHERE aci = $1 AND device_id = $2",
                &[
                    &aci.uuid(),
                    &i16::from(id.get()),
                    &i32::from(attributes.registration_id.get()),
                    &attributes.name,
                    &attributes.fetches_messages,
                    &capabilities,
                ],
            )
            .await
            .map_err(pg_error)?;
        if updated == 0 {
            return Ok(false);
        }
        if let Some(access) = access {
            tx.execute(
                "UPDATE accounts SET unidentified_access_key = $2, \
                 unrestricted_unidentified_access = $3 WHERE aci = $1",
                &[
                    &aci.uuid(),
                    &access
                        .unidentified_access_key
                        .as_ref()
                        .map(|k| &k.as_bytes()[..]),
                    &access.unrestricted_unidentified_access,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn add_device(
        &self,
        aci: Aci,
        new: &NewDevice,
        max_devices: usize,
    ) -> StorageResult<DeviceAdded> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Lock the account: two links at once cannot both take the last free id.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE aci = $1 FOR UPDATE",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        if exists.is_none() {
            return Ok(DeviceAdded::NoAccount);
        }
        let taken: Vec<DeviceId> = tx
            .query(
                "SELECT device_id FROM devices WHERE aci = $1",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                DeviceId::new(row.get::<_, i16>(0) as u32).map_err(|e| corrupt("device id", e))
            })
            .collect::<StorageResult<_>>()?;
        if taken.len() >= max_devices {
            return Ok(DeviceAdded::Full(taken.len()));
        }
        let Some(id) = lowest_free_device_id(taken.iter().copied()) else {
            return Ok(DeviceAdded::Full(taken.len()));
        };
        let device = new.into_device(aci, id);
        insert_device(&tx, &device).await?;
        insert_signed_keys(
            &tx,
            aci,
            id,
            &new.signed_pre_key,
            &new.pq_last_resort_pre_key,
        )
        .await?;
        if let Some(push) = &new.push {
            super::push::insert_in(&tx, aci, id, push, new.created_ms).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(DeviceAdded::Added(id))
    }

    async fn seal_created_at_once(
        &self,
        aci: Aci,
        id: DeviceId,
        sealed: &[u8],
    ) -> StorageResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE devices SET created_at_ciphertext = $3 \
                 WHERE aci = $1 AND device_id = $2 AND created_at_ciphertext IS NULL",
                &[&aci.uuid(), &i16::from(id.get()), &sealed],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    async fn set_device_name(&self, aci: Aci, id: DeviceId, name: &[u8]) -> StorageResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE devices SET name = $3 WHERE aci = $1 AND device_id = $2",
                &[&aci.uuid(), &i16::from(id.get()), &name],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    async fn remove_device(&self, aci: Aci, id: DeviceId) -> StorageResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM devices WHERE aci = $1 AND device_id = $2",
                &[&aci.uuid(), &i16::from(id.get())],
            )
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }

    async fn touch_device(&self, aci: Aci, id: DeviceId, day_ms: i64) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE devices SET last_seen_day_ms = $3 \
                 WHERE aci = $1 AND device_id = $2 AND last_seen_day_ms < $3",
                &[&aci.uuid(), &i16::from(id.get()), &day_ms],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn set_fetches_messages(
        &self,
        aci: Aci,
        id: DeviceId,
        fetches_messages: bool,
    ) -> StorageResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE devices SET fetches_messages = $3 WHERE aci = $1 AND device_id = $2",
                &[&aci.uuid(), &i16::from(id.get()), &fetches_messages],
            )
            .await
            .map_err(pg_error)?;
        Ok(updated == 1)
    }

    async fn password_hashes(
        &self,
        devices: &[(Aci, DeviceId)],
    ) -> StorageResult<std::collections::HashMap<(Aci, DeviceId), String>> {
        if devices.is_empty() {
            return Ok(Default::default());
        }
        let acis: Vec<uuid::Uuid> = devices.iter().map(|(aci, _)| aci.uuid()).collect();
        let ids: Vec<i16> = devices.iter().map(|(_, id)| i16::from(id.get())).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT d.aci, d.device_id, d.password_hash FROM devices d \
                 JOIN unnest($1::uuid[], $2::int2[]) AS wanted(aci, device_id) \
                 ON d.aci = wanted.aci AND d.device_id = wanted.device_id",
            )
            .await
            .map_err(pg_error)?;
        client
            .query(&stmt, &[&acis, &ids])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                let aci = Aci::from_uuid(row.get::<_, uuid::Uuid>("aci"));
                let id = DeviceId::new(row.get::<_, i16>("device_id") as u32)
                    .map_err(|e| corrupt("device id", e))?;
                Ok(((aci, id), row.get::<_, String>("password_hash")))
            })
            .collect()
    }

    async fn delete(&self, aci: Aci) -> StorageResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM accounts WHERE aci = $1", &[&aci.uuid()])
            .await
            .map_err(pg_error)?;
        Ok(deleted > 0)
    }
}
