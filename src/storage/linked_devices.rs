//! Which device linked with which code, for the primary device that waits to hear it
//! (`GET /v1/devices/wait_for_linked_device/{tokenIdentifier}`, PROTOCOL.md 16.2): a record
//! under the code's token identifier, kept an hour, and a wake-up of every waiter on every
//! pod when it is written. Redis (a key and a pub/sub channel) or memory.

use std::time::Duration;

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::ids::{Aci, DeviceId};

/// How long a linked device stays recorded under its code's token identifier.
pub const LINKED_DEVICE_TTL: Duration = Duration::from_secs(3600);

/// The device that linked with a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkedDevice {
    pub aci: Aci,
    pub id: DeviceId,
}

impl LinkedDevice {
    /// `<aci>.<device id>`, the stored form.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.aci, self.id)
    }

    pub fn decode(value: &str) -> Option<Self> {
        let (aci, id) = value.split_once('.')?;
        Some(Self {
            aci: aci.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

#[async_trait]
pub trait LinkedDeviceStore: Send + Sync {
    /// Records that `device` linked with the code whose token identifier is `token`, for
    /// `ttl`, and wakes every waiter for `token` on every pod.
    async fn record_linked(
        &self,
        token: &str,
        device: LinkedDevice,
        ttl: Duration,
    ) -> StorageResult<()>;

    /// The device recorded under `token`: at once when it is there, else the first one
    /// recorded within `timeout`; `None` when none is by then.
    async fn wait_for_linked(
        &self,
        token: &str,
        timeout: Duration,
    ) -> StorageResult<Option<LinkedDevice>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_device_round_trips_through_its_stored_form() {
        let device = LinkedDevice {
            aci: Aci::random(),
            id: DeviceId::new(5).unwrap(),
        };
        assert_eq!(LinkedDevice::decode(&device.encode()), Some(device));
        assert_eq!(LinkedDevice::decode("nonsense"), None);
        assert_eq!(LinkedDevice::decode(&format!("{}.0", device.aci)), None);
    }
}
