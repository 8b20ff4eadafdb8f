//! Summary statistics of a stream of f32 values (min, max, mean, standard deviation over the
//! finite ones; NaN and infinity counts), accumulated chunk by chunk in f64 so tensors of any
//! size are summarised without holding them whole. Used by `--stats` and `--layer-trace`.

use serde::Serialize;

/// Statistics of the values seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Values seen, including NaN and infinite ones.
    pub count: u64,
    /// Smallest finite value (null when there is none).
    pub min: Option<f32>,
    /// Largest finite value (null when there is none).
    pub max: Option<f32>,
    /// Mean of the finite values (null when there is none).
    pub mean: Option<f64>,
    /// Population standard deviation of the finite values (null when there is none).
    pub std: Option<f64>,
    /// NaN values.
    pub nan: u64,
    /// Infinite values (either sign).
    pub inf: u64,
    /// Sum of squared deviations from the mean, for merging (not serialised).
    #[serde(skip)]
    m2: f64,
    /// Finite values, for merging (not serialised).
    #[serde(skip)]
    finite: u64,
}

impl Stats {
    /// Statistics of one chunk (two passes over it: exact mean, then deviations).
    pub fn of(values: &[f32]) -> Self {
        let mut s = Self {
            count: values.len() as u64,
            ..Self::default()
        };
        let mut sum = 0f64;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            if v.is_nan() {
                s.nan += 1;
            } else if v.is_infinite() {
                s.inf += 1;
            } else {
                s.finite += 1;
                sum += f64::from(v);
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if s.finite == 0 {
            return s;
        }
        let mean = sum / s.finite as f64;
        s.m2 = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum();
        s.min = Some(lo);
        s.max = Some(hi);
        s.mean = Some(mean);
        s.std = Some((s.m2 / s.finite as f64).sqrt());
        s
    }

    /// Adds the statistics of more values (Chan et al.'s parallel merge).
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.nan += other.nan;
        self.inf += other.inf;
        let (Some(ma), Some(mb)) = (self.mean, other.mean) else {
            if self.mean.is_none() {
                *self = Self {
                    count: self.count,
                    nan: self.nan,
                    inf: self.inf,
                    ..*other
                };
            }
            return;
        };
        let (na, nb) = (self.finite as f64, other.finite as f64);
        let n = na + nb;
        let delta = mb - ma;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.finite += other.finite;
        self.mean = Some(ma + delta * nb / n);
        self.std = Some((self.m2 / n).sqrt());
        self.min = self.min.zip(other.min).map(|(a, b)| a.min(b));
        self.max = self.max.zip(other.max).map(|(a, b)| a.max(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_chunks_equal_one_pass_over_everything() {
        let values: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) - 50.0).collect();
        let whole = Stats::of(&values);
        let mut merged = Stats::default();
        for chunk in values.chunks(77) {
            merged.merge(&Stats::of(chunk));
        }
        assert_eq!(merged.count, 1000);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        let d = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs();
        assert!(d(merged.mean, whole.mean) < 1e-9);
        assert!(d(merged.std, whole.std) < 1e-9);
    }

    #[test]
    fn nan_and_inf_are_counted_not_averaged() {
        let s = Stats::of(&[1.0, f32::NAN, 3.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!((s.count, s.nan, s.inf), (5, 1, 2));
        assert_eq!(
            (s.min, s.max, s.mean, s.std),
            (Some(1.0), Some(3.0), Some(2.0), Some(1.0))
        );
    }

    #[test]
    fn all_nan_has_no_mean() {
        let mut s = Stats::of(&[f32::NAN]);
        assert_eq!((s.mean, s.min), (None, None));
        s.merge(&Stats::of(&[2.0]));
        assert_eq!(
            (s.count, s.nan, s.mean, s.min),
            (2, 1, Some(2.0), Some(2.0))
        );
    }
}
