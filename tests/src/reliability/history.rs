//! A concurrent run's freeze history, checked against writers' logs: which Thaw ended which
//! freeze when calls overlap, and what a writer's `write(2)` timings prove about the kernel's
//! freeze in a window the answers say was frozen. Times are µs since the Unix epoch.

use std::collections::BTreeSet;

use super::records::WriteSpan;

/// One freeze of the agent, identified by its watchdog deadline.
#[derive(Debug)]
pub struct Generation {
    /// When it was armed (µs since the epoch; from the deadline, so to the millisecond).
    pub armed_us: u64,
    /// When the first successful Quiesce answer for it arrived (its FIFREEZEs were done).
    pub answered_us: u64,
    /// The mountpoints it froze.
    pub frozen: BTreeSet<String>,
}

/// What a writer's log says ([`window_seen`]) about one frozen window `(from_us, to_us)` of
/// its filesystem. A write that started inside the window cannot return before it ends (the kernel blocks
/// it until FITHAW, which comes after `to_us`). A write already running when the window
/// opened may have returned just after `from_us` (preempted after leaving the filesystem),
/// so it only counts when it lasted through the whole window.
#[derive(Debug, PartialEq, Eq)]
pub enum WindowSeen {
    /// A write lasted until the window's end: the kernel held it.
    Held,
    /// A write started in the window and returned inside it: the filesystem was not frozen.
    Escaped(WriteSpan),
    /// Neither: no write started in the window, and none lasted through it.
    Quiet,
}

/// Judges one frozen window `(from_us, to_us)` against a writer's log (in write order).
pub fn window_seen(log: &[WriteSpan], from_us: u64, to_us: u64) -> WindowSeen {
    let first = log.partition_point(|w| w.start_us <= from_us);
    let in_flight = first.checked_sub(1).map(|i| log[i]);
    match log.get(first) {
        Some(w) if w.start_us < to_us && w.end_us < to_us => WindowSeen::Escaped(*w),
        Some(w) if w.start_us < to_us => WindowSeen::Held,
        _ if in_flight.is_some_and(|w| w.end_us >= to_us) => WindowSeen::Held,
        _ => WindowSeen::Quiet,
    }
}

/// Whether a write was in progress at `at_us` (called at or before it, returned after it).
pub fn in_write_at(log: &[WriteSpan], at_us: u64) -> bool {
    let started = log.partition_point(|w| w.start_us <= at_us);
    started > 0 && log[started - 1].end_us > at_us
}

/// Which Thaw ended which freeze (indices into the generations, in arm order, and the
/// thaws), and what is left over on either side.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matching {
    /// (freeze, thaw) pairs.
    pub pairs: Vec<(usize, usize)>,
    /// Freezes no thaw could have ended.
    pub unended: Vec<usize>,
    /// Thaws that ended no freeze.
    pub unmatched: Vec<usize>,
}

/// Pairs each freeze with a Thaw of its set that could have ended it: the thaw happened
/// inside its call `(start, end)` and between the freeze's arming and the next freeze's.
/// Arm times come from the watchdog deadline (milliseconds), so the next arm may be up to
/// 1 ms later than recorded; call times are the clients', so a Thaw's answer may arrive after
/// the next freeze was armed, and a Thaw call may start before the freeze it ends (it waits
/// for the Quiesce). Among the candidates the one whose call ended first is taken (the
/// greedy choice that pairs everything whenever a pairing exists).
pub fn match_thaws(gens: &[&Generation], thaws: &[(u64, u64, BTreeSet<String>)]) -> Matching {
    let mut used = vec![false; thaws.len()];
    let mut m = Matching::default();
    for (g, gen) in gens.iter().enumerate() {
        let next_arm = gens.get(g + 1).map_or(u64::MAX, |n| n.armed_us + 1000);
        let pick = (0..thaws.len())
            .filter(|&t| !used[t])
            .filter(|&t| {
                let (start, end, set) = &thaws[t];
                *end > gen.armed_us && *start < next_arm && *set == gen.frozen
            })
            .min_by_key(|&t| thaws[t].1);
        match pick {
            Some(t) => {
                used[t] = true;
                m.pairs.push((g, t));
            }
            None => m.unended.push(g),
        }
    }
    m.unmatched = (0..thaws.len()).filter(|&t| !used[t]).collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_seen_tells_held_escaped_and_quiet_apart() {
        let w = |start_us, end_us| WriteSpan { start_us, end_us };
        let log = [w(0, 5), w(6, 8), w(20, 100), w(101, 102)];
        // The write starting at 20 returned at 100, after the window 10..50 ended.
        assert_eq!(window_seen(&log, 10, 50), WindowSeen::Held);
        // The write starting at 20 returned at 100, inside 10..150: not frozen.
        assert_eq!(window_seen(&log, 10, 150), WindowSeen::Escaped(w(20, 100)));
        // Returning exactly when the window ends is not inside it.
        assert_eq!(window_seen(&log, 10, 100), WindowSeen::Held);
        // A write in flight when the window opened counts only if it lasted through it.
        assert_eq!(window_seen(&log, 3, 6), WindowSeen::Quiet);
        assert_eq!(window_seen(&log, 30, 90), WindowSeen::Held);
        assert_eq!(window_seen(&log, 102, 200), WindowSeen::Quiet);
    }

    #[test]
    fn thaws_are_paired_with_the_freezes_they_ended() {
        let ab: BTreeSet<String> = ["/a".to_string(), "/b".to_string()].into();
        let a: BTreeSet<String> = ["/a".to_string()].into();
        let gen = |armed_us, frozen: &BTreeSet<String>| Generation {
            armed_us,
            answered_us: armed_us + 100,
            frozen: frozen.clone(),
        };
        let (g1, g2) = (gen(1_000, &ab), gen(5_000, &a));
        // The second freeze was armed (5.0 ms, recorded to the millisecond) before the first
        // Thaw's answer reached its client (5.4 ms): still a valid history.
        let thaws = vec![(4_000, 5_400, ab.clone()), (4_500, 9_000, a.clone())];
        let m = match_thaws(&[&g1, &g2], &thaws);
        assert_eq!(m.pairs, [(0, 0), (1, 1)]);
        assert!(m.unended.is_empty() && m.unmatched.is_empty(), "{m:?}");
        // Both thaws started after the second freeze was armed: the first freeze was still held
        // when the second was made.
        let late = vec![(7_000, 8_000, ab.clone()), (8_500, 9_000, a.clone())];
        let m = match_thaws(&[&g1, &g2], &late);
        assert_eq!(m.unended, [0]);
        assert_eq!(m.unmatched, [0]);
        // A thaw of another set does not end a freeze.
        let m = match_thaws(&[&g1], &[(2_000, 3_000, a.clone())]);
        assert_eq!((m.unended, m.unmatched), (vec![0], vec![0]));
        // Two thaws of the set could end the first freeze; the one answered first does, and
        // the other is left for the next freeze of the same set.
        let (h1, h2) = (gen(1_000, &ab), gen(5_000, &ab));
        let two = vec![(3_000, 7_000, ab.clone()), (2_000, 4_000, ab.clone())];
        let m = match_thaws(&[&h1, &h2], &two);
        assert_eq!(m.pairs, [(0, 1), (1, 0)]);
        // A thaw answered before the freeze was armed cannot have ended it.
        let m = match_thaws(&[&g2], &[(3_000, 4_900, a.clone())]);
        assert_eq!((m.unended, m.unmatched), (vec![0], vec![0]));
        // The next arm is known to the millisecond: a thaw starting 0.5 ms after the recorded
        // next arm may still have ended the first freeze.
        let m = match_thaws(
            &[&g1, &g2],
            &[(5_500, 6_000, ab.clone()), (6_500, 9_000, a)],
        );
        assert_eq!(m.pairs, [(0, 0), (1, 1)]);
    }

    #[test]
    fn in_write_at_finds_the_write_in_progress() {
        let w = |start_us, end_us| WriteSpan { start_us, end_us };
        let log = [w(0, 5), w(6, 80)];
        assert!(in_write_at(&log, 3) && in_write_at(&log, 6) && in_write_at(&log, 79));
        assert!(!in_write_at(&log, 5) && !in_write_at(&log, 80) && !in_write_at(&[], 1));
    }
}
