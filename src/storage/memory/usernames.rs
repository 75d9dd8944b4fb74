//! Username hashes and links in memory, with the rules of the Postgres tables: one row per
//! hash (its account, confirmed or reserved or held, and until when) and one per account
//! (its reservation and link), with two indexes (each account's username, each link handle's
//! account) so that nothing but a hold change scans. One lock over all, so every operation
//! is one atomic step.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::ids::Aci;
use crate::domain::usernames::{
    EncryptedUsername, HOLD_MS, MAX_HOLDS, RESERVATION_MS, UsernameHash,
};
use crate::storage::usernames::{AccountUsername, Confirmed, UsernameStore};
use crate::storage::{StorageError, StorageResult};

#[derive(Clone, Debug)]
struct HashRow {
    aci: Aci,
    confirmed: bool,
    reserved_until_ms: Option<i64>,
    held_until_ms: Option<i64>,
    reclaimable: bool,
}

impl HashRow {
    /// Whether `aci` may reserve or confirm this hash at `now_ms`.
    fn free_for(&self, aci: Aci, now_ms: i64) -> bool {
        !self.confirmed
            && (self.aci == aci
                || (self.reserved_until_ms.is_none_or(|t| t <= now_ms)
                    && self.held_until_ms.is_none_or(|t| t <= now_ms)))
    }
}

#[derive(Clone, Debug, Default)]
struct AccountRow {
    reserved: Option<UsernameHash>,
    link: Option<(Uuid, EncryptedUsername)>,
}

#[derive(Default)]
struct State {
    hashes: HashMap<UsernameHash, HashRow>,
    accounts: HashMap<Aci, AccountRow>,
    /// The confirmed row of each account that has one.
    usernames: HashMap<Aci, UsernameHash>,
    /// The account of each link handle.
    handles: HashMap<Uuid, Aci>,
}

impl State {
    fn confirmed_of(&self, aci: Aci) -> Option<UsernameHash> {
        self.usernames.get(&aci).copied()
    }

    /// Replaces the account's link, keeping the handle index in step.
    fn set_link(&mut self, aci: Aci, link: Option<(Uuid, EncryptedUsername)>) {
        let row = self.accounts.entry(aci).or_default();
        if let Some((old, _)) = row.link.take() {
            self.handles.remove(&old);
        }
        if let Some((handle, _)) = &link {
            self.handles.insert(*handle, aci);
        }
        row.link = link;
    }

    /// Puts the account's confirmed hash on hold and keeps its newest `MAX_HOLDS` holds.
    fn hold_current(&mut self, aci: Aci, now_ms: i64) {
        if let Some(current) = self.usernames.remove(&aci)
            && let Some(row) = self.hashes.get_mut(&current)
        {
            row.confirmed = false;
            row.reserved_until_ms = None;
            row.held_until_ms = Some(now_ms + HOLD_MS);
        }
        let mut holds: Vec<(UsernameHash, i64)> = self
            .hashes
            .iter()
            .filter(|(_, r)| r.aci == aci && !r.confirmed)
            .filter_map(|(h, r)| r.held_until_ms.map(|t| (*h, t)))
            .collect();
        holds.sort_by_key(|(_, until)| std::cmp::Reverse(*until));
        for (index, (hash, until)) in holds.into_iter().enumerate() {
            if index >= MAX_HOLDS || until <= now_ms {
                self.hashes.remove(&hash);
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryUsernameStore {
    state: Mutex<State>,
}

impl MemoryUsernameStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> StorageResult<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| StorageError::Backend(anyhow::anyhow!("username store lock poisoned")))
    }
}

#[async_trait]
impl UsernameStore for MemoryUsernameStore {
    async fn reserve(
        &self,
        aci: Aci,
        hashes: &[UsernameHash],
        now_ms: i64,
    ) -> StorageResult<Option<UsernameHash>> {
        let mut state = self.state()?;
        if let Some(current) = state.confirmed_of(aci)
            && hashes.contains(&current)
        {
            return Ok(Some(current));
        }
        let Some(hash) = hashes
            .iter()
            .find(|h| {
                state
                    .hashes
                    .get(h)
                    .is_none_or(|row| row.free_for(aci, now_ms))
            })
            .copied()
        else {
            return Ok(None);
        };
        let previous = state
            .accounts
            .entry(aci)
            .or_default()
            .reserved
            .replace(hash);
        if let Some(previous) = previous.filter(|p| *p != hash) {
            release_reservation(&mut state, aci, previous, now_ms);
        }
        let row = state.hashes.entry(hash).or_insert(HashRow {
            aci,
            confirmed: false,
            reserved_until_ms: None,
            held_until_ms: None,
            reclaimable: false,
        });
        if row.aci != aci {
            *row = HashRow {
                aci,
                confirmed: false,
                reserved_until_ms: None,
                held_until_ms: None,
                reclaimable: false,
            };
        }
        row.reserved_until_ms = Some(now_ms + RESERVATION_MS);
        Ok(Some(hash))
    }

    async fn confirm(
        &self,
        aci: Aci,
        hash: UsernameHash,
        encrypted: Option<&EncryptedUsername>,
        now_ms: i64,
    ) -> StorageResult<Confirmed> {
        let mut state = self.state()?;
        let account = state.accounts.get(&aci).cloned().unwrap_or_default();
        if state.confirmed_of(aci) == Some(hash) {
            return Ok(Confirmed::Confirmed {
                link_handle: account.link.map(|(handle, _)| handle),
            });
        }
        if account.reserved != Some(hash) {
            return Ok(Confirmed::NoReservation);
        }
        let reclaimable = match state.hashes.get(&hash) {
            Some(row) if !row.free_for(aci, now_ms) => return Ok(Confirmed::Taken),
            Some(row) => row.aci == aci && row.reclaimable,
            None => false,
        };
        state.hold_current(aci, now_ms);
        state.hashes.insert(
            hash,
            HashRow {
                aci,
                confirmed: true,
                reserved_until_ms: None,
                held_until_ms: None,
                reclaimable: false,
            },
        );
        state.usernames.insert(aci, hash);
        let old_handle = account.link.map(|(handle, _)| handle);
        let link = encrypted.map(|value| {
            let handle = old_handle
                .filter(|_| reclaimable)
                .unwrap_or_else(Uuid::new_v4);
            (handle, value.clone())
        });
        let link_handle = link.as_ref().map(|(handle, _)| *handle);
        state.accounts.entry(aci).or_default().reserved = None;
        state.set_link(aci, link);
        Ok(Confirmed::Confirmed { link_handle })
    }

    async fn clear(&self, aci: Aci, now_ms: i64) -> StorageResult<()> {
        let mut state = self.state()?;
        state.hold_current(aci, now_ms);
        state.set_link(aci, None);
        Ok(())
    }

    async fn lookup(&self, hash: UsernameHash) -> StorageResult<Option<Aci>> {
        let state = self.state()?;
        Ok(state
            .hashes
            .get(&hash)
            .filter(|row| row.confirmed)
            .map(|row| row.aci))
    }

    async fn username(&self, aci: Aci) -> StorageResult<AccountUsername> {
        let state = self.state()?;
        Ok(AccountUsername {
            hash: state.confirmed_of(aci),
            link_handle: state
                .accounts
                .get(&aci)
                .and_then(|row| row.link.as_ref().map(|(handle, _)| *handle)),
        })
    }

    async fn set_link(
        &self,
        aci: Aci,
        encrypted: &EncryptedUsername,
        keep_handle: bool,
    ) -> StorageResult<Option<Uuid>> {
        let mut state = self.state()?;
        if state.confirmed_of(aci).is_none() {
            return Ok(None);
        }
        let handle = state
            .accounts
            .get(&aci)
            .and_then(|row| row.link.as_ref().map(|(handle, _)| *handle))
            .filter(|_| keep_handle)
            .unwrap_or_else(Uuid::new_v4);
        state.set_link(aci, Some((handle, encrypted.clone())));
        Ok(Some(handle))
    }

    async fn clear_link(&self, aci: Aci) -> StorageResult<()> {
        let mut state = self.state()?;
        state.set_link(aci, None);
        Ok(())
    }

    async fn link(&self, handle: Uuid) -> StorageResult<Option<EncryptedUsername>> {
        let state = self.state()?;
        let aci = state.handles.get(&handle);
        Ok(aci
            .and_then(|aci| state.accounts.get(aci))
            .and_then(|row| row.link.as_ref())
            .map(|(_, value)| value.clone()))
    }

    async fn forget(&self, aci: Aci) -> StorageResult<()> {
        let mut state = self.state()?;
        state.hashes.retain(|_, row| row.aci != aci);
        state.set_link(aci, None);
        state.accounts.remove(&aci);
        state.usernames.remove(&aci);
        Ok(())
    }
}

/// Lets the account's earlier reservation of `hash` go: the row goes, unless it is one of
/// the account's holds, which stays a hold.
fn release_reservation(state: &mut State, aci: Aci, hash: UsernameHash, now_ms: i64) {
    let Some(row) = state.hashes.get_mut(&hash) else {
        return;
    };
    if row.aci != aci || row.confirmed {
        return;
    }
    if row.held_until_ms.is_some_and(|t| t > now_ms) {
        row.reserved_until_ms = None;
    } else {
        state.hashes.remove(&hash);
    }
}
