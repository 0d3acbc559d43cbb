//! The Lua scripts that keep a session's value and its index entries in step, atomically.
//!
//! Every script names every key it touches in `KEYS` (the session, `<prefix>index`, and the user sets
//! of the session's old and new user), so Redis runs it as one step: no reader ever sees a session
//! without its index entries or the reverse. A script never derives a key name itself: when the caller
//! may not know a session's stored user (a delete, a save that changes the user), the script checks
//! the caller's belief against the stored JSON and answers the right user instead of writing, and the
//! caller tries again naming the right set. That keeps the key layout in Rust and every key declared,
//! as Redis Cluster requires.
//!
//! The index and the user sets have no TTL of their own, so a `volatile-*` eviction policy (which only
//! evicts keys with one) can never separate them from the sessions they list. A user set's members are
//! never dropped by time (an instance whose clock runs ahead would hide other instances' live sessions
//! from a revocation): only once their session key is gone, checked by Redis (`REPAIR`), when the set
//! is listed or cleaned. A set whose last member goes is removed by Redis itself.
//!
//! Versions: a script reads the version of the stored value by the same rule as the Rust side
//! ([`VersionRule`](crate::store::VersionRule)): the integer after a prefix (the native format's
//! `{"lastAccess":`), or the value's SHA-1 when the prefix is empty or absent. The save script reads
//! only the value's first 64 bytes (`GETRANGE`) to learn it, so a write costs Redis the same whatever
//! the session holds; the whole value is read only to answer a conflict, check a user or a replay.

use redis::Script;
use std::sync::OnceLock;

/// Shared functions: the version of a stored value, and the user it belongs to.
const COMMON: &str = r"
-- The integer after `prefix` at the start of `s`, or nil.
local function leading_integer(s, prefix)
  if prefix ~= '' and string.sub(s, 1, #prefix) == prefix then
    local v = string.match(s, '^%d+', #prefix + 1)
    if v and #v <= 20 then return v end
  end
  return nil
end
local function version_of(cur, prefix)
  return leading_integer(cur, prefix) or redis.sha1hex(cur)
end
-- The version from the first bytes of a stored value (what GETRANGE 0 63 answered), or nil when they
-- cannot tell (no prefix, or the integer may go on past them): then ask version_of of the whole value.
local function head_version(head, prefix)
  local v = leading_integer(head, prefix)
  if v and #prefix + #v < #head then return v end
  return nil
end
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
/// KEYS: session, then (indexed) index and [user set]. ARGV: value, ttl ms, expires (score), member,
/// now, `'1'` when indexed.
/// Answers 1 when stored (or when the key already holds exactly this value: a retried create whose
/// first answer was lost), 0 when the key was taken. Also drops up to 8 index entries whose sessions
/// expired, so the index does not grow without bound between cleanups.
const CREATE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, 8)
  if #old > 0 then redis.call('ZREM', KEYS[2], unpack(old)) end
  if KEYS[3] then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4]) end
end
return 1
";

/// Compare-and-set, moving the session between user sets when its user changes. The arguments are
/// [`super::save::SaveArgs`]; see there for each one.
///
/// KEYS: session, then (indexed) index and the user sets named by ARGV[6] and ARGV[7] (the stored
/// user's, then the new user's when it differs).
///
/// Answers `{0}` when the session is gone (or not a string: not ours to overwrite), writing nothing
/// and never recreating it; `{1}` when the stored value was the expected one and the new value is
/// written (TTL refreshed); `{2, current}` otherwise, for the caller to merge; `{3, stored user}` when
/// asked to check the stored user and it is not the one the caller named; `{4}`, writing nothing, when
/// the call is a replay (ARGV[13]: sent again after its connection dropped) and the stored value
/// already is the new one.
const SAVE: &str = r"
local indexed = ARGV[12] == '1'
local oldk, newk
local i = 3
if indexed and ARGV[6] ~= '' then oldk = KEYS[i]; i = i + 1 end
if indexed and ARGV[7] ~= '' then
  if ARGV[7] == ARGV[6] then newk = oldk else newk = KEYS[i] end
end
-- The first bytes tell the version: the whole value (kilobytes, maybe) is read only when it is needed.
local head = redis.pcall('GETRANGE', KEYS[1], 0, 63)
if type(head) ~= 'string' or (head == '' and redis.call('EXISTS', KEYS[1]) == 0) then
  if indexed then
    redis.call('ZREM', KEYS[2], ARGV[5])
    if oldk then redis.call('ZREM', oldk, ARGV[5]) end
  end
  return {0}
end
local cur
local function whole()
  if not cur then cur = redis.call('GET', KEYS[1]) end
  return cur
end
if ARGV[13] == '1' and whole() == ARGV[2] then
  return {4}
end
if (head_version(head, ARGV[11]) or version_of(whole(), ARGV[11])) ~= ARGV[1] then
  return {2, whole()}
end
if ARGV[8] == '1' then
  local su = stored_user(whole())
  if su ~= ARGV[6] then return {3, su} end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if indexed then
  local kept = ARGV[10] == '1'
  if not kept then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5]) end
  if oldk and oldk ~= newk then redis.call('ZREM', oldk, ARGV[5]) end
  if newk and (newk ~= oldk or not kept) then redis.call('ZADD', newk, ARGV[4], ARGV[5]) end
end
return {1}
";

/// Moves a session to a new key in one step (one server and Sentinel; a cluster's keys live in
/// different slots): if the old key still holds the expected version, writes the new value under the
/// new key (`SET NX`), deletes the old key, and moves the index and user-set entries.
///
/// KEYS: old session, new session, then (indexed) index, [the old user's set], [the new user's set].
/// ARGV: expected version, value, ttl ms, expires (score), old member, new member, the stored user as
/// the caller believes it, the new user, version prefix, `'1'` when indexed, `'1'` when a replay.
/// Answers `{1}` when moved (or, for a replay, when the move already happened: the old key is gone
/// and the new one holds exactly this value, which no one else can write under a fresh random key),
/// `{0}` when the old key is gone, `{2, current}` when it changed (merge and retry), `{3, stored user}`
/// when its user is not the one named, `{5}` when the new key is taken.
const RENEW: &str = r"
local indexed = ARGV[10] == '1'
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then
  if ARGV[11] == '1' and redis.call('GET', KEYS[2]) == ARGV[2] then return {1} end
  return {0}
end
if version_of(cur, ARGV[9]) ~= ARGV[1] then return {2, cur} end
if indexed then
  local su = stored_user(cur)
  if su ~= ARGV[7] then return {3, su} end
end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {5} end
redis.call('DEL', KEYS[1])
if indexed then
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
  local i = 4
  if ARGV[7] ~= '' then redis.call('ZREM', KEYS[i], ARGV[5]); i = i + 1 end
  if ARGV[8] ~= '' then redis.call('ZADD', KEYS[i], ARGV[4], ARGV[6]) end
end
return {1}
";

/// Deletes a session with its index entry and its user-set entry; with an expected version, only if
/// the stored value still has it (a compare-and-delete).
///
/// KEYS: session, then (indexed) index and [the user set of ARGV[2]]. ARGV: member, the stored user as
/// the caller believes it (`''` none, `'=' .. user`), now, expected version (`''`: delete whatever is
/// there), version prefix, `'1'` when indexed.
/// Answers `{n}` (keys deleted, 0 or 1), `{-1, stored user}` without deleting anything when the
/// session belongs to another user than the caller named, or `{-2}` when the stored version is not
/// the expected one.
const DELETE: &str = r"
local indexed = ARGV[6] == '1'
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' then
  if ARGV[4] ~= '' and version_of(cur, ARGV[5]) ~= ARGV[4] then return {-2} end
  if indexed then
    local su = stored_user(cur)
    if su ~= ARGV[2] then return {-1, su} end
  end
end
local n = redis.call('DEL', KEYS[1])
if indexed then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[1]) end
end
return {n}
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
/// score, the page starts right after its rank. Otherwise (it moved or vanished) it starts after the
/// entries scored below the cursor and the ones tied with it whose member sorts up to the cursor's,
/// compared byte by byte as Redis orders ties. So pages neither repeat nor skip an entry that lived
/// throughout.
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

/// Puts a session back into the index and its user set when eviction dropped it from them (cleanup's
/// repair), only if the session still exists.
///
/// KEYS: session, index, [user set]. ARGV: member, expires (score). Answers 1 when something was added.
const REINDEX: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
if KEYS[3] then n = n + redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1]) end
if n > 0 then return 1 end
return 0
";

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) save: Script,
    pub(super) delete: Script,
    pub(super) renew: Script,
    pub(super) page: Script,
    pub(super) trim: Script,
    pub(super) repair: Script,
    pub(super) reindex: Script,
}

/// The scripts, hashed once per process.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        create: Script::new(&[COMMON, CREATE].concat()),
        save: Script::new(&[COMMON, SAVE].concat()),
        delete: Script::new(&[COMMON, DELETE].concat()),
        renew: Script::new(&[COMMON, RENEW].concat()),
        page: Script::new(PAGE),
        trim: Script::new(TRIM),
        repair: Script::new(REPAIR),
        reindex: Script::new(REINDEX),
    })
}
