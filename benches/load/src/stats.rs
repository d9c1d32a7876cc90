//! Shared by the benchmark clients.

/// The `p` quantile (0 to 1) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
