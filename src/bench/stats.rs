//! Summary statistics of repeated measurements: mean, sample standard deviation (as
//! llama-bench computes it), and percentiles by linear interpolation (NumPy's default).

/// The arithmetic mean; 0 for no samples.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The sample standard deviation (divisor `n - 1`); 0 for fewer than two samples.
pub fn stddev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

/// The `p`-th percentile (`0..=100`) by linear interpolation between the closest ranks;
/// `None` for no samples.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// The median (50th percentile).
pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn mean_and_sample_stddev_of_known_samples() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!(close(mean(&xs), 5.0));
        // Population stddev is 2; the sample one is sqrt(32 / 7).
        assert!(close(stddev(&xs), (32.0f64 / 7.0).sqrt()));
        assert_eq!(stddev(&[3.0]), 0.0);
        assert_eq!(mean(&[]), 0.0);
    }

    #[test]
    fn percentiles_interpolate_between_ranks_like_numpy() {
        let xs = [15.0, 20.0, 35.0, 40.0, 50.0];
        // numpy.percentile([15, 20, 35, 40, 50], [0, 25, 50, 95, 100])
        assert!(close(percentile(&xs, 0.0).unwrap(), 15.0));
        assert!(close(percentile(&xs, 25.0).unwrap(), 20.0));
        assert!(close(median(&xs).unwrap(), 35.0));
        assert!(close(percentile(&xs, 95.0).unwrap(), 48.0));
        assert!(close(percentile(&xs, 100.0).unwrap(), 50.0));
        // Order of the input does not matter; even counts average the middle pair.
        assert!(close(median(&[4.0, 1.0, 3.0, 2.0]).unwrap(), 2.5));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
