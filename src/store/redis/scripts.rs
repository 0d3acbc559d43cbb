//! The Lua scripts that keep a session's value and its index entry in step, atomically.
//!
//! Every script names both keys it writes in `KEYS` (the session and `<prefix>index`), so Redis
//! runs it as one step: no reader ever sees a session without its index entry or the reverse.

use redis::Script;
use std::sync::OnceLock;

/// `SET NX PX` and index the session.
///
/// KEYS: session, index. ARGV: value, ttl ms, expires (score), member, now.
/// Answers 1 when stored, 0 when the key was taken. Also drops up to 8 index entries whose sessions
/// expired, so the index does not grow without bound between cleanups (amortised, O(log n) each).
const CREATE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, 8)
if #old > 0 then
  redis.call('ZREM', KEYS[2], unpack(old))
end
return 1
";

/// Compare-and-set by digest.
///
/// KEYS: session, index. ARGV: expected sha1 hex, value, ttl ms, expires (score), member.
/// Answers `{0}` when the session is gone (or not a string: not ours to overwrite), writing
/// nothing and never recreating it; `{1}` when the stored value still had the expected digest and
/// the new value is written (TTL refreshed); `{2, current}` otherwise, for the caller to merge.
const SAVE: &str = r"
local cur = redis.pcall('GET', KEYS[1])
if (type(cur) == 'table' and cur.err) or not cur then
  redis.call('ZREM', KEYS[2], ARGV[5])
  return {0}
end
if redis.sha1hex(cur) ~= ARGV[1] then
  return {2, cur}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return {1}
";

/// KEYS: session, index. ARGV: member. Answers how many keys were deleted (0 or 1).
const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
";

/// One page of the index, ordered by (expiry, member), live entries only.
///
/// KEYS: index. ARGV: now, count, cursor score ('' for the first page), cursor member.
/// Answers `member, score, member, score, ...`. A cursor whose member moved or vanished restarts
/// at its score, so a page may repeat an entry but never skips one that lived throughout.
const PAGE: &str = r"
local start = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
if ARGV[3] ~= '' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[4])
  local from
  if s and tonumber(s) == tonumber(ARGV[3]) then
    from = redis.call('ZRANK', KEYS[1], ARGV[4]) + 1
  else
    from = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[3])
  end
  if from > start then start = from end
end
return redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1, 'WITHSCORES')
";

/// Removes up to ARGV[2] index entries scored at or before ARGV[1]; answers how many.
const TRIM: &str = r"
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
end
return #old
";

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) save: Script,
    pub(super) delete: Script,
    pub(super) page: Script,
    pub(super) trim: Script,
}

/// The scripts, hashed once per process.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        create: Script::new(CREATE),
        save: Script::new(SAVE),
        delete: Script::new(DELETE),
        page: Script::new(PAGE),
        trim: Script::new(TRIM),
    })
}
