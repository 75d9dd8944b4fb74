//! The embedded mode's notifier: one process, so events go straight to the registry.

use std::sync::Arc;

use async_trait::async_trait;

use bytes::Bytes;

use super::{DeviceEvent, Notifier, ProvisioningSockets, Registry};
use crate::domain::ids::{Aci, DeviceId};
use crate::storage::StorageResult;

pub struct LocalNotifier {
    registry: Arc<Registry>,
    provisioning: Arc<ProvisioningSockets>,
}

impl LocalNotifier {
    pub fn new(registry: Arc<Registry>, provisioning: Arc<ProvisioningSockets>) -> Self {
        Self {
            registry,
            provisioning,
        }
    }
}

#[async_trait]
impl Notifier for LocalNotifier {
    async fn publish(&self, aci: Aci, id: DeviceId, event: DeviceEvent) -> StorageResult<bool> {
        let online = self.registry.get(aci, id).is_some();
        self.registry.dispatch(aci, id, event);
        Ok(online)
    }

    async fn subscribe(&self, _aci: Aci, _id: DeviceId) -> StorageResult<()> {
        Ok(())
    }

    async fn unsubscribe(&self, _aci: Aci, _id: DeviceId) -> StorageResult<()> {
        Ok(())
    }

    async fn publish_provisioning(&self, address: &str, body: Bytes) -> StorageResult<bool> {
        Ok(self.provisioning.deliver(address, body))
    }

    async fn subscribe_provisioning(&self, _address: &str) -> StorageResult<()> {
        Ok(())
    }

    async fn unsubscribe_provisioning(&self, _address: &str) -> StorageResult<()> {
        Ok(())
    }
}
