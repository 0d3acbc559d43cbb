//! The median of repeated runs and their spread, shared by the benchmarks (`load`, `compare`,
//! `read_cache`).

/// The median of `xs` and the spread (min..max), as text.
pub fn median_spread(xs: &[f64], digits: usize) -> (f64, String) {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, "-".into());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let spread = if v.len() > 1 {
        format!(
            "{med:.digits$} ({:.digits$}..{:.digits$})",
            v[0],
            v[v.len() - 1]
        )
    } else {
        format!("{med:.digits$}")
    };
    (med, spread)
}
