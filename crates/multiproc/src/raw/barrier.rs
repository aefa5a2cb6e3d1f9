//! A barrier: an internal lock, an arrival count and a generation word, plus the pids of
//! the parties waiting (to break the barrier when one dies).
//!
//! Under the internal lock a party records its pid and counts itself in; the last one runs
//! the action, resets the count, moves to the next generation and wakes everyone. The
//! others sleep on the generation word (re-checking, under the lock, whether it moved,
//! whether the barrier broke, whether their time ran out or a party died) and leave when
//! it moves. A generation whose waiters were released by `reset` or a break is recorded in
//! `failed_gen`, so that its waiters report [`Broken`] rather than success. Every release
//! moves the generation, so a sleeper can never miss one.

use super::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Instant;

use super::{check_interval, lock, remaining, Platform};

/// The words of a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word {
    /// The internal lock (a [`lock`] word).
    Lock,
    /// The number of parties (constant).
    Parties,
    /// Parties arrived in this generation.
    Count,
    /// Moves (in 31 bits) each time the parties are released.
    Generation,
    /// Non-zero once broken, until `reset`.
    Broken,
    /// `generation | FAILED_VALID` of the last generation released by a break or reset.
    FailedGen,
    /// Parties asleep (informative).
    Sleepers,
}

/// Marks a valid `FailedGen`.
pub(crate) const FAILED_VALID: u32 = 1 << 31;

/// Where a barrier's words are.
pub(crate) trait Layout {
    /// One of the barrier's words.
    fn word(&self, word: Word) -> &AtomicU32;
    /// The pid slot of the party that arrived `index`-th (`index < parties`).
    fn pid(&self, index: usize) -> &AtomicU32;
}

/// The barrier is broken (or became broken while waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Broken;

/// Generations count in 31 bits; the top bit marks a valid `FailedGen`.
fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & !FAILED_VALID
}

/// The internal lock, released on drop.
struct Held<'a, P: Platform> {
    word: &'a AtomicU32,
    platform: std::marker::PhantomData<P>,
}

impl<P: Platform> Drop for Held<'_, P> {
    fn drop(&mut self) {
        lock::release::<P>(self.word);
    }
}

fn hold<'a, P: Platform, L: Layout>(b: &'a L, me: u32) -> Held<'a, P> {
    // The internal lock is held only for a few instructions by live processes; a dead
    // holder is taken over like any lock's.
    lock::acquire::<P>(b.word(Word::Lock), me, None);
    Held { word: b.word(Word::Lock), platform: std::marker::PhantomData }
}

/// The number of parties.
pub(crate) fn parties<L: Layout>(b: &L) -> u32 {
    b.word(Word::Parties).load(Relaxed)
}

/// How many parties wait now.
pub(crate) fn n_waiting<L: Layout>(b: &L) -> u32 {
    b.word(Word::Count).load(SeqCst)
}

/// Whether the barrier is broken.
pub(crate) fn broken<L: Layout>(b: &L) -> bool {
    b.word(Word::Broken).load(SeqCst) != 0
}

/// Waits, as the process `me`, until all parties have arrived, at most until `deadline`;
/// returns this party's arrival index. The last party runs `action` first; if it fails
/// (returns `false`) the barrier breaks. A timeout, or a waiting party found dead, breaks
/// the barrier too.
pub(crate) fn wait<P: Platform, L: Layout>(
    b: &L,
    me: u32,
    action: impl FnOnce() -> bool,
    deadline: Option<Instant>,
) -> Result<u32, Broken> {
    let word = |w| b.word(w);
    let guard = hold::<P, L>(b, me);
    if broken(b) {
        return Err(Broken);
    }
    let parties = parties(b);
    let generation = word(Word::Generation).load(SeqCst);
    let index = word(Word::Count).load(SeqCst);
    b.pid(index as usize).store(me, SeqCst);
    if index + 1 == parties {
        if !action() {
            break_locked::<P, L>(b);
            drop(guard);
            return Err(Broken);
        }
        word(Word::Count).store(0, SeqCst);
        word(Word::Generation).store(next_generation(generation), SeqCst);
        drop(guard);
        P::wake(word(Word::Generation), u32::MAX);
        return Ok(index);
    }
    word(Word::Count).store(index + 1, SeqCst);
    drop(guard);

    let mut check_round = 0;
    loop {
        let interval = check_interval(check_round);
        let nap = remaining(deadline).map_or(interval, |l| l.min(interval));
        let sleepers = word(Word::Sleepers);
        sleepers.fetch_add(1, SeqCst);
        if word(Word::Generation).load(SeqCst) == generation {
            P::wait(word(Word::Generation), generation, Some(nap));
        }
        sleepers.fetch_sub(1, SeqCst);
        check_round += 1;

        let _guard = hold::<P, L>(b, me);
        if word(Word::Generation).load(SeqCst) != generation {
            let failed = word(Word::FailedGen).load(SeqCst);
            return if failed == (generation | FAILED_VALID) { Err(Broken) } else { Ok(index) };
        }
        if broken(b) {
            return Err(Broken);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break_locked::<P, L>(b);
            return Err(Broken);
        }
        let count = word(Word::Count).load(SeqCst) as usize;
        if (0..count).any(|i| !P::alive(b.pid(i).load(SeqCst))) {
            break_locked::<P, L>(b);
            return Err(Broken);
        }
    }
}

/// Breaks the barrier: current and future waiters get [`Broken`] until [`reset`].
pub(crate) fn abort<P: Platform, L: Layout>(b: &L, me: u32) {
    let _guard = hold::<P, L>(b, me);
    break_locked::<P, L>(b);
}

/// Returns the barrier to its empty, unbroken state; parties waiting now get [`Broken`].
pub(crate) fn reset<P: Platform, L: Layout>(b: &L, me: u32) {
    let word = |w| b.word(w);
    let _guard = hold::<P, L>(b, me);
    let generation = word(Word::Generation).load(SeqCst);
    if word(Word::Count).load(SeqCst) > 0 {
        word(Word::FailedGen).store(generation | FAILED_VALID, SeqCst);
    }
    word(Word::Count).store(0, SeqCst);
    word(Word::Broken).store(0, SeqCst);
    word(Word::Generation).store(next_generation(generation), SeqCst);
    P::wake(word(Word::Generation), u32::MAX);
}

/// Marks the barrier broken and wakes every waiter; the internal lock is held.
///
/// The generation moves too (as a failed one): waiters sleep on the generation word, so a
/// waiter about to sleep when the wake came would otherwise sleep on, unaware, until its
/// next liveness check.
fn break_locked<P: Platform, L: Layout>(b: &L) {
    let word = |w| b.word(w);
    let generation = word(Word::Generation).load(SeqCst);
    word(Word::FailedGen).store(generation | FAILED_VALID, SeqCst);
    word(Word::Broken).store(1, SeqCst);
    word(Word::Count).store(0, SeqCst);
    word(Word::Generation).store(next_generation(generation), SeqCst);
    P::wake(word(Word::Generation), u32::MAX);
}
