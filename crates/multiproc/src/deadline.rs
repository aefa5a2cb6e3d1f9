//! Deadlines from timeouts, for every blocking call of the crate.
//!
//! A timeout is any [`Duration`]: `Duration::MAX` is a common way to say "forever", and
//! `Instant::now() + Duration::MAX` panics. Every deadline is computed here, saturating: a
//! timeout too long to be represented as an instant is no deadline at all, which is what a
//! caller who passes it means (no process lives long enough to tell the difference).

use std::time::{Duration, Instant};

/// The instant `timeout` from now, or `None` ("no deadline") when that instant cannot be
/// represented.
pub(crate) fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The deadline of an optional timeout: `None` (wait forever) stays `None`.
pub(crate) fn within(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_duration_is_a_deadline_or_none() {
        assert!(after(Duration::ZERO).is_some());
        assert!(after(Duration::from_secs(3600)).is_some());
        assert_eq!(after(Duration::MAX), None);
        assert_eq!(within(None), None);
        assert_eq!(within(Some(Duration::MAX)), None);
        let soon = within(Some(Duration::from_millis(5))).expect("a representable deadline");
        assert!(soon > Instant::now() - Duration::from_secs(1));
    }
}
