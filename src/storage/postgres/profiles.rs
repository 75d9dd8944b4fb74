//! Versioned profiles in Postgres (`profile_versions`, `profile_current`): a version is
//! replaced and made current in one transaction that reads the avatar it replaces; rows go
//! with the account by their foreign keys.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, corrupt, pg_error};
use crate::domain::ids::Aci;
use crate::domain::profiles::{ProfileVersion, VersionedProfile};
use crate::storage::StorageResult;
use crate::storage::profiles::ProfileStore;

fn read(row: &Row) -> StorageResult<VersionedProfile> {
    let version: String = row.get("version");
    Ok(VersionedProfile {
        version: ProfileVersion::parse(&version).map_err(|e| corrupt("profile version", e))?,
        commitment: row.get("commitment"),
        name: row.get("name"),
        about_emoji: row.get("about_emoji"),
        about: row.get("about"),
        payment_address: row.get("payment_address"),
        phone_number_sharing: row.get("phone_number_sharing"),
        avatar: row.get("avatar"),
    })
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn set(&self, aci: Aci, profile: &VersionedProfile) -> StorageResult<Option<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let old = tx
            .query_opt(
                "SELECT avatar FROM profile_versions WHERE aci = $1 AND version = $2 FOR UPDATE",
                &[&aci.uuid(), &profile.version.as_str()],
            )
            .await
            .map_err(pg_error)?
            .and_then(|row| row.get::<_, Option<String>>(0));
        tx.execute(
            "INSERT INTO profile_versions (aci, version, commitment, name, about_emoji, about, \
             payment_address, phone_number_sharing, avatar) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (aci, version) DO UPDATE SET commitment = EXCLUDED.commitment, \
             name = EXCLUDED.name, about_emoji = EXCLUDED.about_emoji, about = EXCLUDED.about, \
             payment_address = EXCLUDED.payment_address, \
             phone_number_sharing = EXCLUDED.phone_number_sharing, avatar = EXCLUDED.avatar",
            &[
                &aci.uuid(),
                &profile.version.as_str(),
                &profile.commitment,
                &profile.name,
                &profile.about_emoji,
                &profile.about,
                &profile.payment_address,
                &profile.phone_number_sharing,
                &profile.avatar,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO profile_current (aci, version) VALUES ($1, $2) \
             ON CONFLICT (aci) DO UPDATE SET version = EXCLUDED.version",
            &[&aci.uuid(), &profile.version.as_str()],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(old)
    }

    async fn get(
        &self,
        aci: Aci,
        version: &ProfileVersion,
    ) -> StorageResult<Option<VersionedProfile>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM profile_versions WHERE aci = $1 AND version = $2",
                &[&aci.uuid(), &version.as_str()],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(read).transpose()
    }

    async fn current_version(&self, aci: Aci) -> StorageResult<Option<ProfileVersion>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version FROM profile_current WHERE aci = $1",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        row.map(|row| {
            let version: String = row.get(0);
            ProfileVersion::parse(&version).map_err(|e| corrupt("profile version", e))
        })
        .transpose()
    }

    async fn delete_all(&self, aci: Aci) -> StorageResult<Vec<String>> {
        let client = self.client().await?;
        // profile_current goes with its version by the foreign key.
        let rows = client
            .query(
                "DELETE FROM profile_versions WHERE aci = $1 RETURNING avatar",
                &[&aci.uuid()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| row.get::<_, Option<String>>(0))
            .collect())
    }
}
