//! Gate configuration: the `[gates]` TOML table, its validation, `describe()`
//! and single-field changes (the admin interface's `set`).
use super::{Gate, Mode};
use serde::{Deserialize, Serialize};

/// `[gates.score]`: promote flows whose score is at least `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreGate {
    /// Mode (default `enforce`).
    pub mode: Mode,
    /// Lowest score promoted, in [0, 65504] (default 0.5; the bundled model's
    /// score is a calibrated attack probability and its card suggests 0.306).
    pub threshold: f64,
}

impl Default for ScoreGate {
    fn default() -> Self {
        ScoreGate { mode: Mode::Enforce, threshold: 0.5 }
    }
}

/// `[gates.novelty]`: promote flows far (L1 on the int8 embedding) from
/// every recently promoted flow of the same sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoveltyGate {
    /// Mode (default `enforce`).
    pub mode: Mode,
    /// A flow is novel when the L1 distance to its nearest neighbour is at
    /// least this, in int8 quanta summed over 32 dimensions: 1..=8160
    /// (default 64: two quanta per dimension on average).
    pub min_distance: u32,
    /// Embeddings kept per sensor (a ring of the most recent promotions):
    /// 1..=65536 (default 4096 = 128 KiB per sensor).
    pub reservoir: u32,
}

impl Default for NoveltyGate {
    fn default() -> Self {
        NoveltyGate { mode: Mode::Enforce, min_distance: 64, reservoir: 4096 }
    }
}

/// `[gates.burst]`: per sensor and flow class (protocol, destination port),
/// flows beyond an adaptive baseline of the class's count per window are
/// sampled down to one in `keep_one_in`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurstGate {
    /// Mode (default `enforce`).
    pub mode: Mode,
    /// Window of batch time, seconds: 1..=86400 (default 10).
    pub window_secs: u64,
    /// EWMA weight of the newest window, in (0, 1] (default 0.2).
    pub alpha: f64,
    /// Baseline = mean + k·σ of the per-window count, k in [0, 100] (default 3).
    pub k: f64,
    /// The baseline is never below this many flows per window: 1..=10^9 (default 50).
    pub min_count: u32,
    /// Beyond the baseline keep one flow in this many: 1..=10^6 (default 100).
    pub keep_one_in: u32,
    /// Classes tracked per sensor; more share one overflow class: 1..=65536 (default 4096).
    pub classes: u32,
}

impl Default for BurstGate {
    fn default() -> Self {
        BurstGate {
            mode: Mode::Enforce,
            window_secs: 10,
            alpha: 0.2,
            k: 3.0,
            min_count: 50,
            keep_one_in: 100,
            classes: 4096,
        }
    }
}

/// `[gates.budget]`: a token bucket per sensor in batch time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetGate {
    /// Mode (default `enforce`).
    pub mode: Mode,
    /// Promotions per window (also the bucket's depth): 1..=10^9 (default 1000).
    pub per_window: u32,
    /// Window of batch time, seconds: 1..=86400 (default 60).
    pub window_secs: u64,
}

impl Default for BudgetGate {
    fn default() -> Self {
        BudgetGate { mode: Mode::Enforce, per_window: 1000, window_secs: 60 }
    }
}

/// What a drift alert does besides being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Report only (metric and ledger entry).
    Alert,
    /// Also switch the sensor's enforcing gates to shadow until acknowledged.
    Shadow,
}

/// `[gates.drift]`: advisory windowed statistics per sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftGate {
    /// Mode (default `enforce`): `off` computes nothing, `shadow` computes
    /// and reports alerts but never applies `on_drift`, `enforce` applies it.
    pub mode: Mode,
    /// What an alert does: `alert` or `shadow` (default `alert`).
    pub on_drift: OnDrift,
    /// Window of batch time, seconds: 1..=86400 (default 60).
    pub window_secs: u64,
    /// Windows with fewer flows are skipped: 1..=10^9 (default 200).
    pub min_flows: u32,
    /// Windows learned as the reference when none is loaded: 1..=1000 (default 3).
    pub reference_windows: u32,
    /// Alert when the worst dimension's PSI against the reference exceeds this: (0, 100] (default 0.25).
    pub psi_alert: f64,
    /// Alert when one destination's share of a window's promotions exceeds this: (0, 1] (default 0.5).
    pub top_share_alert: f64,
    /// ... counted only in windows with at least this many promotions: 1..=10^9 (default 50).
    pub min_promoted: u32,
}

impl Default for DriftGate {
    fn default() -> Self {
        DriftGate {
            mode: Mode::Enforce,
            on_drift: OnDrift::Alert,
            window_secs: 60,
            min_flows: 200,
            reference_windows: 3,
            psi_alert: 0.25,
            top_share_alert: 0.5,
            min_promoted: 50,
        }
    }
}

/// `[gates.ledger]`: what the audit ledger samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSampling {
    /// One held flow in this many gets its own ledger entry (the rest are
    /// counted in the batch entry): 1..=10^9 (default 100).
    pub hold_one_in: u32,
}

impl Default for LedgerSampling {
    fn default() -> Self {
        LedgerSampling { hold_one_in: 100 }
    }
}

/// The `[gates]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatesConfig {
    /// Score threshold.
    pub score: ScoreGate,
    /// Novelty against the reservoir.
    pub novelty: NoveltyGate,
    /// Burst sampling per flow class.
    pub burst: BurstGate,
    /// Promotion budget.
    pub budget: BudgetGate,
    /// Drift monitor.
    pub drift: DriftGate,
    /// Ledger sampling of holds.
    pub ledger: LedgerSampling,
}

/// A configuration refused: names the field, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML does not parse into the structure (unknown key, gate or mode; wrong type).
    #[error("bad [gates] configuration: {0}")]
    Parse(String),
    /// A value outside its range.
    #[error("gates.{field} = {value} is out of range: allowed {allowed}")]
    Range {
        /// Dotted field path under `gates.`.
        field: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// `set` named a gate or key that does not exist.
    #[error("unknown setting gates.{field}: allowed {allowed}")]
    Unknown {
        /// What was named.
        field: String,
        /// What exists.
        allowed: String,
    },
}

fn range<T: PartialOrd + std::fmt::Display>(field: &str, v: T, lo: T, hi: T, allowed: &str) -> Result<(), ConfigError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::Range { field: field.into(), value: v.to_string(), allowed: allowed.into() })
    }
}

fn open_range(field: &str, v: f64, hi: f64, allowed: &str) -> Result<(), ConfigError> {
    if v > 0.0 && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::Range { field: field.into(), value: v.to_string(), allowed: allowed.into() })
    }
}

impl GatesConfig {
    /// Parse a TOML document holding a `[gates]` table (other tables are
    /// ignored; a missing `[gates]` gives the defaults), then validate.
    pub fn from_toml_document(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            gates: GatesConfig,
        }
        let d: Doc = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim().to_string()))?;
        d.gates.validate()?;
        Ok(d.gates)
    }

    /// Parse the body of a `[gates]` table (keys `score`, `novelty`, ...), then validate.
    pub fn from_toml_table(text: &str) -> Result<Self, ConfigError> {
        let g: GatesConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim().to_string()))?;
        g.validate()?;
        Ok(g)
    }

    /// Check every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range(
            "score.threshold",
            self.score.threshold,
            0.0,
            65504.0,
            "0 to 65504 (a score; 0.5 for a [0, 1] probability)",
        )?;
        range(
            "novelty.min_distance",
            self.novelty.min_distance,
            1,
            8160,
            "1 to 8160 (L1 in int8 quanta over 32 dimensions)",
        )?;
        range("novelty.reservoir", self.novelty.reservoir, 1, 65536, "1 to 65536 embeddings per sensor")?;
        range("burst.window_secs", self.burst.window_secs, 1, 86400, "1 to 86400 seconds")?;
        open_range("burst.alpha", self.burst.alpha, 1.0, "greater than 0, at most 1")?;
        range("burst.k", self.burst.k, 0.0, 100.0, "0 to 100")?;
        range("burst.min_count", self.burst.min_count, 1, 1_000_000_000, "1 to 10^9 flows per window")?;
        range("burst.keep_one_in", self.burst.keep_one_in, 1, 1_000_000, "1 to 10^6")?;
        range("burst.classes", self.burst.classes, 1, 65536, "1 to 65536")?;
        range("budget.per_window", self.budget.per_window, 1, 1_000_000_000, "1 to 10^9 promotions per window")?;
        range("budget.window_secs", self.budget.window_secs, 1, 86400, "1 to 86400 seconds")?;
        range("drift.window_secs", self.drift.window_secs, 1, 86400, "1 to 86400 seconds")?;
        range("drift.min_flows", self.drift.min_flows, 1, 1_000_000_000, "1 to 10^9 flows")?;
        range("drift.reference_windows", self.drift.reference_windows, 1, 1000, "1 to 1000 windows")?;
        open_range("drift.psi_alert", self.drift.psi_alert, 100.0, "greater than 0, at most 100")?;
        open_range("drift.top_share_alert", self.drift.top_share_alert, 1.0, "greater than 0, at most 1")?;
        range("drift.min_promoted", self.drift.min_promoted, 1, 1_000_000_000, "1 to 10^9 promotions")?;
        range("ledger.hold_one_in", self.ledger.hold_one_in, 1, 1_000_000_000, "1 to 10^9")?;
        Ok(())
    }

    /// A gate's mode.
    pub fn mode(&self, g: Gate) -> Mode {
        match g {
            Gate::Score => self.score.mode,
            Gate::Novelty => self.novelty.mode,
            Gate::Burst => self.burst.mode,
            Gate::Budget => self.budget.mode,
            Gate::Drift => self.drift.mode,
        }
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The configuration as canonical JSON (sorted keys), as stored and ledgered.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Read [`GatesConfig::to_json`]'s output back.
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        let g: GatesConfig = serde_json::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))?;
        g.validate()?;
        Ok(g)
    }

    /// Every setting, one per line, with its default and what is allowed
    /// (for `wirefold check-config` and `wirefold core gates show`).
    pub fn describe(&self) -> String {
        let (cur, def) = (self.to_value(), GatesConfig::default().to_value());
        let mut out = String::from("[gates] (order: score -> novelty -> burst -> budget -> drift)\n");
        if let (Some(c), Some(d)) = (cur.as_object(), def.as_object()) {
            for table in ["score", "novelty", "burst", "budget", "drift", "ledger"] {
                let Some(tv) = c.get(table).and_then(|t| t.as_object()) else { continue };
                for (k, v) in tv {
                    let dvv = d.get(table).and_then(|t| t.get(k));
                    let dv = dvv.map(|v| v.to_string()).unwrap_or_default();
                    let mark = if Some(v) == dvv { "" } else { "   # changed" };
                    out.push_str(&format!("gates.{table}.{k} = {v}   (default {dv}; {}){mark}\n", allowed(table, k)));
                }
            }
        }
        out
    }

    /// Every gate off: every flow is promoted (the baseline of benchmarks).
    pub fn all_off() -> GatesConfig {
        let mut g = GatesConfig::default();
        for gate in ["score", "novelty", "burst", "budget", "drift"] {
            if let Ok(n) = g.with_field(gate, "mode", "off") {
                g = n;
            }
        }
        g
    }

    /// A copy with one field changed (`gate` is the table, `key` the field,
    /// `value` TOML-ish text: a number, `true`/`false`, or a word such as a
    /// mode), validated. The receiver is unchanged.
    pub fn with_field(&self, gate: &str, key: &str, value: &str) -> Result<GatesConfig, ConfigError> {
        let mut v = self.to_value();
        let tables: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        let Some(t) = v.get_mut(gate).and_then(|t| t.as_object_mut()) else {
            return Err(ConfigError::Unknown { field: gate.into(), allowed: tables.join(", ") });
        };
        if !t.contains_key(key) {
            let keys: Vec<String> = t.keys().cloned().collect();
            return Err(ConfigError::Unknown { field: format!("{gate}.{key}"), allowed: keys.join(", ") });
        }
        let parsed: serde_json::Value = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(x @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => x,
            _ => serde_json::Value::String(value.to_string()),
        };
        t.insert(key.to_string(), parsed);
        let g: GatesConfig = serde_json::from_value(v).map_err(|e| ConfigError::Range {
            field: format!("{gate}.{key}"),
            value: value.into(),
            allowed: format!("{} ({e})", allowed(gate, key)),
        })?;
        g.validate()?;
        Ok(g)
    }
}

fn allowed(table: &str, key: &str) -> &'static str {
    match (table, key) {
        (_, "mode") => "enforce | shadow | off",
        ("drift", "on_drift") => "alert | shadow",
        ("score", "threshold") => "0 to 65504",
        ("novelty", "min_distance") => "1 to 8160, L1 in int8 quanta",
        ("novelty", "reservoir") => "1 to 65536 embeddings, 32 bytes each, per sensor",
        (_, "window_secs") => "1 to 86400 s of batch time",
        ("burst", "alpha") => "(0, 1]",
        ("burst", "k") => "0 to 100",
        ("burst", "min_count") => "1 to 10^9 flows per window",
        ("burst", "keep_one_in") => "1 to 10^6",
        ("burst", "classes") => "1 to 65536",
        ("budget", "per_window") => "1 to 10^9 promotions",
        ("drift", "min_flows") => "1 to 10^9",
        ("drift", "reference_windows") => "1 to 1000",
        ("drift", "psi_alert") => "(0, 100]",
        ("drift", "top_share_alert") => "(0, 1]",
        ("drift", "min_promoted") => "1 to 10^9",
        ("ledger", "hold_one_in") => "1 to 10^9",
        _ => "see docs/gates.md",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_describe() {
        let g = GatesConfig::from_toml_document("").unwrap();
        assert_eq!(g, GatesConfig::default());
        let g = GatesConfig::from_toml_document(
            "[other]\nx = 1\n[gates.score]\nmode = \"shadow\"\nthreshold = 0.9\n[gates.budget]\nper_window = 5\n",
        )
        .unwrap();
        assert_eq!(g.score.mode, Mode::Shadow);
        assert_eq!(g.budget.per_window, 5);
        let d = g.describe();
        assert!(d.contains("gates.score.threshold = 0.9"), "{d}");
        assert!(d.contains("default 1000"), "{d}");
        assert!(d.contains("gates.drift.on_drift = \"alert\""), "{d}");
        assert_eq!(GatesConfig::from_json(&g.to_json()).unwrap(), g);
    }

    #[test]
    fn bad_input_is_refused_naming_it() {
        let cases = [
            ("[gates.score]\nthreshhold = 1\n", "threshhold"),
            ("[gates.scores]\nmode = \"off\"\n", "scores"),
            ("[gates.novelty]\nmode = \"enforced\"\n", "enforced"),
            ("[gates.novelty]\nreservoir = 0\n", "gates.novelty.reservoir = 0"),
            ("[gates.score]\nthreshold = -1.0\n", "gates.score.threshold = -1"),
            ("[gates.burst]\nalpha = 1.5\n", "gates.burst.alpha = 1.5"),
            ("[gates.drift]\non_drift = \"panic\"\n", "panic"),
        ];
        for (text, needle) in cases {
            let e = GatesConfig::from_toml_document(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let e = GatesConfig::from_toml_document("[gates.burst]\nalpha = 1.5\n").unwrap_err().to_string();
        assert!(e.contains("allowed"), "{e}");
    }

    #[test]
    fn with_field_changes_one_setting() {
        let g = GatesConfig::default();
        let h = g.with_field("score", "threshold", "0.75").unwrap();
        assert_eq!(h.score.threshold, 0.75);
        assert_eq!(g.with_field("novelty", "mode", "shadow").unwrap().novelty.mode, Mode::Shadow);
        for (gate, key, v, needle) in [
            ("nope", "mode", "off", "unknown setting gates.nope"),
            ("score", "nope", "1", "gates.score.nope"),
            ("score", "mode", "sometimes", "gates.score.mode"),
            ("budget", "per_window", "0", "gates.budget.per_window = 0"),
        ] {
            let e = g.with_field(gate, key, v).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
