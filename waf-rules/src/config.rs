//! The host-facing configuration: mode, paranoia level, threshold and inspection limits.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the engine does with a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Rules are not evaluated; every request is allowed.
    Off,
    /// Rules are evaluated and matches reported, but nothing is ever blocked.
    Detect,
    /// Requests whose anomaly score reaches the threshold (or that hit a blocking rule) are blocked.
    #[default]
    Block,
}

/// Inspection limits: what the engine looks at, and how it reacts when a request exceeds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Body bytes inspected. A longer body is inspected up to this length and the request is
    /// flagged with `INBOUND_DATA_ERROR` (as ModSecurity's `ProcessPartial`).
    pub max_body_bytes: usize,
    /// Arguments parsed (query plus body). Past this, parsing stops and `REQBODY_ERROR` is set
    /// (ModSecurity's `SecArgumentsLimit`).
    pub max_args: usize,
    /// JSON nesting depth accepted by the JSON body processor; deeper bodies set `REQBODY_ERROR`.
    pub max_json_depth: usize,
    /// Length of a value excerpt in a [`crate::RuleMatch`].
    pub excerpt_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_args: 1000,
            max_json_depth: 64,
            excerpt_bytes: 120,
        }
    }
}

/// Configuration of the CRS engine as a host embeds it in its own TOML.
///
/// ```toml
/// mode = "block"
/// paranoia = 1
/// inbound-threshold = 5
/// [limits]
/// max-body-bytes = 1048576
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WafConfig {
    /// Off, detect (log only) or block.
    pub mode: Mode,
    /// CRS paranoia level 1..=4 (sets both the blocking and the detection paranoia level).
    pub paranoia: u8,
    /// CRS inbound anomaly score threshold (`tx.inbound_anomaly_score_threshold`).
    pub inbound_threshold: u32,
    /// Inspection limits.
    pub limits: Limits,
    /// Extra TX variables set before any rule runs, as `crs-setup.conf` would
    /// (e.g. `arg_length = "400"`). Keys are TX names without the `tx.` prefix.
    pub tx: BTreeMap<String, String>,
}

impl Default for WafConfig {
    fn default() -> Self {
        WafConfig {
            mode: Mode::Block,
            paranoia: 1,
            inbound_threshold: 5,
            limits: Limits::default(),
            tx: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_kebab_case_and_rejects_unknown_keys() {
        let c: WafConfig =
            serde_json::from_str(r#"{"mode":"detect","paranoia":2,"inbound-threshold":10}"#)
                .expect("valid config");
        assert_eq!(c.mode, Mode::Detect);
        assert_eq!(c.paranoia, 2);
        assert_eq!(c.inbound_threshold, 10);
        assert!(serde_json::from_str::<WafConfig>(r#"{"paranoya":2}"#).is_err());
    }
}
