//! The accounts a scenario needs: registered through the API (real keys and signatures,
//! argon2 on the server), a few at a time; or, for the thousands of idle sockets of
//! `connections` and the offline receivers of `push`, written straight into the server's
//! database. Also what is done to many devices at once: FCM tokens, deletion.

use sealpost::client::{Client, DeviceCredentials};
use sealpost::domain::ids::DeviceId;

/// Registrations in flight at once (each costs the server an argon2 hash).
const REGISTRATION_CONCURRENCY: usize = 8;

/// Registers `n` accounts; `unrestricted` ones accept sealed sends with any access key.
pub async fn register(
    client: &Client,
    n: usize,
    unrestricted: bool,
) -> anyhow::Result<Vec<DeviceCredentials>> {
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(REGISTRATION_CONCURRENCY);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { register_one(&client, unrestricted).await })
            })
            .collect();
        for task in tasks {
            out.push(task.await??);
        }
        left -= batch;
    }
    Ok(out)
}

/// Registers one account (its primary device), unrestricted for sealed senders if asked.
pub async fn register_one(
    client: &Client,
    unrestricted: bool,
) -> anyhow::Result<DeviceCredentials> {
    let keys = sealpost::client::AccountKeys::generate();
    let mut attributes = sealpost::client::default_attributes();
    attributes.unrestricted_unidentified_access = unrestricted;
    let password = sealpost::client::random_password();
    let response = client
        .register(&keys.registration_request(attributes), &password)
        .await
        .map_err(|e| anyhow::anyhow!("registering an account: {e}"))?;
    Ok(DeviceCredentials {
        aci: response.identity.uuid,
        device: DeviceId::PRIMARY,
        password,
    })
}

/// Requests of `for_each` in flight at once: each costs the server one password check,
/// cheap for seeded devices, an argon2 verification for registered ones.
const PER_DEVICE_CONCURRENCY: usize = 16;

/// Runs `request` for every device, a bounded number at a time; the first error wins.
async fn for_each<F, Fut>(devices: &[DeviceCredentials], request: F) -> anyhow::Result<()>
where
    F: Fn(DeviceCredentials) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    for chunk in devices.chunks(PER_DEVICE_CONCURRENCY) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|device| tokio::spawn(request(device.clone())))
            .collect();
        for task in tasks {
            task.await??;
        }
    }
    Ok(())
}

/// Registers a fresh FCM token for every device (`PUT /v1/accounts/gcm/`, PROTOCOL.md
/// 11.1), as an Android phone does before it opens its socket.
pub async fn register_fcm_tokens(
    client: &Client,
    devices: &[DeviceCredentials],
) -> anyhow::Result<()> {
    for_each(devices, |device| {
        let client = client.clone();
        async move {
            let token = format!("loadtest-{}", uuid::Uuid::new_v4().simple());
            let response = client
                .http()
                .put(client.url("/v1/accounts/gcm/"))
                .header("Authorization", device.authorization())
                .json(&serde_json::json!({ "gcmRegistrationId": token }))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "registering an FCM token: HTTP {}",
                response.status()
            );
            Ok(())
        }
    })
    .await
}

/// Deletes every device's account through the API, which also empties its queues.
pub async fn delete(client: &Client, devices: &[DeviceCredentials]) -> anyhow::Result<()> {
    for_each(devices, |device| {
        let client = client.clone();
        async move {
            client
                .delete_account(&device)
                .await
                .map_err(|e| anyhow::anyhow!("deleting an account: {e}"))
        }
    })
    .await
}

/// Devices written straight into the server's Postgres for `connections`: an account with
/// one primary device each, all sharing one password whose argon2id hash uses the lowest
/// cost argon2 allows (8 KiB, 1 pass). The server verifies with the parameters stored in the
/// hash, so connecting 20,000 sockets measures the sockets, not 20,000 full argon2
/// verifications (about 65 per second on this machine: five minutes). Removed by `remove`.
pub struct Seeded {
    pub devices: Vec<DeviceCredentials>,
    database_url: String,
}

pub async fn seed(database_url: &str, n: usize) -> anyhow::Result<Seeded> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let password = sealpost::client::random_password();
    let cheap = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let hash = cheap
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let db = connect(database_url).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // lastSeen today: connecting then writes nothing back (the server touches it daily).
    let today_ms = now_ms - now_ms % 86_400_000;
    let acis: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    for chunk in acis.chunks(5000) {
        let chunk = chunk.to_vec();
        let identity: Vec<Vec<u8>> = chunk
            .iter()
            .map(|_| {
                let mut key = vec![0x05u8];
                key.extend(rand::random::<[u8; 32]>());
                key
            })
            .collect();
        db.execute(
            "INSERT INTO accounts (aci, identity_key) SELECT * FROM UNNEST($1::uuid[], $2::bytea[])",
            &[&chunk, &identity],
        )
        .await?;
        db.execute(
            "INSERT INTO devices (aci, device_id, password_hash, registration_id, \
             fetches_messages, created_ms, last_seen_day_ms) \
             SELECT a, 1, $2, 1, true, $3, $4 FROM UNNEST($1::uuid[]) AS a",
            &[&chunk, &hash, &now_ms, &today_ms],
        )
        .await?;
    }
    let devices = acis
        .into_iter()
        .map(|aci| DeviceCredentials {
            aci: sealpost::domain::ids::Aci::from_uuid(aci),
            device: DeviceId::PRIMARY,
            password: password.clone(),
        })
        .collect();
    Ok(Seeded {
        devices,
        database_url: database_url.to_owned(),
    })
}

impl Seeded {
    /// Deletes the seeded accounts (devices go with them).
    pub async fn remove(self) -> anyhow::Result<()> {
        let db = connect(&self.database_url).await?;
        let acis: Vec<uuid::Uuid> = self.devices.iter().map(|d| d.aci.uuid()).collect();
        for chunk in acis.chunks(5000) {
            db.execute(
                "DELETE FROM accounts WHERE aci = ANY($1)",
                &[&chunk.to_vec()],
            )
            .await?;
        }
        Ok(())
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    crate::options::ensure_loopback(url)?;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
