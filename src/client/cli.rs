//! `sealpost client ...`: a small command-line client for trying a server by hand, built on
//! [`Client`] and [`WsClient`]. It registers an account (keeping its credentials and keys
//! in a file), uploads one-time prekeys, sends a message, listens on the socket and prints
//! what arrives, and links a second device. It does no end-to-end encryption: contents are
//! whatever bytes it is given, and shown as base64, since to the server they are opaque.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::RngCore;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ws::WsClient;
use super::{
    AccountKeys, Client, ClientError, DeviceCredentials, default_attributes, random_password,
};
use crate::api::entities::{IncomingMessageJson, IncomingMessageListJson, SetKeysRequestJson};
use crate::domain::encoding::{decode_base64, encode_base64};
use crate::domain::ids::{Aci, DeviceId};
use crate::domain::xeddsa::PrivateKey;
use crate::proto::textsecure::Envelope;

/// What `register` and `link` write: enough to act as the device later. It holds the
/// account's private identity key and the device's password: the file is made readable by
/// its owner only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsFile {
    pub server: String,
    pub aci: Aci,
    pub device_id: u8,
    pub password: String,
    /// The account's access key (base64), for others' sealed sends.
    pub access_key: Option<String>,
    /// Private keys, base64 of 32 bytes.
    pub identity_key: String,
    pub signed_pre_key: String,
    pub kem_public_key: String,
}

impl CredentialsFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the credentials file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a sealpost credentials file", path.display()))
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                path.display()
            )
        })?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        Ok(())
    }

    fn credentials(&self) -> anyhow::Result<DeviceCredentials> {
        Ok(DeviceCredentials {
            aci: self.aci,
            device: DeviceId::new(u32::from(self.device_id))?,
            password: self.password.clone(),
        })
    }

    fn keys(&self) -> anyhow::Result<AccountKeys> {
        let private = |field: &str, value: &str| -> anyhow::Result<PrivateKey> {
            let bytes: [u8; 32] = decode_base64(field, value)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("{field} must be 32 bytes"))?;
            Ok(PrivateKey::from_bytes(bytes))
        };
        Ok(AccountKeys {
            identity: private("identityKey", &self.identity_key)?,
            signed_pre_key: private("signedPreKey", &self.signed_pre_key)?,
            kem_public_key: decode_base64("kemPublicKey", &self.kem_public_key)?,
        })
    }

    fn client(&self) -> Client {
        Client::new(&self.server)
    }
}

fn describe(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Status { status, body, .. } => match body {
            Some(body) => anyhow::anyhow!("the server answered {status}: {}", body.message),
            None => anyhow::anyhow!("the server answered {status}"),
        },
        ClientError::Transport(e) => anyhow::anyhow!("could not reach the server: {e}"),
    }
}

/// Registers a new account (fresh identity key, signed prekeys, a random access key and
/// password), with `invite` when the server asks for one, writes its credentials to `out`
/// and prints its ACI.
pub async fn register(server: &str, out: &Path, invite: Option<&str>) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{} exists; an existing file is never overwritten",
            out.display()
        );
    }
    let client = Client::new(server);
    let keys = AccountKeys::generate();
    let password = random_password();
    let attributes = default_attributes();
    let access_key = attributes.unidentified_access_key.clone();
    let mut request = keys.registration_request(attributes);
    request.invite_token = invite.map(str::to_owned);
    let registered = client
        .register(&request, &password)
        .await
        .map_err(describe)?;
    CredentialsFile {
        server: server.trim_end_matches('/').to_owned(),
        aci: registered.identity.uuid,
        device_id: 1,
        password,
        access_key,
        identity_key: encode_base64(&keys.identity.to_bytes()),
        signed_pre_key: encode_base64(&keys.signed_pre_key.to_bytes()),
        kem_public_key: encode_base64(&keys.kem_public_key),
    }
    .write(out)?;
    println!("{}", registered.identity.uuid);
    Ok(())
}

/// Uploads `count` EC and `count` Kyber one-time prekeys (fresh ids after any stored) and
/// prints the counts the server then holds.
pub async fn upload_keys(credentials: &Path, count: usize) -> anyhow::Result<()> {
    if !(1..=100).contains(&count) {
        bail!("--count must be 1 to 100 (a single upload's limit)");
    }
    let file = CredentialsFile::read(credentials)?;
    let (client, device, keys) = (file.client(), file.credentials()?, file.keys()?);
    let before = client.key_counts(&device).await.map_err(describe)?;
    // Ids above anything uploaded before (a random start: the server does not say which
    // ids it holds).
    let start = 1_000 + i64::from(rand::rngs::OsRng.next_u32() % 1_000_000);
    let ids = start..start + count as i64;
    let upload = SetKeysRequestJson {
        pre_keys: Some(keys.one_time_pre_keys(ids.clone())),
        pq_pre_keys: Some(keys.one_time_pq_pre_keys(ids)),
        ..Default::default()
    };
    client
        .upload_keys(&device, &upload)
        .await
        .map_err(describe)?;
    let after = client.key_counts(&device).await.map_err(describe)?;
    println!(
        "one-time prekeys: {} EC, {} Kyber (were {} and {})",
        after.count, after.pq_count, before.count, before.pq_count
    );
    Ok(())
}

/// Sends `content` to every device of `to`, learning the device list from the server's
/// 409 answer as a client does. Prints the answer's `needsSync`.
pub async fn send(credentials: &Path, to: Aci, content: &[u8]) -> anyhow::Result<()> {
    let file = CredentialsFile::read(credentials)?;
    let (client, device) = (file.client(), file.credentials()?);
    let mut devices: Vec<i64> = vec![1];
    for _ in 0..3 {
        let body = IncomingMessageListJson {
            messages: devices
                .iter()
                .map(|&id| IncomingMessageJson {
                    r#type: 1,
                    destination_device_id: id,
                    destination_registration_id: 0,
                    content: encode_base64(content),
                })
                .collect(),
            online: false,
            urgent: true,
            timestamp: crate::domain::clock::now_ms() as u64,
        };
        let response = client
            .http()
            .put(client.url(&format!("/v1/messages/{to}")))
            .header("Authorization", device.authorization())
            .json(&body)
            .send()
            .await
            .map_err(|e| describe(e.into()))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            StatusCode::OK => {
                println!(
                    "sent to {} device(s) of {to}; needsSync: {}",
                    devices.len(),
                    answer["needsSync"]
                );
                return Ok(());
            }
            StatusCode::CONFLICT => {
                let ids = |field: &str| -> Vec<i64> {
                    answer[field]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default()
                };
                let (missing, extra) = (ids("missingDevices"), ids("extraDevices"));
                devices.retain(|d| !extra.contains(d));
                devices.extend(missing);
                devices.sort_unstable();
            }
            _ => bail!(
                "the server answered {status}: {}",
                answer["message"].as_str().unwrap_or("(no message)")
            ),
        }
    }
    bail!("the recipient's device list kept changing; try again")
}

/// The service id bytes of an envelope as text: a UUID for the 16-byte form.
fn service_id(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match uuid::Uuid::from_slice(b) {
            Ok(id) => json!(id.to_string()),
            Err(_) => json!(encode_base64(b)),
        },
    }
}

/// One delivered envelope as a JSON line (contents as base64: they are opaque).
pub fn envelope_json(envelope: &Envelope) -> Value {
    json!({
        "type": envelope.r#type,
        "sourceServiceId": service_id(envelope.source_service_id.as_deref()),
        "sourceDevice": envelope.source_device,
        "destinationServiceId": service_id(envelope.destination_service_id.as_deref()),
        "clientTimestamp": envelope.client_timestamp,
        "serverTimestamp": envelope.server_timestamp,
        "serverGuid": service_id(envelope.server_guid.as_deref()),
        "urgent": envelope.urgent(),
        "content": envelope.content.as_deref().map(encode_base64),
    })
}

/// Connects the device's socket and prints each delivered envelope as one JSON line,
/// acknowledging it. Ends after `count` envelopes, or when nothing arrives for `idle`
/// (with neither, runs until interrupted).
pub async fn listen(
    credentials: &Path,
    count: Option<usize>,
    idle: Option<Duration>,
) -> anyhow::Result<()> {
    let file = CredentialsFile::read(credentials)?;
    let device = file.credentials()?;
    let mut ws = WsClient::connect(&file.server, Some(&device))
        .await
        .map_err(|e| anyhow::anyhow!("could not open the socket: {e}"))?;
    let mut printed = 0;
    let wait = idle.unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    while count.is_none_or(|c| printed < c) {
        let Some(request) = ws.next_request(wait).await else {
            if let Some(code) = ws.closed(Duration::ZERO).await {
                bail!("the server closed the socket ({code})");
            }
            break;
        };
        if let Some(envelope) = request.envelope() {
            println!("{}", envelope_json(&envelope));
            printed += 1;
        }
        ws.respond(request.id, 200)
            .await
            .map_err(|e| anyhow::anyhow!("could not acknowledge: {e}"))?;
    }
    ws.close().await;
    eprintln!("{printed} message(s)");
    Ok(())
}

/// Links a new device to the primary's account (both on this machine: the primary asks
/// for a code and the new device uses it at once), writes its credentials to `out` and
/// prints its device id.
pub async fn link(primary: &Path, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{} exists; an existing file is never overwritten",
            out.display()
        );
    }
    let file = CredentialsFile::read(primary)?;
    if file.device_id != 1 {
        bail!("{} is not a primary device's file", primary.display());
    }
    let (client, device, keys) = (file.client(), file.credentials()?, file.keys()?);
    let code = client.link_code(&device).await.map_err(describe)?;
    let mut attributes = default_attributes();
    attributes.unidentified_access_key = file.access_key.clone();
    let linked = client
        .link_device(&code.verification_code, &keys, attributes)
        .await
        .map_err(describe)?;
    CredentialsFile {
        device_id: linked.device.get(),
        password: linked.password,
        ..file
    }
    .write(out)?;
    println!("{}", linked.device.get());
    Ok(())
}
