//! Deterministic audience trajectories: the fan and follower counts of a simulated page at any
//! instant, computed from nothing but the page id and the time, in integer arithmetic so that a
//! test (or a script in another language) can recompute every value exactly.
//!
//! # The formula
//!
//! All arithmetic is on integers wide enough not to overflow (128 bits); `/` and `%` truncate
//! (the operands are never negative); `+` and `*` on `h` values wrap at 64 bits.
//!
//! ```text
//! h        = FNV-1a 64 of the id's UTF-8 bytes (offset 0xcbf29ce484222325, prime 0x100000001b3)
//! mix(z)   = SplitMix64 output function: z ^= z>>30; z *= 0xbf58476d1ce4e5b9;
//!            z ^= z>>27; z *= 0x94d049bb133111eb; z ^= z>>31
//! m(k)     = mix(h + k * 0x9e3779b97f4a7c15)                  for k = 1..=8
//! kind     = [Growth, Decline, Viral, Flat][m(1) % 4]
//! base     = (1000 + m(2) % 9000) * 10^(m(3) % 4)             1_000 ..= 9_999_000 fans
//! rate     = Growth: 20 + m(4) % 381; Decline, Viral: 5 + m(4) % 96; Flat: 0   (ppm of base per hour)
//! period   = 3 days + m(5) % 11 days, in ms                    time between viral jumps
//! phase    = m(6) % period                                     first jump, ms after EPOCH
//! jump     = 20_000 + m(7) % 80_001                            ppm of base per jump (2..10 %)
//! extra    = 20_000 + m(8) % 130_001                           followers over fans, ppm (2..15 %)
//! dt       = max(0, t_ms - EPOCH_MS)                           frozen before EPOCH
//! H        = 3_600_000_000_000                                 (1e6 ppm) * (3.6e6 ms per hour)
//!
//! Growth:  fans = base + base*rate*dt / H                      linear growth
//! Decline: fans = base*H / (H + rate*dt)                       hyperbolic decay, never below 0
//! Viral:   fans = base + base*rate*dt / H + J                  slow growth plus jumps:
//!          J = 0 if dt < phase, else with d = dt - phase, n = d / period, r = d % period:
//!          J = base*jump*(n*RAMP + min(r, RAMP)) / (1e6*RAMP)  RAMP = 1_800_000 (each jump
//!          takes 30 minutes: sudden on an hourly scale, yet a poll mid-jump sees a value between)
//! Flat:    fans = base + v(k) + (v(k+1) - v(k)) * f / 3_600_000   (signed; truncates toward 0)
//!          k = dt / 3_600_000, f = dt % 3_600_000, A = base / 200,
//!          v(j) = mix(!h + j * 0x9e3779b97f4a7c15) % (2A + 1) - A   (noise within ±0.5 %)
//! followers = fans + fans*extra / 1e6                          so followers >= fans, as on
//!                                                              Facebook, where follows outnumber likes
//! ```
//!
//! Counts saturate at `u64::MAX` (reached only in the far future).

/// The instant trajectories start moving: 2026-01-01T00:00:00Z in epoch milliseconds. Earlier
/// times answer the value at this instant.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// How long a viral jump takes to complete, in milliseconds (30 minutes).
pub const JUMP_RAMP_MS: i64 = 1_800_000;

const HOUR_MS: i128 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// ppm times ms per hour: the divisor turning `base * rate_ppm_per_hour * dt_ms` into fans.
const H: i128 = 1_000_000 * HOUR_MS;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The shape of a page's trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Steady linear growth.
    Growth,
    /// Hyperbolic decline.
    Decline,
    /// Slow growth plus a sudden jump every `period_ms`.
    Viral,
    /// Flat, with smooth deterministic noise within ±0.5 %.
    Flat,
}

/// The parameters of one page's trajectory, all derived from the hash of its id (see the module
/// documentation for the formula).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trajectory {
    /// FNV-1a 64 of the page id.
    pub hash: u64,
    /// The shape.
    pub kind: Kind,
    /// Fans at [`EPOCH_MS`] (before noise).
    pub base: u64,
    /// Growth (or, for [`Kind::Decline`], initial decay) in ppm of `base` per hour.
    pub rate_ppm_per_hour: u64,
    /// Time between viral jumps, in ms (used by [`Kind::Viral`] only).
    pub period_ms: u64,
    /// Time of the first viral jump, in ms after [`EPOCH_MS`].
    pub phase_ms: u64,
    /// Size of each viral jump, in ppm of `base`.
    pub jump_ppm: u64,
    /// How many more followers than fans, in ppm of fans.
    pub extra_followers_ppm: u64,
}

/// FNV-1a 64-bit hash: fixed and documented, unlike std's randomly seeded hasher, so the
/// trajectories are the same in every process and easy to recompute elsewhere.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The SplitMix64 output function (the mixing step without the state increment): spreads the
/// bits of a hash so that the derived parameters are independent of each other.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The id of the `i`th simulated page: `page-000001` for 1 (at least six digits).
pub fn page_id(i: u64) -> String {
    format!("page-{i:06}")
}

/// The index of a simulated page id, if `id` is exactly what [`page_id`] gives for some index
/// (so `page-1` and `page-0000001` are not pages). Whether the index is within the population is
/// the server's business.
pub fn page_index(id: &str) -> Option<u64> {
    let i: u64 = id.strip_prefix("page-")?.parse().ok()?;
    (page_id(i) == id).then_some(i)
}

impl Trajectory {
    /// The trajectory of the page `page_id`.
    pub fn of(page_id: &str) -> Self {
        let hash = fnv1a64(page_id.as_bytes());
        let m = |k: u64| mix(hash.wrapping_add(k.wrapping_mul(GOLDEN)));
        let kind = [Kind::Growth, Kind::Decline, Kind::Viral, Kind::Flat][(m(1) % 4) as usize];
        let period_ms = 3 * DAY_MS + m(5) % (11 * DAY_MS);
        Self {
            hash,
            kind,
            base: (1000 + m(2) % 9000) * 10u64.pow((m(3) % 4) as u32),
            rate_ppm_per_hour: match kind {
                Kind::Growth => 20 + m(4) % 381,
                Kind::Decline | Kind::Viral => 5 + m(4) % 96,
                Kind::Flat => 0,
            },
            period_ms,
            phase_ms: m(6) % period_ms,
            jump_ppm: 20_000 + m(7) % 80_001,
            extra_followers_ppm: 20_000 + m(8) % 130_001,
        }
    }

    /// `(fans, followers)` at `t_ms` epoch milliseconds.
    pub fn at(&self, t_ms: i64) -> (u64, u64) {
        let dt = i128::from(t_ms.saturating_sub(EPOCH_MS).max(0));
        let base = i128::from(self.base);
        let rate = i128::from(self.rate_ppm_per_hour);
        let growth = base * rate * dt / H;
        let fans = match self.kind {
            Kind::Growth => base + growth,
            Kind::Decline => base * H / (H + rate * dt),
            Kind::Viral => base + growth + self.jumps(dt),
            Kind::Flat => {
                let (k, f) = (dt / HOUR_MS, dt % HOUR_MS);
                let (a, b) = (self.noise(k), self.noise(k + 1));
                base + a + (b - a) * f / HOUR_MS
            }
        };
        let followers = fans + fans * i128::from(self.extra_followers_ppm) / 1_000_000;
        (saturate(fans), saturate(followers))
    }

    /// The fans added by the viral jumps that have started by `dt` ms after the epoch.
    fn jumps(&self, dt: i128) -> i128 {
        let (phase, period, ramp) = (i128::from(self.phase_ms), i128::from(self.period_ms), i128::from(JUMP_RAMP_MS));
        if dt < phase {
            return 0;
        }
        let (n, r) = ((dt - phase) / period, (dt - phase) % period);
        i128::from(self.base) * i128::from(self.jump_ppm) * (n * ramp + r.min(ramp)) / (1_000_000 * ramp)
    }

    /// The noise point of hour `j` for flat pages, within ±base/200.
    fn noise(&self, j: i128) -> i128 {
        let amplitude = self.base / 200;
        // `j` < 2^64 for any i64 time, so the truncation keeps it whole.
        let z = mix((!self.hash).wrapping_add((j as u64).wrapping_mul(GOLDEN)));
        i128::from(z % (2 * amplitude + 1)) - i128::from(amplitude)
    }

    /// When the `n`th viral jump (from 0) starts, in epoch milliseconds.
    pub fn jump_start_ms(&self, n: u64) -> i64 {
        let offset = self.phase_ms.saturating_add(n.saturating_mul(self.period_ms));
        EPOCH_MS.saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }
}

fn saturate(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// `(fans, followers)` of the page `page_id` at `t_ms` epoch milliseconds: shorthand for
/// `Trajectory::of(page_id).at(t_ms)`.
pub fn fans_at(page_id: &str, t_ms: i64) -> (u64, u64) {
    Trajectory::of(page_id).at(t_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = EPOCH_MS + 200 * DAY + 12_345_678;

    fn population() -> Vec<(String, Trajectory)> {
        (1..=1000).map(|i| (page_id(i), Trajectory::of(&page_id(i)))).collect()
    }

    #[test]
    fn hashes_match_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        // The first output of a SplitMix64 generator seeded with 0.
        assert_eq!(mix(GOLDEN), 0xe220a8397b1dcdaf);
    }

    #[test]
    fn page_ids_round_trip_and_reject_non_canonical_forms() {
        assert_eq!(page_id(1), "page-000001");
        assert_eq!(page_id(1_234_567), "page-1234567");
        assert_eq!(page_index("page-000042"), Some(42));
        assert_eq!(page_index("page-1234567"), Some(1_234_567));
        for bad in ["page-42", "page-0000042", "page-+00042", "pages-000042", "cocacola", ""] {
            assert_eq!(page_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn deterministic_non_negative_and_followers_at_least_fans() {
        for (id, _) in population() {
            for t in [i64::MIN, 0, EPOCH_MS, NOW, NOW + 365 * DAY, i64::MAX] {
                let (fans, followers) = fans_at(&id, t);
                assert_eq!((fans, followers), fans_at(&id, t));
                assert!(followers >= fans, "{id} at {t}");
            }
            assert_eq!(fans_at(&id, 0), fans_at(&id, EPOCH_MS), "frozen before the epoch");
            assert!(fans_at(&id, NOW).0 > 0, "{id} has fans");
        }
    }

    #[test]
    fn every_kind_is_present_in_a_population_of_1000() {
        let pop = population();
        for kind in [Kind::Growth, Kind::Decline, Kind::Viral, Kind::Flat] {
            let n = pop.iter().filter(|(_, t)| t.kind == kind).count();
            assert!((150..350).contains(&n), "{kind:?}: {n} of 1000");
        }
        let bases: Vec<u64> = pop.iter().map(|(_, t)| t.base).collect();
        assert!(bases.iter().all(|b| (1_000..=9_999_000).contains(b)));
        assert!(bases.iter().any(|b| *b < 10_000) && bases.iter().any(|b| *b >= 1_000_000), "spans the decades");
    }

    #[test]
    fn kinds_move_the_way_they_are_named_and_smoothly() {
        for (id, t) in population() {
            // A month, because the slowest small pages move by under one fan a day.
            let (now, later) = (fans_at(&id, NOW).0 as f64, fans_at(&id, NOW + 30 * DAY).0 as f64);
            match t.kind {
                Kind::Growth => assert!(later > now, "{id}"),
                Kind::Decline => assert!(later < now, "{id}"),
                Kind::Viral => assert!(later > now, "{id}: at least two jumps in a month"),
                Kind::Flat => assert!((later - now).abs() <= t.base as f64 / 100.0, "{id}"),
            }
            // Smooth: one minute never moves a page by more than 0.5 % (a viral ramp is the steepest).
            let minute_later = fans_at(&id, NOW + 60_000).0 as f64;
            assert!((minute_later - now).abs() <= now * 0.005 + 1.0, "{id}: {now} -> {minute_later}");
        }
    }

    #[test]
    fn viral_jump_is_visible_within_half_an_hour() {
        let (id, t) = population().into_iter().find(|(_, t)| t.kind == Kind::Viral).expect("a viral page");
        let start = t.jump_start_ms(30);
        let (before, after) = (fans_at(&id, start).0, fans_at(&id, start + JUMP_RAMP_MS).0);
        let jump = t.base * t.jump_ppm / 1_000_000;
        assert!(after - before >= jump, "{id}: {before} -> {after}, jump {jump}");
        let mid = fans_at(&id, start + JUMP_RAMP_MS / 2).0;
        assert!(before < mid && mid < after, "the ramp passes through the middle");
    }

    /// An independent implementation of the documented formula, in floating point where exact
    /// enough and with the constants retyped from the module documentation.
    #[test]
    fn recomputed_from_the_documented_formula() {
        let mixz = |mut z: u64| {
            z ^= z >> 30;
            z = z.wrapping_mul(0xbf58476d1ce4e5b9);
            z ^= z >> 27;
            z = z.wrapping_mul(0x94d049bb133111eb);
            z ^ (z >> 31)
        };
        for i in [1, 2, 3, 17, 500, 999, 1000] {
            let id = page_id(i);
            let mut h: u64 = 0xcbf29ce484222325;
            for b in id.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
            let m = |k: u64| mixz(h.wrapping_add(k.wrapping_mul(0x9e3779b97f4a7c15))) as u128;
            let base = (1000 + m(2) % 9000) * 10u128.pow((m(3) % 4) as u32);
            for t in [EPOCH_MS + 1, NOW, NOW + 7 * DAY] {
                let dt = (t - EPOCH_MS) as u128;
                let h_div: u128 = 3_600_000_000_000;
                let fans = match m(1) % 4 {
                    0 => base + base * (20 + m(4) % 381) * dt / h_div,
                    1 => base * h_div / (h_div + (5 + m(4) % 96) * dt),
                    2 => {
                        let period = 3 * 86_400_000 + m(5) % (11 * 86_400_000);
                        let phase = m(6) % period;
                        let jumps = if dt < phase {
                            0
                        } else {
                            let (n, r) = ((dt - phase) / period, (dt - phase) % period);
                            base * (20_000 + m(7) % 80_001) * (n * 1_800_000 + r.min(1_800_000)) / 1_800_000_000_000
                        };
                        base + base * (5 + m(4) % 96) * dt / h_div + jumps
                    }
                    _ => {
                        let a = (base / 200) as i128;
                        let v = |j: u128| {
                            (mixz((!h).wrapping_add((j as u64).wrapping_mul(0x9e3779b97f4a7c15))) as i128) % (2 * a + 1)
                                - a
                        };
                        let (k, f) = (dt / 3_600_000, (dt % 3_600_000) as i128);
                        (base as i128 + v(k) + (v(k + 1) - v(k)) * f / 3_600_000) as u128
                    }
                };
                let followers = fans + fans * (20_000 + m(8) % 130_001) / 1_000_000;
                assert_eq!(fans_at(&id, t), (fans as u64, followers as u64), "{id} at {t}");
            }
        }
    }
}
