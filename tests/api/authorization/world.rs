//! The accounts the authorization matrix plays with, the kinds of caller, and how each kind
//! presents itself over HTTP and through the WebSocket tunnel.

use std::collections::BTreeMap;

use sealpost::api::devices::DeviceListJson;
use sealpost::api::entities::AccountAttributesJson;
use sealpost::client::ws::WsClient;
use sealpost::client::{AccountKeys, DeviceCredentials, basic_auth, default_attributes};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;

use crate::common::{TestApp, register_with};

/// Who calls. Alice is the account the requests are about (the target of key fetches,
/// profiles and messages); Bob is "another account".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization`, no `Unidentified-Access-Key`.
    Nobody,
    /// `Authorization: Basic !!!` (not base64).
    Garbage,
    /// Alice's ACI (primary) with a wrong password.
    WrongPassword,
    /// An ACI nobody registered.
    UnknownAccount,
    /// Alice's access key, no `Authorization`.
    KeyRight,
    /// A wrong 16-byte access key, no `Authorization`.
    KeyWrong,
    /// Bob's primary device.
    OtherAccount,
    /// Alice's linked device 2.
    Linked,
    /// Alice's primary device.
    Primary,
    /// Alice's primary device's credentials and Alice's access key at once.
    Both,
}

/// The columns of the matrix, in the order they run (left to right, row by row).
pub const CALLERS: [Caller; 10] = [
    Caller::Nobody,
    Caller::Garbage,
    Caller::WrongPassword,
    Caller::UnknownAccount,
    Caller::KeyRight,
    Caller::KeyWrong,
    Caller::OtherAccount,
    Caller::Linked,
    Caller::Primary,
    Caller::Both,
];

/// An account of the world: its devices' credentials and registration ids, keys and
/// access key.
pub struct Account {
    pub devices: Vec<DeviceCredentials>,
    pub registration_ids: BTreeMap<u8, u16>,
    pub keys: AccountKeys,
    pub access_key: [u8; 16],
    pub attributes: AccountAttributesJson,
}

impl Account {
    pub fn aci(&self) -> Aci {
        self.devices[0].aci
    }

    pub fn device(&self, id: u8) -> &DeviceCredentials {
        self.devices
            .iter()
            .find(|d| d.device.get() == id)
            .expect("the device exists")
    }
}

pub struct World {
    pub alice: Account,
    pub bob: Account,
    pub unknown: Aci,
    pub wrong_password: String,
}

async fn register(app: &TestApp, access_key: [u8; 16]) -> Account {
    let (primary, keys) = register_with(app, Some(access_key), false).await;
    let mut account = Account {
        devices: vec![primary],
        registration_ids: BTreeMap::new(),
        keys,
        access_key,
        attributes: default_attributes(),
    };
    account.attributes.unidentified_access_key = Some(encode_base64(&access_key));
    account
}

/// Links a device to `account` through the real flow (code from the primary, then
/// `PUT /v1/devices/link`).
async fn link(app: &TestApp, account: &mut Account) {
    let code = app
        .client
        .link_code(&account.devices[0])
        .await
        .expect("the primary gets a link code");
    let device = app
        .client
        .link_device(&code.verification_code, &account.keys, default_attributes())
        .await
        .expect("linking succeeds");
    account.devices.push(device);
}

/// Reads the registration ids the server holds, so message bodies list them right.
async fn read_registration_ids(app: &TestApp, account: &mut Account) {
    let list: DeviceListJson = app
        .client
        .http()
        .get(app.client.url("/v1/devices"))
        .header("Authorization", account.devices[0].authorization())
        .send()
        .await
        .expect("devices answer")
        .json()
        .await
        .expect("a device list");
    account.registration_ids = list
        .devices
        .iter()
        .map(|d| (d.id, d.registration_id))
        .collect();
    // The attributes a primary re-sends must keep its registration id (else its messages
    // would be stale).
    account.attributes.registration_id = i64::from(account.registration_ids[&1]);
}

impl World {
    /// Alice with a primary and two linked devices (2, 3), Bob with a primary only.
    pub async fn build(app: &TestApp) -> Self {
        let mut alice = register(app, [0xa1; 16]).await;
        link(app, &mut alice).await;
        link(app, &mut alice).await;
        let mut bob = register(app, [0xb0; 16]).await;
        read_registration_ids(app, &mut alice).await;
        read_registration_ids(app, &mut bob).await;
        assert_eq!(
            alice.registration_ids.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        Self {
            alice,
            bob,
            unknown: Aci::random(),
            wrong_password: "a-wrong-password-of-good-length".into(),
        }
    }

    /// The device a caller authenticates as, if it presents valid credentials.
    pub fn device(&self, caller: Caller) -> Option<&DeviceCredentials> {
        match caller {
            Caller::OtherAccount => Some(self.bob.device(1)),
            Caller::Linked => Some(self.alice.device(2)),
            Caller::Primary | Caller::Both => Some(self.alice.device(1)),
            _ => None,
        }
    }

    /// The account of the caller's device, if it authenticates.
    pub fn account(&self, caller: Caller) -> Option<&Account> {
        match caller {
            Caller::OtherAccount => Some(&self.bob),
            Caller::Linked | Caller::Primary | Caller::Both => Some(&self.alice),
            _ => None,
        }
    }

    /// The `Authorization` header the caller sends (over HTTP, on the socket upgrade, and
    /// inside the tunnel, where only registration and linking read it).
    pub fn authorization(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::Garbage => Some("Basic !!!".into()),
            Caller::WrongPassword => Some(basic_auth(
                &format!("{}.1", self.alice.aci()),
                &self.wrong_password,
            )),
            Caller::UnknownAccount => Some(basic_auth(
                &format!("{}.1", self.unknown),
                &self.wrong_password,
            )),
            other => self.device(other).map(DeviceCredentials::authorization),
        }
    }

    /// The `Unidentified-Access-Key` the caller sends.
    pub fn access_key(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::KeyRight | Caller::Both => Some(encode_base64(&self.alice.access_key)),
            Caller::KeyWrong => Some(encode_base64(&[0x5a; 16])),
            _ => None,
        }
    }

    /// The caller's headers as `(name, value)` pairs.
    pub fn headers(&self, caller: Caller) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(value) = self.authorization(caller) {
            headers.push(("Authorization", value));
        }
        if let Some(value) = self.access_key(caller) {
            headers.push(("Unidentified-Access-Key", value));
        }
        headers
    }

    /// Every ACI the world knows, for the "never another account's data" scan.
    pub fn accounts(&self) -> [&Account; 2] {
        [&self.alice, &self.bob]
    }
}

/// The sockets the tunnelled half of the matrix uses: one per authenticated device, and one
/// anonymous socket for every caller that cannot open an authenticated one.
pub struct Sockets {
    pub anonymous: WsClient,
    pub alice_primary: WsClient,
    pub alice_linked: WsClient,
    pub bob: WsClient,
}

impl Sockets {
    pub async fn open(app: &TestApp, world: &World) -> Self {
        let connect = |credentials: Option<&DeviceCredentials>| {
            let credentials = credentials.cloned();
            let address = app.address.clone();
            async move {
                WsClient::connect(&address, credentials.as_ref())
                    .await
                    .expect("the socket opens")
            }
        };
        Self {
            anonymous: connect(None).await,
            alice_primary: connect(Some(world.alice.device(1))).await,
            alice_linked: connect(Some(world.alice.device(2))).await,
            bob: connect(Some(world.bob.device(1))).await,
        }
    }

    /// The socket a caller's tunnelled requests go through.
    pub fn of(&self, caller: Caller) -> &WsClient {
        match caller {
            Caller::OtherAccount => &self.bob,
            Caller::Linked => &self.alice_linked,
            Caller::Primary | Caller::Both => &self.alice_primary,
            _ => &self.anonymous,
        }
    }
}
