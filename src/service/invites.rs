//! Who may register (`registration = open | token | closed`) and the invite tokens that
//! admit a registration in `token` mode. A refusal is a 403 whose message says what the
//! server wants, never which part of a presented token was wrong.

use std::sync::Arc;

use crate::config::{Clock, RegistrationMode};
use crate::domain::invites::{
    Invite, MAX_INVITE_TOKEN_CHARS, MAX_INVITE_USES, Redeemed, new_token, token_hash,
};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::storage::invites::InviteStore;

/// A registration let in, holding the invite use it took (if any) until it is stored.
#[derive(Debug)]
pub struct Admission(Option<i64>);

#[derive(Clone)]
pub struct InviteService {
    store: Arc<dyn InviteStore>,
    mode: RegistrationMode,
    clock: Clock,
    metrics: Metrics,
}

impl InviteService {
    pub fn new(
        store: Arc<dyn InviteStore>,
        mode: RegistrationMode,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        for reason in ["closed", "no_token", "invalid_token"] {
            metrics.registrations_refused.with_label_values(&[reason]);
        }
        Self {
            store,
            mode,
            clock,
            metrics,
        }
    }

    fn refuse(&self, reason: &str, message: &str) -> AppError {
        self.metrics
            .registrations_refused
            .with_label_values(&[reason])
            .inc();
        AppError::Forbidden(message.into())
    }

    /// Lets a registration in, or refuses it (403): in `token` mode it takes one use of the
    /// invite `token` names.
    pub async fn admit(&self, token: Option<&str>) -> Result<Admission, AppError> {
        match self.mode {
            RegistrationMode::Open => Ok(Admission(None)),
            RegistrationMode::Closed => {
                Err(self.refuse("closed", "registration is closed on this server"))
            }
            RegistrationMode::Token => {
                let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
                    return Err(self.refuse(
                        "no_token",
                        "this server registers accounts only with an invite token (inviteToken)",
                    ));
                };
                let redeemed = if token.chars().count() > MAX_INVITE_TOKEN_CHARS {
                    Redeemed::Unknown
                } else {
                    self.store
                        .redeem(&token_hash(token), self.clock.now_ms())
                        .await?
                };
                match redeemed {
                    Redeemed::Admitted(id) => Ok(Admission(Some(id))),
                    other => {
                        tracing::info!(outcome = ?other, "registration refused: invite token");
                        Err(self.refuse(
                            "invalid_token",
                            "the invite token is not valid: unknown, expired, used up or revoked",
                        ))
                    }
                }
            }
        }
    }

    /// The registration `admission` let in was not stored: its use goes back.
    pub async fn give_back(&self, admission: Admission) {
        if let Admission(Some(id)) = admission
            && let Err(e) = self.store.give_back(id).await
        {
            tracing::warn!(error = %e, invite = id, "could not give an invite use back");
        }
    }

    /// A new invite for `uses` registrations, valid until `expires_ms` (or for good): the
    /// token, shown once, and the invite's id.
    pub async fn create(
        &self,
        uses: u32,
        expires_ms: Option<i64>,
    ) -> Result<(String, i64), AppError> {
        if !(1..=MAX_INVITE_USES).contains(&uses) {
            return Err(AppError::BadRequest(format!(
                "an invite admits 1 to {MAX_INVITE_USES} registrations"
            )));
        }
        let (token, hash) = new_token();
        let id = self
            .store
            .create(&hash, uses, expires_ms, self.clock.now_ms())
            .await?;
        Ok((token, id))
    }

    pub async fn list(&self) -> Result<Vec<Invite>, AppError> {
        Ok(self.store.list().await?)
    }

    pub async fn revoke(&self, id: i64) -> Result<bool, AppError> {
        Ok(self.store.revoke(id).await?)
    }
}
