//! Time, clocks and the two session timeouts.
//!
//! A session ends at the earlier of two moments: `idle` after its last use, or `absolute` after it was
//! created, however busy it stays. Stores are told that moment ([`crate::store::Record::expires`]) and keep
//! the session no longer (Redis through the key's TTL, files through the expiry written inside them).
//!
//! A read-only request changes nothing, so by default it writes nothing either. To keep an active session
//! from idling out, the layer *touches* it, but only once `touch_after` of the idle window has passed
//! since the last write (a quarter by default): a user clicking around does one small write per few
//! minutes, not one per request.
//!
//! Time comes from a [`Clock`], so tests can move it without sleeping:
//!
//! ```
//! use sessionforge::expiry::{Clock, ManualClock, Timestamp};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new(Timestamp::from_millis(1_000));
//! clock.advance(Duration::from_secs(2));
//! assert_eq!(clock.now(), Timestamp::from_millis(3_000));
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// A moment, as milliseconds since the Unix epoch (how it is stored: a plain JSON number).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This moment plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long from `now` until this moment; zero when it has passed.
    pub fn remaining(self, now: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now.0))
    }

    /// RFC 3339 text, in UTC with milliseconds, as the admin API shows times. RFC 3339 ends at year
    /// 9999: a later moment (only a corrupt or hostile stored record has one) shows as
    /// `9999-12-31T23:59:59.999Z`.
    pub fn to_rfc3339(self) -> String {
        /// 9999-12-31T23:59:59.999Z, the last moment RFC 3339 (and `humantime`) can write.
        const LAST: u64 = 253_402_300_799_999;
        let t = UNIX_EPOCH + Duration::from_millis(self.0.min(LAST));
        humantime::format_rfc3339_millis(t).to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Where the layer and the stores get the time.
pub trait Clock: Send + Sync + 'static {
    /// The current moment.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, to the millisecond.
///
/// On Linux it reads the coarse real-time clock (`CLOCK_REALTIME_COARSE`): the time of the last timer
/// tick, a few milliseconds of resolution, for a quarter of the cost of a precise reading (measured
/// here: about 10 against 45 ns). Session timestamps and expiry need no finer grain, and a request
/// reads the clock several times. Elsewhere it reads [`std::time::SystemTime::now`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_os = "linux")]
    fn now(&self) -> Timestamp {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        let ms = u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000);
        Timestamp(ms)
    }

    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that moves only when told to; cheap to clone, all clones share one time. For tests.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start.0)))
    }

    /// A clock stopped at the current wall-clock time (so Redis TTLs computed from it stay sensible).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A shared clock handle, as the layer and the stores hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The timeouts of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// How long a session lives after its last use.
    pub idle: Duration,
    /// How long a session lives after it was created, however busy.
    pub absolute: Duration,
    /// How far (in per-mille of `idle`) a session's expiry must be able to move before a request
    /// refreshes it: 250 (a quarter) by default, so an active session's expiry, its TTL, its index
    /// entry and its cookie's `Max-Age` are rewritten about once a quarter of the idle window rather
    /// than on every request; 0 refreshes on every request.
    pub touch_after_permille: u16,
}

impl Default for Expiry {
    /// 24 hours idle, 7 days absolute, touch after a quarter of the idle window.
    fn default() -> Self {
        Expiry {
            idle: Duration::from_secs(24 * 3600),
            absolute: Duration::from_secs(7 * 24 * 3600),
            touch_after_permille: 250,
        }
    }
}

impl Expiry {
    /// When a session created at `created` and last used at `now` ends: the earlier of the two limits.
    pub fn expires_at(&self, created: Timestamp, now: Timestamp) -> Timestamp {
        now.plus(self.idle).min(self.deadline(created))
    }

    /// The absolute end of a session created at `created`.
    pub fn deadline(&self, created: Timestamp) -> Timestamp {
        created.plus(self.absolute)
    }

    /// Whether a request at `now` should move the expiry of a session that now expires at `expires`
    /// (and ends for good at `deadline`): when the new expiry would be at least the touch window later.
    /// The same rule for reads and writes, so a busy session's expiry (and with it its cookie) is
    /// rewritten once a window, not on every request. Near the deadline the expiry cannot move, so it
    /// is never due. An expiry later than a refresh would set (the idle timeout was shortened since,
    /// or the stored value says so) is due at once: a request never leaves a session expiring more
    /// than the idle timeout after it.
    ///
    /// ```
    /// use sessionforge::expiry::{Expiry, Timestamp};
    /// use std::time::Duration;
    /// let e = Expiry { idle: Duration::from_secs(100), absolute: Duration::from_secs(1000), touch_after_permille: 250 };
    /// let deadline = Timestamp::from_millis(1_000_000);
    /// let expires = Timestamp::from_millis(100_000); // written at 0
    /// assert!(!e.refresh_due(expires, deadline, Timestamp::from_millis(24_999)));
    /// assert!(e.refresh_due(expires, deadline, Timestamp::from_millis(25_000)));
    /// ```
    pub fn refresh_due(&self, expires: Timestamp, deadline: Timestamp, now: Timestamp) -> bool {
        let target = now.plus(self.idle).min(deadline);
        self.touch_after_permille == 0
            || expires.as_millis() > target.as_millis()
            || target.as_millis() - expires.as_millis() >= self.touch_window_ms()
    }

    fn touch_window_ms(&self) -> u64 {
        self.idle.as_millis() as u64 * u64::from(self.touch_after_permille) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_wall_clock_in_milliseconds() {
        let precise =
            |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let before = precise(std::time::SystemTime::now());
        let ours = SystemClock.now().as_millis();
        let after = precise(std::time::SystemTime::now());
        // The coarse clock is the time of the last tick: never ahead, and behind by at most a tick
        // (a few ms; 50 allows for a slow kernel).
        assert!(ours <= after, "{ours} is ahead of {after}");
        assert!(
            ours + 50 >= before,
            "{ours} lags {before} by more than 50 ms"
        );
    }

    /// Idle and absolute timeouts in seconds, touching after a quarter of the idle window.
    fn quarter(idle: u64, absolute: u64) -> Expiry {
        Expiry {
            idle: Duration::from_secs(idle),
            absolute: Duration::from_secs(absolute),
            touch_after_permille: 250,
        }
    }

    #[test]
    fn expiry_is_the_earlier_of_idle_and_absolute() {
        let e = quarter(60, 100);
        let created = Timestamp::from_millis(0);
        assert_eq!(e.expires_at(created, created).as_millis(), 60_000);
        assert_eq!(
            e.expires_at(created, Timestamp::from_millis(70_000))
                .as_millis(),
            100_000
        );
    }

    #[test]
    fn a_refresh_is_due_when_the_expiry_would_move_by_the_window_and_never_past_the_deadline() {
        let e = quarter(100, 1000);
        let deadline = Timestamp::from_millis(1_000_000);
        // Written at 10 s: expires at 110 s.
        let expires = Timestamp::from_millis(110_000);
        assert!(!e.refresh_due(expires, deadline, Timestamp::from_millis(34_999)));
        assert!(e.refresh_due(expires, deadline, Timestamp::from_millis(35_000)));
        // Close to the deadline the expiry is the deadline and cannot move.
        let at_deadline = Timestamp::from_millis(1_000_000);
        assert!(!e.refresh_due(at_deadline, deadline, Timestamp::from_millis(990_000)));
        // Moving less than the window towards the deadline is not due either.
        assert!(!e.refresh_due(
            Timestamp::from_millis(990_000),
            deadline,
            Timestamp::from_millis(995_000)
        ));
        // An expiry further out than a refresh would set is pulled in at once.
        assert!(e.refresh_due(
            Timestamp::from_millis(u64::MAX),
            deadline,
            Timestamp::from_millis(10_000)
        ));
        assert!(e.refresh_due(
            Timestamp::from_millis(200_000),
            deadline,
            Timestamp::from_millis(10_000)
        ));
        // A window of 0 refreshes on every request.
        let every = Expiry {
            touch_after_permille: 0,
            ..e
        };
        assert!(every.refresh_due(expires, deadline, Timestamp::from_millis(10_000)));
    }

    #[test]
    fn rfc3339_formatting_has_milliseconds_and_utc() {
        assert_eq!(
            Timestamp::from_millis(1_752_360_300_000).to_rfc3339(),
            "2025-07-12T22:45:00.000Z"
        );
    }

    #[test]
    fn rfc3339_formatting_of_a_moment_past_year_9999_is_clamped_not_a_panic() {
        assert_eq!(
            Timestamp::from_millis(u64::MAX).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_millis(253_402_300_800_000).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
