//! Holm's step-down correction for testing several treatments against one control (Holm, "A
//! Simple Sequentially Rejective Multiple Test Procedure", Scand. J. Statist. 1979).
//!
//! With the `m` p-values sorted ascending `p₍₁₎ ≤ … ≤ p₍ₘ₎`, the adjusted values are
//! `p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1) p₍ⱼ₎)`: monotone in the order of the raw values, and
//! rejecting `p̃ < α` controls the family-wise error rate at `α` under any dependence. The same
//! values as `statsmodels.stats.multitest.multipletests(p, method="holm")`.

use crate::error::StatsError;

/// Holm-adjusted p-values, in the order of the input.
///
/// # Errors
/// [`StatsError::InvalidInput`] when a p-value is NaN or outside `[0, 1]`.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    if p_values.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(StatsError::InvalidInput {
            field: "p_values",
            rule: "every p-value must lie in [0, 1]",
        });
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_down() {
        // multipletests([0.01, 0.04, 0.03, 0.5], method="holm")[1] = [0.04, 0.09, 0.09, 0.5].
        let adj = holm(&[0.01, 0.04, 0.03, 0.5]).unwrap();
        let want = [0.04, 0.09, 0.09, 0.5];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-15, "{adj:?}");
        }
        assert_eq!(holm(&[]).unwrap(), Vec::<f64>::new());
        assert!(holm(&[f64::NAN]).is_err());
        assert!(holm(&[1.5]).is_err());
    }
}
