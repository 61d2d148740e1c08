//! Exact discrete Laplace noise (spec: privacy.md §3).
//!
//! Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy" (2020),
//! Algorithms 1 and 2: every step is a comparison of uniformly random integers, so the
//! samples follow the discrete Laplace distribution exactly, with no floating point
//! anywhere (floating-point Laplace noise leaks through the gaps between representable
//! values, Mironov 2012). Randomness comes from the caller's RNG: the operating system's
//! CSPRNG in production ([`rand_core::OsRng`]), a seeded one in tests.

use rand_core::RngCore;

/// A uniform integer in `[0, bound)` by rejection (no modulo bias); `bound ≥ 1`.
fn uniform(rng: &mut impl RngCore, bound: u128) -> u128 {
    if bound <= 1 {
        return 0;
    }
    // The largest multiple of `bound` that fits, so each residue is equally likely.
    let zone = u128::MAX - (u128::MAX % bound);
    loop {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let draw = u128::from_le_bytes(bytes);
        if draw < zone {
            return draw % bound;
        }
    }
}

/// Bernoulli(n/d), `n ≤ d`, `d ≥ 1`.
fn bernoulli(rng: &mut impl RngCore, n: u128, d: u128) -> bool {
    uniform(rng, d) < n
}

/// Bernoulli(exp(−n/d)) for `n/d ≥ 0` (CKS20 Algorithm 1).
fn bernoulli_exp(rng: &mut impl RngCore, n: u128, d: u128) -> bool {
    let mut n = n;
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)).
    while n > d {
        if !bernoulli_exp_unit(rng, 1, 1) {
            return false;
        }
        n -= d;
    }
    bernoulli_exp_unit(rng, n, d)
}

/// Bernoulli(exp(−γ)) for γ = n/d in [0, 1]: count K while Bernoulli(γ/K) succeeds;
/// accept when K ends odd.
fn bernoulli_exp_unit(rng: &mut impl RngCore, n: u128, d: u128) -> bool {
    let mut k: u128 = 1;
    loop {
        let Some(kd) = d.checked_mul(k) else { return k % 2 == 1 };
        if !bernoulli(rng, n, kd) {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// One sample of the discrete Laplace distribution with scale `t/s`:
/// `P(z) ∝ exp(−|z|·s/t)` over the integers (CKS20 Algorithm 2). `t, s ≥ 1`.
pub fn discrete_laplace(rng: &mut impl RngCore, t: u64, s: u64) -> i128 {
    let (t, s) = (u128::from(t.max(1)), u128::from(s.max(1)));
    loop {
        let u = uniform(rng, t);
        if !bernoulli_exp(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(rng, 1, 1) {
            v += 1;
        }
        let x = u + t.saturating_mul(v);
        let y = x / s;
        let negative = bernoulli(rng, 1, 2);
        if negative && y == 0 {
            continue;
        }
        let y = i128::try_from(y).unwrap_or(i128::MAX);
        return if negative { -y } else { y };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// P(z) = (1 − p)/(1 + p) · p^|z| with p = exp(−s/t).
    fn pmf(z: i64, t: f64, s: f64) -> f64 {
        let p = (-s / t).exp();
        (1.0 - p) / (1.0 + p) * p.powi(i32::try_from(z.unsigned_abs()).unwrap())
    }

    fn chi_square(samples: &[i128], t: u64, s: u64, range: i64) -> f64 {
        let n = samples.len() as f64;
        let mut chi = 0.0;
        let mut inside = 0.0;
        for z in -range..=range {
            let observed = samples.iter().filter(|x| **x == i128::from(z)).count() as f64;
            let expected = n * pmf(z, t as f64, s as f64);
            inside += expected;
            chi += (observed - expected).powi(2) / expected;
        }
        let tail_observed =
            samples.iter().filter(|x| x.unsigned_abs() > u128::from(range.unsigned_abs())).count() as f64;
        let tail_expected = n - inside;
        chi + (tail_observed - tail_expected).powi(2) / tail_expected
    }

    #[test]
    fn samples_follow_the_discrete_laplace_distribution() {
        // Scale 5/2 (sensitivity 5, epsilon 2): bins −8..=8 plus both tails, 17 degrees of
        // freedom; the 0.1 % critical value of chi-square(17) is 40.8.
        let mut rng = ChaCha20Rng::seed_from_u64(20_261_201);
        let samples: Vec<i128> = (0..60_000).map(|_| discrete_laplace(&mut rng, 5, 2)).collect();
        let chi = chi_square(&samples, 5, 2, 8);
        assert!(chi < 40.8, "chi-square {chi} for scale 5/2");
        // The same samples judged as scale 5 (twice the noise) are far off.
        assert!(chi_square(&samples, 5, 1, 8) > 1000.0);
        let mean = samples.iter().sum::<i128>() as f64 / samples.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        // Variance 2p/(1 − p)^2.
        let p = (-2.0f64 / 5.0).exp();
        let expected = 2.0 * p / (1.0 - p).powi(2);
        let variance = samples.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!((variance / expected - 1.0).abs() < 0.05, "variance {variance}, expected {expected}");
    }

    #[test]
    fn large_scales_and_bernoulli_of_exp() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        // Bernoulli(exp(−3/2)) ≈ 0.2231.
        let hits = (0..40_000).filter(|_| bernoulli_exp(&mut rng, 3, 2)).count() as f64 / 40_000.0;
        assert!((hits - (-1.5f64).exp()).abs() < 0.01, "{hits}");
        // Scale 10^6: the mean absolute value of Lap(b) is close to b.
        let samples: Vec<i128> = (0..4_000).map(|_| discrete_laplace(&mut rng, 1_000_000, 1)).collect();
        let mean_abs = samples.iter().map(|x| x.unsigned_abs() as f64).sum::<f64>() / 4_000.0;
        assert!((mean_abs / 1e6 - 1.0).abs() < 0.06, "{mean_abs}");
    }
}
