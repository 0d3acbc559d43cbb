//! Where a session and its index entry live: the one place that knows the key layout.
//!
//! * **One server (and Sentinel)**: the session at `<prefix><store key>`, the index at
//!   `<prefix>index`: unchanged, so `redis-cli GET djforge:sess:<id>` shows a session.
//! * **Redis Cluster**: a script may only touch keys of one hash slot, and every create, save and
//!   delete writes a session *and* its index entry together. So the index is sharded: a session
//!   lives at `<prefix>{<c>}<store key>` and is indexed in `<prefix>{<c>}index`, where `<c>` is the
//!   first character of its store key. Both keys carry the hash tag `{<c>}`, so they share a slot and
//!   every script stays single-slot and atomic. Store keys are base64url SHA-256 digests, so their
//!   first character is uniform over 64 values: 64 shards, spread by their slots over the masters
//!   (with the default even split of 3 masters, each gets about a third). Count, list and cleanup
//!   visit the 64 shard indexes; `redis-cli -c GET 'djforge:sess:{a}a…'` shows a session.
//! * **Per-user sets** follow the same rule: one server keeps `<prefix>user:<id>`; a cluster keeps
//!   one set per user and shard, `<prefix>{<c>}user:<id>`, in the slot of the sessions it lists. A
//!   user's sessions cannot share one slot (they are spread by store key), and a single global set
//!   would need non-atomic two-step writes with repair; per-shard sets keep every write atomic, and
//!   listing a user's sessions visits the 64 sets instead (an admin-path cost, not a request cost).

use crate::id::StoreKey;

/// The characters a store key can start with (base64url), one shard each in cluster mode.
const SHARDS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The key layout of a store (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Layout {
    prefix: String,
    sharded: bool,
    /// `<prefix>index` (single) — or every `<prefix>{<c>}index` (cluster), in shard order.
    indexes: Vec<String>,
}

impl Layout {
    /// The layout for `prefix`; `sharded` in cluster mode.
    pub(super) fn new(prefix: &str, sharded: bool) -> Self {
        let indexes = if sharded {
            SHARDS
                .iter()
                .map(|&c| format!("{prefix}{{{}}}index", c as char))
                .collect()
        } else {
            vec![format!("{prefix}index")]
        };
        Layout {
            prefix: prefix.to_owned(),
            sharded,
            indexes,
        }
    }

    /// Whether the index is sharded (cluster mode).
    pub(super) fn sharded(&self) -> bool {
        self.sharded
    }

    fn shard(&self, member: &str) -> usize {
        let c = member.as_bytes().first().copied().unwrap_or(b'A');
        SHARDS.iter().position(|&s| s == c).unwrap_or(0)
    }

    /// The Redis key of the session whose store key is `member`.
    pub(super) fn session_key_of(&self, member: &str) -> String {
        // Built in one allocation (this runs on every load and save).
        let mut key = String::with_capacity(self.prefix.len() + 3 + member.len());
        key.push_str(&self.prefix);
        if self.sharded {
            key.push('{');
            key.push(char::from(SHARDS[self.shard(member)]));
            key.push('}');
        }
        key.push_str(member);
        key
    }

    /// The Redis key of a session.
    pub(super) fn session_key(&self, key: &StoreKey) -> String {
        self.session_key_of(key.as_str())
    }

    /// The index that holds `member` (same hash slot as its session in cluster mode).
    pub(super) fn index_of(&self, member: &str) -> &str {
        if self.sharded {
            &self.indexes[self.shard(member)]
        } else {
            &self.indexes[0]
        }
    }

    /// A per-user set (`suffix` is `user:<id>`) for the session `member`: `<prefix><suffix>`, or
    /// `<prefix>{<c>}<suffix>` in cluster mode (the session's hash slot).
    pub(super) fn user_key(&self, suffix: &str, member: &str) -> String {
        if self.sharded {
            let c = SHARDS[self.shard(member)] as char;
            format!("{}{{{c}}}{suffix}", self.prefix)
        } else {
            format!("{}{suffix}", self.prefix)
        }
    }

    /// Every set of one user: one, or one per shard in cluster mode.
    pub(super) fn user_keys(&self, suffix: &str) -> Vec<String> {
        if self.sharded {
            SHARDS
                .iter()
                .map(|&c| format!("{}{{{}}}{suffix}", self.prefix, c as char))
                .collect()
        } else {
            vec![format!("{}{suffix}", self.prefix)]
        }
    }

    /// Every index: one, or the 64 shards in order.
    pub(super) fn indexes(&self) -> &[String] {
        &self.indexes
    }

    /// The store key of a Redis key under the prefix, if it is a session key of this layout (not an
    /// index, not a foreign key).
    pub(super) fn store_key_of(&self, redis_key: &str) -> Option<StoreKey> {
        let rest = redis_key.strip_prefix(self.prefix.as_str())?;
        let id = if self.sharded {
            let (tag, id) = rest.strip_prefix('{')?.split_once('}')?;
            if tag.len() != 1 || !id.starts_with(tag) {
                return None;
            }
            id
        } else {
            rest
        };
        // `index` is the layout's own key (a store key could spell it; none the crate makes does).
        if id == "index" {
            return None;
        }
        StoreKey::parse(id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Token;

    #[test]
    fn one_server_keeps_the_plain_layout() {
        let l = Layout::new("djforge:sess:", false);
        let key = Token::generate().store_key();
        assert_eq!(
            l.session_key(&key),
            format!("djforge:sess:{}", key.as_str())
        );
        assert_eq!(l.index_of(key.as_str()), "djforge:sess:index");
        assert_eq!(l.indexes(), ["djforge:sess:index"]);
        assert_eq!(l.store_key_of(&l.session_key(&key)), Some(key));
        assert_eq!(l.store_key_of("djforge:sess:index"), None);
    }

    #[test]
    fn cluster_keys_share_a_hash_tag_with_their_index_shard() {
        let l = Layout::new("p:", true);
        assert_eq!(l.indexes().len(), 64);
        for _ in 0..200 {
            let key = Token::generate().store_key();
            let c = &key.as_str()[..1];
            let skey = l.session_key(&key);
            assert_eq!(skey, format!("p:{{{c}}}{}", key.as_str()));
            assert_eq!(l.index_of(key.as_str()), format!("p:{{{c}}}index"));
            assert_eq!(
                redis::cluster_routing::Slot::for_key(&skey),
                redis::cluster_routing::Slot::for_key(l.index_of(key.as_str()))
            );
            assert_eq!(l.store_key_of(&skey), Some(key));
        }
        assert_eq!(l.store_key_of("p:{A}index"), None);
        assert_eq!(l.store_key_of("p:{A}Bxx"), None);
    }

    #[test]
    fn the_64_shards_spread_over_three_even_slot_ranges() {
        let l = Layout::new("djforge:sess:", true);
        let mut per_master = [0usize; 3];
        for idx in l.indexes() {
            let target = redis::cluster_routing::Slot::for_key(idx);
            let slot = (0..16384u16)
                .find(|&s| redis::cluster_routing::Slot::new(s) == Some(target))
                .unwrap() as usize;
            per_master[(slot * 3) / 16384] += 1;
        }
        assert!(per_master.iter().all(|&n| n >= 12), "{per_master:?}");
    }
}
