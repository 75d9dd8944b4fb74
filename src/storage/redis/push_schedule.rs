//! Scheduled wake-ups in Redis (PROTOCOL.md 11.4, 11.6): two sorted sets,
//! `{prefix}push:{schedule}:background` and `...:delayed`, scored by due time with members
//! `<aci>:<device>`, and `...:last:<aci>:<device>` holding the time of the device's last
//! background push. Every operation that reads and writes is one Lua script, so pods never
//! interleave; every key carries the `{schedule}` hash tag, so each script stays in one
//! Redis Cluster slot (take_due names the `last` keys itself, which only a shared slot allows).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{RedisStore, redis_error};
use crate::domain::ids::{Aci, DeviceId};
use crate::storage::{DuePush, PushScheduleStore, ScheduledKind, StorageError, StorageResult};

/// KEYS[1] background set, KEYS[2] the device's last background push; ARGV: now, interval,
/// member. The last push is the time a caller passed, compared with the time this caller
/// passes (its expiry only collects garbage). Returns the due time in effect.
const SCHEDULE_BACKGROUND: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[2]))
local at = now
if last ~= nil and now - last < interval then
  at = last + interval
end
redis.call('ZADD', KEYS[1], 'NX', string.format('%d', at), ARGV[3])
return tonumber(redis.call('ZSCORE', KEYS[1], ARGV[3]))
"#;

/// KEYS[1] background set, KEYS[2] delayed set; ARGV[1] member. Returns how many it removed.
const CANCEL: &str = r#"
return redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
"#;

/// KEYS[1] background set, KEYS[2] delayed set; ARGV: now, limit, interval, the prefix of
/// the `last` keys. Merges the due heads of both sets, earliest first (a delayed one first
/// on a tie: it is urgent), removes what it returns and records background sends.
/// Returns a flat list: kind ('b' or 'd'), member, ...
const TAKE_DUE: &str = r#"
local now = ARGV[1]
local limit = tonumber(ARGV[2])
local background = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local delayed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local taken = {}
local b, d = 1, 1
while #taken < 2 * limit and (b <= #background or d <= #delayed) do
  local take_delayed = b > #background
    or (d <= #delayed and tonumber(delayed[d + 1]) <= tonumber(background[b + 1]))
  if take_delayed then
    redis.call('ZREM', KEYS[2], delayed[d])
    taken[#taken + 1] = 'd'
    taken[#taken + 1] = delayed[d]
    d = d + 2
  else
    redis.call('ZREM', KEYS[1], background[b])
    redis.call('SET', ARGV[4] .. background[b], now, 'PX', ARGV[3])
    taken[#taken + 1] = 'b'
    taken[#taken + 1] = background[b]
    b = b + 2
  end
end
return taken
"#;

static SCHEDULE_BACKGROUND_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(SCHEDULE_BACKGROUND));
static CANCEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CANCEL));
static TAKE_DUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_DUE));

fn member(aci: Aci, device: DeviceId) -> String {
    format!("{aci}:{device}")
}

fn parse_member(member: &str) -> StorageResult<(Aci, DeviceId)> {
    let corrupt = || StorageError::Backend(anyhow::anyhow!("scheduled push member is malformed"));
    let (aci, device) = member.rsplit_once(':').ok_or_else(corrupt)?;
    Ok((
        aci.parse().map_err(|_| corrupt())?,
        device.parse().map_err(|_| corrupt())?,
    ))
}

impl RedisStore {
    fn schedule_key(&self, rest: &str) -> String {
        self.key(&format!("push:{{schedule}}:{rest}"))
    }
}

#[async_trait]
impl PushScheduleStore for RedisStore {
    async fn schedule_background(
        &self,
        aci: Aci,
        device: DeviceId,
        now_ms: i64,
        interval_ms: i64,
    ) -> StorageResult<i64> {
        let member = member(aci, device);
        let mut conn = self.connection();
        SCHEDULE_BACKGROUND_SCRIPT
            .key(self.schedule_key("background"))
            .key(self.schedule_key(&format!("last:{member}")))
            .arg(now_ms)
            .arg(interval_ms)
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)
    }

    async fn schedule_delayed(&self, aci: Aci, device: DeviceId, at_ms: i64) -> StorageResult<()> {
        // One command, so atomic without a script; no NX: the new time replaces the old.
        let mut conn = self.connection();
        let _: i64 = redis::cmd("ZADD")
            .arg(self.schedule_key("delayed"))
            .arg(at_ms)
            .arg(member(aci, device))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn cancel(&self, aci: Aci, device: DeviceId) -> StorageResult<bool> {
        let mut conn = self.connection();
        let removed: i64 = CANCEL_SCRIPT
            .key(self.schedule_key("background"))
            .key(self.schedule_key("delayed"))
            .arg(member(aci, device))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(removed > 0)
    }

    async fn take_due(
        &self,
        now_ms: i64,
        limit: usize,
        interval_ms: i64,
    ) -> StorageResult<Vec<DuePush>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connection();
        let flat: Vec<String> = TAKE_DUE_SCRIPT
            .key(self.schedule_key("background"))
            .key(self.schedule_key("delayed"))
            .arg(now_ms)
            .arg(limit)
            // PX must be positive; a non-positive interval records nothing worth keeping.
            .arg(interval_ms.max(1))
            .arg(self.schedule_key("last:"))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        flat.chunks(2)
            .map(|pair| {
                let [kind, member] = pair else {
                    return Err(StorageError::Backend(anyhow::anyhow!(
                        "take_due answered an odd list"
                    )));
                };
                let (aci, device) = parse_member(member)?;
                let kind = match kind.as_str() {
                    "b" => ScheduledKind::Background,
                    _ => ScheduledKind::Delayed,
                };
                Ok(DuePush { aci, device, kind })
            })
            .collect()
    }

    async fn claim_job(&self, name: &str, ttl_ms: i64) -> StorageResult<bool> {
        // SET NX is one atomic command: exactly one caller sets it until it expires.
        let mut conn = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("job:{name}")))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reads_back_as_its_device() {
        let aci = Aci::random();
        let device = DeviceId::new(12).unwrap();
        assert_eq!(parse_member(&member(aci, device)).unwrap(), (aci, device));
        assert!(parse_member("no-colon").is_err());
        assert!(parse_member("not-an-aci:1").is_err());
    }
}
