//! The multivariate model: per-channel features over fixed windows of capture time, clustered
//! with k-means (linfa) during learning; a window whose distance to the nearest centroid exceeds
//! the threshold learned from the training windows is a `behaviour_anomaly`.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Latency enters as the window's median only: one slow response is not a change of behaviour
/// (a sustained one is; `latency_shift` watches each channel for that). A window without an
/// answered request has no latency: the feature is missing (NaN), not zero, and is left out
/// of the distance (a poll whose answer falls in the next window is no change of behaviour).
pub const FEATURES: [&str; 7] = [
    "requests",
    "responses",
    "exceptions",
    "writes",
    "functions",
    "addresses",
    "latency_p50_ms",
];
const N: usize = FEATURES.len();
/// Fewer training windows than this and no model is built: a threshold from a handful of
/// windows would alert on ordinary variation.
pub const MIN_TRAINING_WINDOWS: usize = 10;
/// Spreads below this (in log1p units) are raised to it, so a feature that never varied in
/// training does not turn a change of one into a huge distance.
const MIN_STD: f64 = 0.75;
/// Windows k-means is fitted on, at most.
const MAX_FIT: usize = 4096;
/// Distinct addresses counted per window; beyond this a window is "many" anyway.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BehaviourModel {
    /// Window length, seconds.
    pub window: f64,
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub centroids: Vec<Vec<f64>>,
    /// Largest distance of a training window to its centroid, and the alert threshold.
    pub max_training_distance: f64,
    pub threshold: f64,
    pub training_windows: usize,
}

/// Distinct values, counted. A window of a channel sees a few functions and addresses: they are
/// held in place while there are at most eight.
type Distinct<T> = crate::small::SmallMap<T, (), 8>;

/// One channel's activity in the current window.
#[derive(Debug, Default)]
pub struct WindowAcc {
    pub requests: u32,
    pub responses: u32,
    pub exceptions: u32,
    pub writes: u32,
    functions: Distinct<u32>,
    addresses: Distinct<(u32, u32)>,
    latencies: Vec<f64>,
    pub first_frame: Option<u64>,
    pub last_frame: u64,
}

impl WindowAcc {
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.responses == 0
    }

    pub fn add(&mut self, o: &crate::Observation, latency: Option<f64>) {
        use crate::Kind;
        self.first_frame.get_or_insert(o.frame);
        self.last_frame = o.frame;
        match o.kind {
            Kind::Request => {
                self.requests += 1;
                self.functions.insert(o.function, ());
                if o.write {
                    self.writes += 1;
                }
                for a in &o.accesses {
                    if self.addresses.len() < MAX_ADDRESSES {
                        self.addresses.insert((a.space, a.start), ());
                    }
                }
            }
            Kind::Response | Kind::Unsolicited => {
                self.responses += 1;
                if o.exception {
                    self.exceptions += 1;
                }
            }
            Kind::Conversation => {}
        }
        if let Some(l) = latency {
            if self.latencies.len() < 4096 {
                self.latencies.push(l);
            }
        }
    }

    /// [`WindowAcc::add`] for a request with no latency whose function and addresses this
    /// window has already (the same request again).
    #[inline]
    pub fn add_again(&mut self, o: &crate::Observation) {
        debug_assert!(o.kind == crate::Kind::Request && self.functions.contains_key(&o.function));
        self.first_frame.get_or_insert(o.frame);
        self.last_frame = o.frame;
        self.requests += 1;
        if o.write {
            self.writes += 1;
        }
    }

    pub fn features(&mut self) -> [f64; N] {
        // The middle element in total order: a selection, not a sort.
        let mid = self.latencies.len() / 2;
        let p50 = if self.latencies.is_empty() {
            f64::NAN
        } else {
            *self.latencies.select_nth_unstable_by(mid, f64::total_cmp).1
        };
        [
            f64::from(self.requests),
            f64::from(self.responses),
            f64::from(self.exceptions),
            f64::from(self.writes),
            self.functions.len() as f64,
            self.addresses.len() as f64,
            p50 * 1e3,
        ]
    }
}

/// Features on a log scale; a missing one (NaN) stays missing.
fn transform(x: &[f64; N]) -> [f64; N] {
    x.map(|v| if v.is_nan() { v } else { v.max(0.0).ln_1p() })
}

impl BehaviourModel {
    /// Fits the model; `None` when there are too few windows.
    pub fn train(window: f64, samples: &[[f64; N]]) -> Option<BehaviourModel> {
        if samples.len() < MIN_TRAINING_WINDOWS {
            return None;
        }
        let t: Vec<[f64; N]> = samples.iter().map(transform).collect();
        // Means and spreads over the windows that have the feature.
        let mut mean = vec![0.0; N];
        let mut std = vec![0.0; N];
        for j in 0..N {
            let present = || t.iter().map(|row| row[j]).filter(|v| !v.is_nan());
            let n = present().count().max(1) as f64;
            mean[j] = present().map(|v| v / n).sum::<f64>();
            std[j] = present()
                .map(|v| (v - mean[j]).powi(2) / n)
                .sum::<f64>()
                .sqrt()
                .max(MIN_STD);
        }
        // k-means on at most MAX_FIT windows, evenly spread over learning; the threshold below
        // still looks at every window.
        let stride = t.len().div_ceil(MAX_FIT).max(1);
        let fit: Vec<usize> = (0..t.len()).step_by(stride).collect();
        let mut data = Array2::<f64>::zeros((fit.len(), N));
        for (r, &i) in fit.iter().enumerate() {
            for j in 0..N {
                data[[r, j]] = standard(t[i][j], mean[j], std[j]);
            }
        }
        let k = (fit.len() / 8).clamp(1, 6);
        let model = KMeans::params(k)
            .n_runs(3)
            .max_n_iterations(200)
            .tolerance(1e-6)
            .fit(&DatasetBase::from(data))
            .ok()?;
        let centroids: Vec<Vec<f64>> = model
            .centroids()
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect();
        let mut m = BehaviourModel {
            window,
            features: FEATURES.iter().map(|s| s.to_string()).collect(),
            mean,
            std,
            centroids,
            max_training_distance: 0.0,
            threshold: 0.0,
            training_windows: t.len(),
        };
        let max = samples.iter().map(|x| m.distance(x)).fold(0.0, f64::max);
        m.max_training_distance = max;
        // Half as far again as the farthest training window, and at least three spreads: the
        // model flags windows unlike any seen, not the edge of ordinary variation.
        m.threshold = (1.5 * max).max(3.0);
        Some(m)
    }

    /// Distance of a raw feature vector to the nearest centroid, in standardised units.
    pub fn distance(&self, x: &[f64; N]) -> f64 {
        let t = transform(x);
        // Missing features (NaN) stay missing, and are left out of the distance.
        let z: Vec<f64> = (0..N)
            .map(|j| {
                (t[j] - self.mean.get(j).copied().unwrap_or(0.0))
                    / self.std.get(j).copied().unwrap_or(1.0)
            })
            .collect();
        self.centroids
            .iter()
            .map(|c| {
                c.iter()
                    .zip(&z)
                    .filter(|(_, b)| !b.is_nan())
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// A feature in standardised units for k-means, which needs every coordinate: a missing one
/// is taken at the mean (0).
fn standard(v: f64, mean: f64, std: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        (v - mean) / std
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index of `latency_p50_ms`, the feature a window can lack.
    const LATENCY: usize = N - 1;

    /// Distinct values are counted once, in place and past the move to a hash set.
    #[test]
    fn distinct_counts_each_value_once() {
        let mut d = Distinct::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut seed: u32 = 7;
        for _ in 0..500 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Few values at first, then more: both forms are exercised.
            let v = (seed >> 16) % (seen.len() as u32 + 2);
            d.insert(v, ());
            seen.insert(v);
            assert_eq!(d.len(), seen.len());
        }
        assert!(
            matches!(d, Distinct::Many(_)),
            "it grew past the short list"
        );
    }

    fn window(req: f64, lat: f64) -> [f64; N] {
        [req, req, 0.0, 0.0, 2.0, 2.0, lat]
    }

    #[test]
    fn too_few_windows_give_no_model() {
        assert!(BehaviourModel::train(10.0, &[window(10.0, 2.0); 5]).is_none());
    }

    #[test]
    fn ordinary_windows_pass_and_outliers_fail() {
        let train: Vec<[f64; N]> = (0..40)
            .map(|i| window(10.0 + f64::from(i % 3), 2.0 + f64::from(i % 2)))
            .collect();
        let m = BehaviourModel::train(10.0, &train).expect("model");
        assert!(m.distance(&window(11.0, 2.5)) <= m.threshold);
        // A flood: a hundred times the requests.
        assert!(m.distance(&window(1000.0, 2.0)) > m.threshold);
        // A slowed responder: fifty times the latency.
        assert!(m.distance(&window(10.0, 100.0)) > m.threshold);
        let json = serde_json::to_string(&m).expect("json");
        let back: BehaviourModel = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, m);
    }

    /// One poll a window, answered in 20 ms: a window whose request was answered only in the
    /// next one (the poll's phase drifted to the window's end) has no latency, and the next one
    /// two answers. Neither is unlike learning; a window without answers to many requests is.
    #[test]
    fn a_window_without_answers_has_no_latency_not_a_zero_one() {
        let train: Vec<[f64; N]> = (0..40)
            .map(|i| [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 20.0 + f64::from(i % 3)])
            .collect();
        let m = BehaviourModel::train(5.0, &train).expect("model");
        let mut straddle = WindowAcc {
            requests: 1,
            ..Default::default()
        };
        let x = straddle.features();
        assert!(x[LATENCY].is_nan());
        assert!(
            m.distance(&x) <= m.threshold,
            "{} > {}",
            m.distance(&x),
            m.threshold
        );
        let next = [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 20.0];
        assert!(m.distance(&next) <= m.threshold);
        let unanswered = [50.0, 0.0, 0.0, 0.0, 1.0, 1.0, f64::NAN];
        assert!(m.distance(&unanswered) > m.threshold);
        // Learning's windows without answers do not pull the latency's mean to zero.
        let mut with_gaps = train.clone();
        with_gaps.extend((0..10).map(|_| [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, f64::NAN]));
        let g = BehaviourModel::train(5.0, &with_gaps).expect("model");
        assert!((g.mean[LATENCY] - m.mean[LATENCY]).abs() < 1e-9);
    }
}
