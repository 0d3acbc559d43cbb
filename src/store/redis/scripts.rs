//! The Lua scripts that keep a session's value and its index entry in step, atomically.
//!
//! Every script names every key it touches in `KEYS` (the session, `<prefix>index`, and the user sets
//! of the session's old and new user), so Redis runs it as one step: no reader ever sees a session
//! without its index entries or the reverse. A script never derives a key name itself: when the caller
//! may not know a session's stored user (a delete, a save that changes the user), the script checks
//! the caller's belief against the stored JSON and answers the right user instead of writing, and the
//! caller tries again naming the right set. That keeps the key layout in Rust
//! ([`super::RedisStore::user_key`]) and every key declared, as Redis Cluster requires.

use redis::Script;
use std::sync::OnceLock;

/// The per-user index's upkeep, shared by the scripts that write one: drops members whose sessions
/// have expired (their score is the session's expiry) and pushes the set's own TTL out to its latest
/// member's expiry, so the set never outlives the sessions it lists.
const BOUND_USER_SET: &str = r"
local function bound_user_set(k, now)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  local top = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  if #top == 2 then
    local ttl = math.floor(tonumber(top[2]) - tonumber(now))
    if ttl < 1 then ttl = 1 end
    redis.call('PEXPIRE', k, ttl)
  end
end
";

/// The user a stored value belongs to, as the scripts compare it: `''` for none (or not a record),
/// `'=' .. user` otherwise (so the empty user id is still a user).
const STORED_USER: &str = r"
local function stored_user(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and type(rec.user) == 'string' then
    return '=' .. rec.user
  end
  return ''
end
";

/// `SET NX PX`, index the session, and add it to its user's set.
///
/// KEYS: session, index, [user set]. ARGV: value, ttl ms, expires (score), member, now.
/// Answers 1 when stored (or when the key already holds exactly this value: a retried create whose
/// first answer was lost), 0 when the key was taken. Also drops up to 8 index entries whose sessions
/// expired, so the index does not grow without bound between cleanups (amortised, O(log n) each).
const CREATE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  -- The very value we are creating: this is a retry of a create whose answer was lost (the
  -- connection dropped after Redis ran it). It succeeded; say so.
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, 8)
if #old > 0 then
  redis.call('ZREM', KEYS[2], unpack(old))
end
if KEYS[3] then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  bound_user_set(KEYS[3], ARGV[5])
end
return 1
";

/// Compare-and-set (by the value itself or its digest), moving the session between user sets when
/// its user changes.
///
/// KEYS: session, index, then the user sets named by ARGV[6] and ARGV[7] (the stored user's, then the
/// new user's when it differs). ARGV: the expected value (the value itself, or its sha1 hex), value, ttl ms, expires (score), member,
/// stored user as the caller believes it (`''` none, `'=' .. user`), new user (same encoding),
/// `'1'` to check the stored user (the caller does not know it), now, `'1'` to read the session
/// again after writing it (the read cache's connection: Redis stops tracking a key for every client
/// when it changes, and a read inside a script tracks it again for the caller), `'1'` when the
/// expiry (the score) is the one the stored value has, so the index and an unchanged user's set
/// already hold it and are left alone.
///
/// Answers `{0}` when the session is gone (or not a string: not ours to overwrite), writing
/// nothing and never recreating it; `{1}` when the stored value still was the expected one and
/// the new value is written (TTL refreshed); `{2, current}` otherwise, for the caller to merge;
/// `{3, stored user}` when asked to check the stored user and it is not the one the caller named
/// (nothing written: the caller names the right set and tries again).
const SAVE: &str = r"
local oldk, newk
local i = 3
if ARGV[6] ~= '' then oldk = KEYS[i]; i = i + 1 end
if ARGV[7] ~= '' then
  if ARGV[7] == ARGV[6] then newk = oldk else newk = KEYS[i] end
end
local cur = redis.pcall('GET', KEYS[1])
if (type(cur) == 'table' and cur.err) or not cur then
  redis.call('ZREM', KEYS[2], ARGV[5])
  if oldk then redis.call('ZREM', oldk, ARGV[5]) end
  return {0}
end
if cur ~= ARGV[1] and redis.sha1hex(cur) ~= ARGV[1] then
  return {2, cur}
end
if ARGV[8] == '1' then
  local su = stored_user(cur)
  if su ~= ARGV[6] then return {3, su} end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local kept = ARGV[11] == '1'
if not kept then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5]) end
if oldk and oldk ~= newk then
  redis.call('ZREM', oldk, ARGV[5])
  bound_user_set(oldk, ARGV[9])
end
if newk and (newk ~= oldk or not kept) then
  redis.call('ZADD', newk, ARGV[4], ARGV[5])
  bound_user_set(newk, ARGV[9])
end
if ARGV[10] == '1' then redis.call('GET', KEYS[1]) end
return {1}
";

/// Deletes a session with its index entry and its user-set entry.
///
/// KEYS: session, index, [the user set of ARGV[2]]. ARGV: member, the stored user as the caller
/// believes it (`''` none, `'=' .. user`), now.
/// Answers `{n}` (keys deleted, 0 or 1), or `{-1, stored user}` without deleting anything when the
/// session belongs to another user than the caller named (the caller names the right set and tries
/// again).
const DELETE: &str = r"
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' then
  local su = stored_user(cur)
  if su ~= ARGV[2] then return {-1, su} end
end
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if KEYS[3] then
  redis.call('ZREM', KEYS[3], ARGV[1])
  bound_user_set(KEYS[3], ARGV[3])
end
return {n}
";

/// A user's sessions: prunes expired members, then answers up to ARGV[2] members, soonest expiry
/// first.
///
/// KEYS: user set. ARGV: now, count.
const USER_LIST: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
";

/// Drops members of a sorted set (the index, a user set) whose session key no longer exists (expired,
/// evicted, deleted behind the store's back), checked inside the script so a session created
/// meanwhile under the same key is never dropped.
///
/// KEYS: the set, then one session key per member. ARGV: the members. Answers how many went.
const REPAIR: &str = r"
local n = 0
for i, m in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    n = n + redis.call('ZREM', KEYS[1], m)
  end
end
return n
";

/// One page of an index (the index, or a cluster shard's), ordered by (expiry, member), live entries
/// only, strictly after the cursor (score, member).
///
/// KEYS: index. ARGV: now, count, cursor score ('' for the first page), cursor member.
/// Answers `member, score, member, score, ...`. When the cursor's member is still there with its
/// score, the page starts right after its rank. Otherwise (it moved or vanished: a listing drops the
/// index entries of vanished sessions, and the cursor may be one) it starts after the entries scored
/// below the cursor and the ones tied with it whose member sorts up to the cursor's, compared byte by
/// byte as Redis orders ties (Lua's `<` would follow the server's locale). Ties are few (the same
/// expiry millisecond). So pages neither repeat nor skip an entry that lived throughout.
const PAGE: &str = r"
local start = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
if ARGV[3] ~= '' then
  local from
  local s = redis.call('ZSCORE', KEYS[1], ARGV[4])
  if s and tonumber(s) == tonumber(ARGV[3]) then
    from = redis.call('ZRANK', KEYS[1], ARGV[4]) + 1
  else
    local function le(a, b)
      for i = 1, math.min(#a, #b) do
        local x, y = string.byte(a, i), string.byte(b, i)
        if x ~= y then return x < y end
      end
      return #a <= #b
    end
    from = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[3])
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[3])) do
      if le(m, ARGV[4]) then from = from + 1 else break end
    end
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
    pub(super) user_list: Script,
    pub(super) repair: Script,
}

/// The scripts, hashed once per process.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        create: Script::new(&[BOUND_USER_SET, CREATE].concat()),
        save: Script::new(&[BOUND_USER_SET, STORED_USER, SAVE].concat()),
        delete: Script::new(&[BOUND_USER_SET, STORED_USER, DELETE].concat()),
        page: Script::new(PAGE),
        trim: Script::new(TRIM),
        user_list: Script::new(USER_LIST),
        repair: Script::new(REPAIR),
    })
}
