//! `auth`: `GET /v1/accounts/whoami` with credentials (served from the verified-credential
//! cache after warm-up), without (401 at once), and with a wrong password (a full argon2
//! verification each: the cost the cache saves).

use std::sync::Arc;
use std::time::Duration;

use super::{Env, Target, closed_loop, set_latency};
use crate::options::Scenario;
use crate::report::Outcome;

pub async fn run(env: &Env, target: &Target) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!target.is_relay(), "the relay has no accounts");
    let o = &env.options;
    let client = env.client.clone();
    let credentials = Arc::new(
        crate::accounts::register(&client, 1, false)
            .await?
            .remove(0),
    );
    let authed = {
        let (client, credentials) = (client.clone(), credentials.clone());
        move || {
            let (client, credentials) = (client.clone(), credentials.clone());
            async move { client.whoami(&credentials).await.is_ok() }
        }
    };
    let anonymous = {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                matches!(
                    client.http().get(client.url("/v1/accounts/whoami")).send().await,
                    Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED
                )
            }
        }
    };
    let wrong_password = {
        let client = client.clone();
        let mut wrong = (*credentials).clone();
        wrong.password = sealpost::client::random_password();
        let wrong = Arc::new(wrong);
        move || {
            let (client, wrong) = (client.clone(), wrong.clone());
            async move {
                client.whoami(&wrong).await.err().and_then(|e| e.status())
                    == Some(reqwest::StatusCode::UNAUTHORIZED)
            }
        }
    };
    let total = Duration::from_secs(2 * (o.warmup + o.seconds) + o.seconds.min(5));
    let progress = env.progress(Scenario::Auth, target, total);
    let (c, max) = (o.concurrency, o.max_requests);
    closed_loop(&progress, c, o.warmup, max, authed.clone()).await?;
    let with = closed_loop(&progress, c, o.seconds, max, authed).await?;
    closed_loop(&progress, c, o.warmup, max, anonymous.clone()).await?;
    let without = closed_loop(&progress, c, o.seconds, max, anonymous).await?;
    // argon2 is slow by design: a shorter phase measures it well enough.
    let argon2 = closed_loop(&progress, c, o.seconds.min(5), max, wrong_password).await?;
    let mut outcome = Outcome::new(Scenario::Auth, target.name);
    outcome.server = progress.finish();
    set_latency(&mut outcome, &with.hist);
    outcome
        .set("authenticated_per_s", with.per_second())
        .set("unauthenticated_per_s", without.per_second())
        .set("argon2_per_s", argon2.per_second())
        .set(
            "authenticated_over_unauthenticated",
            with.per_second() / without.per_second(),
        )
        .set(
            "unauthenticated_p99_ms",
            without.hist.value_at_quantile(0.99) as f64 / 1000.0,
        )
        .set(
            "errors",
            (with.errors + without.errors + argon2.errors) as f64,
        );
    Ok(outcome)
}
