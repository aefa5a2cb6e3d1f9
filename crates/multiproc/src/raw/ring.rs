//! The queue's ring: where its records are, how producers append and consumers take them,
//! and how each side sleeps until the other moves.
//!
//! Records are `[len: u32][kind: u32][payload, padded to 8 bytes]` in a data region of
//! `capacity` bytes (a power of two); a record that would cross the end of the region is
//! preceded by a *wrap* marker and starts again at offset 0.
//!
//! Two 64-bit words say where the records are: `tail` (written by producers) and `head`
//! (written by consumers). Each packs a byte position (low 40 bits, counted from the
//! ring's creation, wrapping) and a record count (high 24 bits, wrapping), so one atomic
//! store moves both. Producers serialize among themselves with one [`lock`] and consumers
//! with another. A producer writes records into free space and publishes them with one
//! release-store of `tail`; a consumer copies records out and retires them with one
//! release-store of `head`; each reads the other's word with an acquire, so a record's
//! bytes are written before a consumer reads them and read before a producer reuses them.
//!
//! Waiting goes through [`wake`]: getters sleep on `items_seq` (bumped by producers after
//! publishing), putters on `room_seq` (bumped by consumers after retiring).

use super::atomic::{AtomicU32, AtomicU64};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

use super::{lock, remaining, spin_pause, wake, Platform, SPIN_ROUNDS};

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
/// The record count field's mask (after shifting it down).
pub(crate) const COUNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

/// Bytes before each record's payload.
pub(crate) const RECORD_HEADER: usize = 8;
/// A record holding an item.
pub(crate) const KIND_INLINE: u32 = 1;
/// A record naming the block that holds an item.
pub(crate) const KIND_INDIRECT: u32 = 2;
/// The marker that sends the reader back to offset 0.
const KIND_WRAP: u32 = 3;

/// Longest single futex sleep of a queue waiter (so a wake-up lost to a waker killed
/// mid-call costs one nap, not forever).
pub(crate) const NAP: Duration = Duration::from_millis(250);

/// How long a waiter sleeps before it first asks [`Layout::deserted`] (then once per
/// [`NAP`]): a hand-off between live peers never pays for the question.
pub(crate) const DESERTED_CHECK: Duration = Duration::from_millis(20);

#[inline]
fn pack(count: u64, pos: u64) -> u64 {
    ((count & COUNT_MASK) << POS_BITS) | (pos & POS_MASK)
}

#[inline]
fn pos_of(word: u64) -> u64 {
    word & POS_MASK
}

#[inline]
fn count_of(word: u64) -> u64 {
    word >> POS_BITS
}

#[inline]
fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// The 32-bit words of a ring's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word {
    /// Producers' lock.
    PutLock,
    /// Consumers' lock.
    GetLock,
    /// `1` once closed.
    Closed,
    /// Bumped after publishing, if getters sleep.
    ItemsSeq,
    /// Getters registered as asleep.
    GettersAsleep,
    /// Bumped after retiring, if putters sleep.
    RoomSeq,
    /// Putters registered as asleep.
    PuttersAsleep,
}

/// The 64-bit words of a ring's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word64 {
    /// Where the next record goes (producers).
    Tail,
    /// Where the oldest record is (consumers).
    Head,
    /// Producers' last view of `Head` (under their lock).
    CachedHead,
    /// Consumers' last view of `Tail` (under their lock).
    CachedTail,
}

/// Where a ring's words and data are.
pub(crate) trait Layout {
    /// A 32-bit header word.
    fn word(&self, word: Word) -> &AtomicU32;
    /// A 64-bit header word.
    fn word64(&self, word: Word64) -> &AtomicU64;
    /// The data region's size: a power of two.
    fn capacity(&self) -> usize;
    /// The item bound (0: none).
    fn maxsize(&self) -> u64;
    /// Writes a `u32` at `at` in the data region.
    fn write_u32(&self, at: usize, value: u32);
    /// Reads a `u32` at `at` in the data region.
    fn read_u32(&self, at: usize) -> u32;
    /// Copies `src` to `at` in the data region.
    fn copy_in(&self, at: usize, src: &[u8]);
    /// Copies the data region from `at` into `dst`.
    fn copy_out(&self, at: usize, dst: &mut [u8]);
    /// Whether no other party could ever put or get again (every other holder is gone), so
    /// a waiter would wait for ever. Asked only by waiters that have slept a while.
    fn deserted(&self) -> bool {
        false
    }
    /// This process's spin budget for getters, if it adapts one (see [`SpinBudget`]);
    /// `None`: a getter always spins the full [`GET_SPIN_ROUNDS`].
    fn spin_budget(&self) -> Option<&SpinBudget> {
        None
    }
}

/// The most rounds a getter spins before it sleeps.
pub(crate) const GET_SPIN_ROUNDS: u32 = SPIN_ROUNDS * 4;
/// The fewest: a few pauses and a yield, enough for an item already on its way.
const GET_SPIN_MIN: u32 = 4;
/// A slept wait this short is one a longer spin might have covered: the full spin lasts
/// a few hundred µs at most, and the wait includes the wake-up (tens of µs on a loaded
/// machine), so only a wait well beyond both says that items come far apart.
const SPIN_WORTH: Duration = Duration::from_micros(500);

/// How many rounds a getter of this process spins before it sleeps, following the
/// traffic: after a wait that spinning did not cover but that ended within
/// [`SPIN_WORTH`], it doubles (up to [`GET_SPIN_ROUNDS`]), so a fast rhythm is caught by
/// the spin again; after a longer one it halves (down to a few rounds), so a waiter on a
/// queue where items come far apart goes to sleep almost at once instead of burning the
/// whole spin on every item. A hint local to the process: its value never matters to
/// correctness.
pub(crate) struct SpinBudget(std::sync::atomic::AtomicU32);

impl Default for SpinBudget {
    fn default() -> SpinBudget {
        SpinBudget(std::sync::atomic::AtomicU32::new(GET_SPIN_ROUNDS))
    }
}

impl SpinBudget {
    /// The rounds to spin now.
    pub(crate) fn rounds(&self) -> u32 {
        self.0.load(Relaxed)
    }

    /// Adapts the budget to a wait that spinning did not cover and that took `waited`.
    pub(crate) fn slept_for(&self, waited: Duration) {
        let now = self.rounds();
        let next = if waited <= SPIN_WORTH {
            now.saturating_mul(2).max(GET_SPIN_MIN * 4)
        } else {
            now / 2
        };
        self.0.store(next.clamp(GET_SPIN_MIN, GET_SPIN_ROUNDS), Relaxed);
    }
}

/// A record on its way in.
pub(crate) trait Outbound {
    /// [`KIND_INLINE`] or [`KIND_INDIRECT`].
    fn kind(&self) -> u32;
    /// Its payload.
    fn payload(&self) -> &[u8];
}

/// Where taken records go.
pub(crate) trait Sink {
    /// Room for a record of `kind` with a payload of `len` bytes.
    fn record(&mut self, kind: u32, len: usize) -> &mut [u8];
}

/// How a put or get ended other than by succeeding or timing out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The ring is closed (for a get: and drained).
    Closed,
    /// Nobody else holds the ring any more ([`Layout::deserted`]): a get found it empty,
    /// a put found it full.
    Disconnected,
    /// A record header makes no sense: the ring was written by something else.
    Corrupt { len: usize, kind: u32, at: usize },
}

/// Items in the ring (exact at the instant of the two loads).
#[inline]
pub(crate) fn len<L: Layout>(r: &L) -> u64 {
    let head = r.word64(Word64::Head).load(Acquire);
    let tail = r.word64(Word64::Tail).load(Acquire);
    count_of(tail).wrapping_sub(count_of(head)) & COUNT_MASK
}

/// Whether the ring was closed.
#[inline]
pub(crate) fn closed<L: Layout>(r: &L) -> bool {
    r.word(Word::Closed).load(Acquire) != 0
}

#[inline]
fn has_items<L: Layout>(r: &L) -> bool {
    pos_of(r.word64(Word64::Tail).load(SeqCst)) != pos_of(r.word64(Word64::Head).load(SeqCst))
}

/// Whether a record of `payload_len` bytes fits after `tail` as seen with `head` (both
/// packed words) in a ring of `capacity` bytes holding at most `maxsize` items, and where: `Some(waste)`, the bytes skipped to wrap first.
#[inline]
fn fits(maxsize: u64, capacity: usize, head: u64, tail: u64, payload_len: usize) -> Option<usize> {
    let items = count_of(tail).wrapping_sub(count_of(head)) & COUNT_MASK;
    if maxsize != 0 && items >= maxsize {
        return None;
    }
    let need = RECORD_HEADER + pad8(payload_len);
    let phys = (pos_of(tail) & (capacity as u64 - 1)) as usize;
    let waste = if phys + need > capacity { capacity - phys } else { 0 };
    let used = pos_of(tail).wrapping_sub(pos_of(head)) & POS_MASK;
    ((waste + need) as u64 <= capacity as u64 - used).then_some(waste)
}

/// With the producers' lock held: appends as many of `records` as fit (in order) and
/// publishes them with one store. Returns how many were appended.
#[inline]
pub(crate) fn push_locked<L: Layout, R: Outbound>(r: &L, records: &[R]) -> usize {
    // `head` only moves forward, so a stale view of it is a safe underestimate of the
    // room; re-read the consumers' line only when the stale view says "full".
    let cached_head = r.word64(Word64::CachedHead);
    let mut head = cached_head.load(Relaxed);
    let tail = r.word64(Word64::Tail).load(Relaxed);
    let (maxsize, capacity) = (r.maxsize(), r.capacity());
    if let Some(first) = records.first() {
        if fits(maxsize, capacity, head, tail, first.payload().len()).is_none() {
            head = r.word64(Word64::Head).load(Acquire);
            cached_head.store(head, Relaxed);
        }
    }
    let mut at = tail;
    let mut pushed = 0;
    for record in records {
        let payload = record.payload();
        let Some(waste) = fits(maxsize, capacity, head, at, payload.len()) else { break };
        let mut phys = (pos_of(at) & (capacity as u64 - 1)) as usize;
        if waste > 0 {
            r.write_u32(phys, 0);
            r.write_u32(phys + 4, KIND_WRAP);
            phys = 0;
        }
        r.write_u32(phys, payload.len() as u32);
        r.write_u32(phys + 4, record.kind());
        r.copy_in(phys + RECORD_HEADER, payload);
        let advance = (waste + RECORD_HEADER + pad8(payload.len())) as u64;
        at = pack(count_of(at).wrapping_add(1), pos_of(at).wrapping_add(advance));
        pushed += 1;
    }
    if pushed > 0 {
        r.word64(Word64::Tail).store(at, Release);
    }
    pushed
}

/// With the consumers' lock held: takes up to `max` records into `out` and retires them
/// with one store. Returns how many were taken.
#[inline]
pub(crate) fn pop_locked<L: Layout, S: Sink>(
    r: &L,
    max: usize,
    out: &mut S,
) -> Result<usize, Failure> {
    // `tail` only moves forward: re-read the producers' line only when the last view of
    // it says "empty".
    let cached_tail = r.word64(Word64::CachedTail);
    let head = r.word64(Word64::Head).load(Relaxed);
    let mut tail = cached_tail.load(Acquire);
    if pos_of(tail) == pos_of(head) {
        tail = r.word64(Word64::Tail).load(Acquire);
        cached_tail.store(tail, Release);
    }
    let capacity = r.capacity();
    let mut pos = pos_of(head);
    let mut count = count_of(head);
    let mut taken = 0;
    while taken < max && pos != pos_of(tail) {
        let mut phys = (pos & (capacity as u64 - 1)) as usize;
        let mut advance = 0usize;
        if capacity - phys < RECORD_HEADER || r.read_u32(phys + 4) == KIND_WRAP {
            advance = capacity - phys;
            phys = 0;
        }
        let len = r.read_u32(phys) as usize;
        let kind = r.read_u32(phys + 4);
        if RECORD_HEADER + pad8(len) > capacity - phys
            || !(KIND_INLINE..=KIND_INDIRECT).contains(&kind)
        {
            return Err(Failure::Corrupt { len, kind, at: phys });
        }
        r.copy_out(phys + RECORD_HEADER, out.record(kind, len));
        advance += RECORD_HEADER + pad8(len);
        pos = pos.wrapping_add(advance as u64) & POS_MASK;
        count = count.wrapping_add(1) & COUNT_MASK;
        taken += 1;
    }
    if taken > 0 {
        r.word64(Word64::Head).store(pack(count, pos), Release);
    }
    Ok(taken)
}

/// Puts `records[*done..]` (in order) as the process `me`, waiting for room until
/// `deadline`; `*done` counts those put. `Ok` when all went in or the deadline passed.
#[inline]
pub(crate) fn put<P: Platform, L: Layout, R: Outbound>(
    r: &L,
    me: u32,
    records: &[R],
    deadline: Option<Instant>,
    done: &mut usize,
) -> Result<(), Failure> {
    let mut round = 0u32;
    let mut desertion = Desertion::default();
    while *done < records.len() {
        if closed(r) {
            return Err(Failure::Closed);
        }
        let before = r.word64(Word64::Head).load(SeqCst);
        let lock_word = r.word(Word::PutLock);
        if lock::acquire::<P>(lock_word, me, deadline).is_none() {
            break;
        }
        let pushed = push_locked(r, &records[*done..]);
        lock::release::<P>(lock_word);
        if pushed > 0 {
            *done += pushed;
            wake::wake::<P>(r.word(Word::ItemsSeq), r.word(Word::GettersAsleep), pushed as u32);
            round = 0;
            continue;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if round < SPIN_ROUNDS {
            spin_pause(round);
            round += 1;
        } else {
            if desertion.due() {
                // `deserted` first: when it says no (always, in the loom models), the
                // question touches no shared word, so it cannot change an interleaving.
                if r.deserted() && r.word64(Word64::Head).load(SeqCst) == before {
                    return Err(Failure::Disconnected);
                }
                desertion.checked();
            }
            // Room appears when a consumer moves `head`.
            let nap = desertion.nap(remaining(deadline).map_or(NAP, |l| l.min(NAP)));
            wake::sleep::<P>(r.word(Word::RoomSeq), r.word(Word::PuttersAsleep), Some(nap), || {
                r.word64(Word64::Head).load(SeqCst) == before && !closed(r)
            });
        }
    }
    Ok(())
}

/// Takes between 1 and `max` records into `out` as the process `me`, waiting until
/// `deadline`; `Ok(false)` on timeout. A closed ring is [`Failure::Closed`] only once
/// drained.
#[inline]
pub(crate) fn get<P: Platform, L: Layout, S: Sink>(
    r: &L,
    me: u32,
    max: usize,
    out: &mut S,
    deadline: Option<Instant>,
) -> Result<bool, Failure> {
    let mut round = 0u32;
    let mut desertion = Desertion::default();
    let budget = r.spin_budget();
    let spin_rounds = budget.map_or(GET_SPIN_ROUNDS, SpinBudget::rounds);
    // For the budget: since when this get waits, and whether it slept.
    let (mut waiting_since, mut slept) = (None::<Instant>, false);
    loop {
        if round == 0 || has_items(r) {
            let lock_word = r.word(Word::GetLock);
            if lock::acquire::<P>(lock_word, me, deadline).is_none() {
                return Ok(false);
            }
            let taken = pop_locked(r, max, out);
            lock::release::<P>(lock_word);
            if taken? > 0 {
                wake::wake::<P>(
                    r.word(Word::RoomSeq),
                    r.word(Word::PuttersAsleep),
                    i32::MAX as u32,
                );
                if let (Some(budget), Some(since), true) = (budget, waiting_since, slept) {
                    budget.slept_for(since.elapsed());
                }
                return Ok(true);
            }
        }
        // Closed, but perhaps after items arrived that the check above missed: those are
        // taken first.
        if closed(r) && !has_items(r) {
            return Err(Failure::Closed);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        if round == 0 && budget.is_some() {
            waiting_since = Some(Instant::now());
        }
        if round < spin_rounds {
            spin_pause(round);
            round += 1;
        } else {
            slept = true;
            if desertion.due() {
                // `deserted` first, as in `put`; items that came before the last holder
                // left are still delivered.
                if r.deserted() && !has_items(r) {
                    return Err(Failure::Disconnected);
                }
                desertion.checked();
            }
            let nap = desertion.nap(remaining(deadline).map_or(NAP, |l| l.min(NAP)));
            wake::sleep::<P>(
                r.word(Word::ItemsSeq),
                r.word(Word::GettersAsleep),
                Some(nap),
                || !has_items(r) && !closed(r),
            );
        }
    }
}

/// When a sleeping waiter next asks whether it was left alone.
#[derive(Default)]
pub(crate) struct Desertion {
    next: Option<Instant>,
}

impl Desertion {
    /// Whether it is time to ask (never before the first sleep).
    pub(crate) fn due(&mut self) -> bool {
        match self.next {
            None => {
                self.next = Some(Instant::now() + DESERTED_CHECK);
                false
            }
            Some(next) => Instant::now() >= next,
        }
    }

    /// The question was asked: the next one in a [`NAP`].
    pub(crate) fn checked(&mut self) {
        self.next = Some(Instant::now() + NAP);
    }

    /// `nap`, cut short so as to wake for the next question.
    pub(crate) fn nap(&self, nap: Duration) -> Duration {
        match self.next {
            Some(next) => nap.min(next.saturating_duration_since(Instant::now())),
            None => nap,
        }
    }
}

/// Closes the ring: later puts fail, gets fail once it is drained; every sleeper wakes.
pub(crate) fn close<P: Platform, L: Layout>(r: &L) {
    r.word(Word::Closed).store(1, SeqCst);
    for seq in [Word::ItemsSeq, Word::RoomSeq] {
        wake::wake_always::<P>(r.word(seq), i32::MAX as u32);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_spin_budget_shrinks_when_items_come_far_apart_and_grows_back_when_they_do_not() {
        let budget = SpinBudget::default();
        assert_eq!(budget.rounds(), GET_SPIN_ROUNDS);
        let mut seen = Vec::new();
        for _ in 0..20 {
            budget.slept_for(Duration::from_millis(1)); // idle: items 1 ms apart
            seen.push(budget.rounds());
        }
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert_eq!(budget.rounds(), GET_SPIN_MIN, "{seen:?}");
        let mut steps = 0;
        while budget.rounds() < GET_SPIN_ROUNDS {
            budget.slept_for(Duration::from_micros(60)); // a burst: a wake-up's worth
            steps += 1;
            assert!(steps <= 8, "the budget came back too slowly: {}", budget.rounds());
        }
        budget.slept_for(Duration::ZERO);
        assert_eq!(budget.rounds(), GET_SPIN_ROUNDS, "never above the most");
    }
}
