//! Time, clocks and the two session timeouts.
//!
//! A session ends at the earlier of two moments: `idle` after its last use, or `absolute` after it was
//! created, however busy it stays. Stores are told that moment ([`crate::store::Record::expires`]) and keep
//! the session no longer (Redis through the key's TTL, files through the expiry written inside them).
//!
//! A read-only request changes nothing, so by default it writes nothing either. To keep an active session
//! from idling out, the layer *touches* it, but only once its expiry can move by a fraction of the idle
//! window (a quarter by default, [`Expiry::with_touch_after`]): a user clicking around does one small
//! write per few minutes, not one per request.
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

    /// The moment one millisecond later (saturating): the least a new version of a record may be.
    pub const fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
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

/// The system clock, shared.
pub fn system_clock() -> SharedClock {
    static SYSTEM: std::sync::OnceLock<SharedClock> = std::sync::OnceLock::new();
    SYSTEM.get_or_init(|| Arc::new(SystemClock)).clone()
}

/// The timeouts a layer gives its sessions: idle and absolute, and how often a request may move the
/// expiry. A session may override the idle timeout and the absolute end for itself ("remember me", see
/// [`Session::set_idle_timeout`](crate::Session::set_idle_timeout)).
///
/// ```
/// use sessionforge::expiry::Expiry;
/// use std::time::Duration;
///
/// let e = Expiry::new(Duration::from_secs(30 * 60), Duration::from_secs(8 * 3600)).with_touch_after(0.5);
/// assert_eq!(e.idle(), Duration::from_secs(1800));
/// assert_eq!(e.touch_after(), 0.5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    idle: Duration,
    absolute: Duration,
    /// How far, in thousandths of the idle window, the expiry must be able to move before a request
    /// moves it.
    touch_permille: u16,
}

impl Default for Expiry {
    /// 24 hours idle, 7 days absolute, touch after a quarter of the idle window.
    fn default() -> Self {
        Expiry::new(
            Duration::from_secs(24 * 3600),
            Duration::from_secs(7 * 24 * 3600),
        )
    }
}

impl Expiry {
    /// `idle` after the last use, `absolute` after creation at the latest; the expiry moves once it
    /// can move by a quarter of the idle window.
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Expiry {
            idle,
            absolute,
            touch_permille: 250,
        }
    }

    /// The same with another idle timeout.
    #[must_use]
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The same with another absolute timeout.
    #[must_use]
    pub fn with_absolute(mut self, absolute: Duration) -> Self {
        self.absolute = absolute;
        self
    }

    /// How far, as a fraction of the idle window (0.0 to 1.0), a session's expiry must be able to move
    /// before a request moves it (default 0.25). Until then a read-only request writes nothing, and a
    /// request that changes data saves it without moving the expiry, so no `Set-Cookie` is sent and a
    /// store's expiry index is left alone. 0.0 moves it on every request that uses the session.
    #[must_use]
    pub fn with_touch_after(mut self, fraction: f64) -> Self {
        let fraction = if fraction.is_nan() { 0.25 } else { fraction };
        self.touch_permille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16;
        self
    }

    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The absolute timeout.
    pub fn absolute(&self) -> Duration {
        self.absolute
    }

    /// The touch fraction (see [`Expiry::with_touch_after`]).
    pub fn touch_after(&self) -> f64 {
        f64::from(self.touch_permille) / 1000.0
    }

    /// The absolute end of a session created at `created`.
    pub fn deadline(&self, created: Timestamp) -> Timestamp {
        created.plus(self.absolute)
    }

    /// The idle timeout of `record`: its own, or the layer's.
    pub fn idle_of(&self, record: &crate::store::Record) -> Duration {
        record.idle_timeout.unwrap_or(self.idle)
    }

    /// When `record`, used at `now`, expires: its idle timeout from now, but never past its deadline.
    pub fn expires_at(&self, record: &crate::store::Record, now: Timestamp) -> Timestamp {
        now.plus(self.idle_of(record)).min(record.deadline)
    }

    /// Whether a request at `now` should move `record`'s expiry: when the new expiry would be at least
    /// the touch window later. The same rule for reads and writes, so a busy session's expiry (and with
    /// it its cookie) is rewritten once a window, not on every request. Near the deadline the expiry
    /// cannot move, so it is never due. An expiry later than a refresh would set (the idle timeout was
    /// shortened since) is due at once: a request never leaves a session expiring more than its idle
    /// timeout after it.
    ///
    /// ```
    /// use sessionforge::expiry::{Expiry, Timestamp};
    /// use sessionforge::store::Record;
    /// use std::time::Duration;
    ///
    /// let e = Expiry::new(Duration::from_secs(100), Duration::from_secs(1000));
    /// let written_at_0 = Record::new(Timestamp::from_millis(0), Timestamp::from_millis(100_000), Timestamp::from_millis(1_000_000));
    /// assert!(!e.refresh_due(&written_at_0, Timestamp::from_millis(24_999)));
    /// assert!(e.refresh_due(&written_at_0, Timestamp::from_millis(25_000)));
    /// ```
    pub fn refresh_due(&self, record: &crate::store::Record, now: Timestamp) -> bool {
        let idle = self.idle_of(record);
        let target = now.plus(idle).min(record.deadline);
        let window = (idle
            .as_millis()
            .saturating_mul(u128::from(self.touch_permille))
            / 1000)
            .min(u128::from(u64::MAX)) as u64;
        self.touch_permille == 0
            || record.expires > target
            || target.as_millis() - record.expires.as_millis() >= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;

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

    /// A record written at `written_ms` under `e`, ending for good at `deadline_ms`.
    fn written(e: &Expiry, written_ms: u64, deadline_ms: u64) -> Record {
        let at = Timestamp::from_millis(written_ms);
        let deadline = Timestamp::from_millis(deadline_ms);
        Record::new(at, at.plus(e.idle()), deadline)
    }

    #[test]
    fn expiry_is_the_earlier_of_idle_and_absolute() {
        let e = Expiry::new(Duration::from_secs(60), Duration::from_secs(100));
        let r = written(&e, 0, e.deadline(Timestamp::from_millis(0)).as_millis());
        assert_eq!(r.expires.as_millis(), 60_000);
        assert_eq!(
            e.expires_at(&r, Timestamp::from_millis(70_000)).as_millis(),
            100_000
        );
    }

    #[test]
    fn a_session_of_its_own_idle_timeout_expires_by_it() {
        let e = Expiry::new(Duration::from_secs(60), Duration::from_secs(100_000));
        let mut r = written(&e, 0, 100_000_000);
        r.idle_timeout = Some(Duration::from_secs(3600));
        assert_eq!(
            e.expires_at(&r, Timestamp::from_millis(0)).as_millis(),
            3_600_000
        );
        // Its own idle window decides when a refresh is due too.
        r.expires = Timestamp::from_millis(3_600_000);
        assert!(!e.refresh_due(&r, Timestamp::from_millis(800_000)));
        assert!(e.refresh_due(&r, Timestamp::from_millis(900_000)));
    }

    #[test]
    fn a_refresh_is_due_when_the_expiry_would_move_by_the_window_and_never_past_the_deadline() {
        let e = Expiry::new(Duration::from_secs(100), Duration::from_secs(1000));
        // Written at 10 s: expires at 110 s.
        let r = written(&e, 10_000, 1_000_000);
        assert!(!e.refresh_due(&r, Timestamp::from_millis(34_999)));
        assert!(e.refresh_due(&r, Timestamp::from_millis(35_000)));
        // Close to the deadline the expiry is the deadline and cannot move.
        let mut at_deadline = r.clone();
        at_deadline.expires = Timestamp::from_millis(1_000_000);
        assert!(!e.refresh_due(&at_deadline, Timestamp::from_millis(990_000)));
        // Moving less than the window towards the deadline is not due either.
        at_deadline.expires = Timestamp::from_millis(990_000);
        assert!(!e.refresh_due(&at_deadline, Timestamp::from_millis(995_000)));
        // An expiry further out than a refresh would set is pulled in at once.
        let mut far = r.clone();
        far.expires = Timestamp::from_millis(u64::MAX);
        assert!(e.refresh_due(&far, Timestamp::from_millis(10_000)));
        far.expires = Timestamp::from_millis(200_000);
        assert!(e.refresh_due(&far, Timestamp::from_millis(10_000)));
        // A window of 0 refreshes on every request.
        assert!(e
            .with_touch_after(0.0)
            .refresh_due(&r, Timestamp::from_millis(10_000)));
    }

    #[test]
    fn the_touch_window_of_an_enormous_idle_timeout_does_not_overflow() {
        let e = Expiry::new(Duration::MAX, Duration::MAX).with_touch_after(1.0);
        let mut r = Record::new(
            Timestamp::from_millis(0),
            Timestamp::from_millis(u64::MAX),
            Timestamp::from_millis(u64::MAX),
        );
        assert!(!e.refresh_due(&r, Timestamp::from_millis(5)));
        r.expires = Timestamp::from_millis(5);
        assert!(!e.refresh_due(&r, Timestamp::from_millis(10)));
        assert_eq!(e.with_touch_after(f64::NAN).touch_after(), 0.25);
        assert_eq!(e.with_touch_after(7.0).touch_after(), 1.0);
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
