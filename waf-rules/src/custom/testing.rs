//! In-file test cases: a request (sent `repeat` times) and what the ruleset must do with it.
//!
//! A case under a rule (`[[rule.test]]`) checks that rule: `block`, `allow`, `rate-limit` mean
//! the rule decided the request — or, for a rule in shadow mode, that it *would have* (it is
//! recorded in the matches as a shadow match); `log` means it matched and was recorded; `pass`
//! means it did not match. A file-level case (`[[test]]`) checks the verdict of the whole ruleset:
//! `pass` means no rule stopped or allowed the request; the others name the outcome, optionally
//! the deciding `rule`.

use std::fmt;
use std::sync::Arc;

use super::{CustomAction, CustomRules, CustomVerdict, Location, Mode, RuleAction};
use crate::input::HttpRequest;
use crate::ratelimit::RateLimiter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    Pass,
    Allow,
    Block,
    RateLimit,
    Log,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Pass => "pass",
            Expect::Allow => "allow",
            Expect::Block => "block",
            Expect::RateLimit => "rate-limit",
            Expect::Log => "log",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    pub name: String,
    pub location: Location,
    /// The rule the case sits under, if any.
    pub owner: Option<Arc<str>>,
    /// For file-level cases: the rule expected to decide.
    pub rule: Option<Arc<str>>,
    pub request: HttpRequest,
    pub repeat: u32,
    pub interval_ms: u64,
    pub expect: Expect,
}

/// The result of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// Where the case is written.
    pub location: Location,
    /// The rule it sits under, if any.
    pub rule: Option<String>,
    /// Its name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What happened (for failures: expected vs. got).
    pub detail: String,
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed { "ok  " } else { "FAIL" };
        write!(f, "{status} {} ", self.location)?;
        if let Some(r) = &self.rule {
            write!(f, "[{r}] ")?;
        }
        write!(f, "{}", self.name)?;
        if !self.passed {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The results of a test run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// One per case, in file order.
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

fn describe(v: &CustomVerdict) -> String {
    let action = match &v.action {
        CustomAction::Pass => "pass".to_string(),
        CustomAction::Allow { rule_id } => format!("allow by `{rule_id}`"),
        CustomAction::Block { rule_id } => format!("block by `{rule_id}`"),
        CustomAction::RateLimited {
            rule_id,
            retry_after_secs,
        } => format!("rate-limit by `{rule_id}` (retry after {retry_after_secs}s)"),
    };
    if v.matches.is_empty() {
        return action;
    }
    let m: Vec<String> = v
        .matches
        .iter()
        .map(|m| format!("{}:{}:{}", m.rule_id, m.action.as_str(), m.mode.as_str()))
        .collect();
    format!("{action}; matches [{}]", m.join(", "))
}

fn action_kind(a: &CustomAction) -> Expect {
    match a {
        CustomAction::Pass => Expect::Pass,
        CustomAction::Allow { .. } => Expect::Allow,
        CustomAction::Block { .. } => Expect::Block,
        CustomAction::RateLimited { .. } => Expect::RateLimit,
    }
}

fn check(rules: &CustomRules, case: &TestCase, v: &CustomVerdict) -> Result<(), String> {
    let got = describe(v);
    match &case.owner {
        Some(owner) => {
            let rule = rules.rules.iter().find(|r| &r.id == owner);
            let mode = rule.map(|r| r.mode).unwrap_or(Mode::Enforce);
            let matched = v.matches.iter().find(|m| &m.rule_id == owner);
            let ok = match case.expect {
                Expect::Pass => matched.is_none(),
                Expect::Log => matched.is_some_and(|m| m.action == RuleAction::Log),
                e if mode == Mode::Shadow => {
                    let want = match e {
                        Expect::Allow => RuleAction::Allow,
                        Expect::Block => RuleAction::Block,
                        _ => RuleAction::RateLimit,
                    };
                    matched.is_some_and(|m| {
                        m.mode == Mode::Shadow
                            && (m.action == want
                                || (e == Expect::Block && m.action == RuleAction::RateLimit))
                    })
                }
                e => action_kind(&v.action) == e && v.action.rule_id() == Some(owner.as_ref()),
            };
            if ok {
                Ok(())
            } else {
                let what = match (case.expect, mode) {
                    (Expect::Pass, _) => format!("`{owner}` not to match"),
                    (Expect::Log, _) => format!("`{owner}` to log"),
                    (e, Mode::Shadow) => format!("`{owner}` to {} in shadow mode", e.as_str()),
                    (e, Mode::Enforce) => format!("{} by `{owner}`", e.as_str()),
                };
                Err(format!("expected {what}, got {got}"))
            }
        }
        None => {
            let kind_ok = case.expect == Expect::Log || action_kind(&v.action) == case.expect;
            let rule_ok = match (&case.rule, case.expect) {
                (None, _) => true,
                (Some(r), Expect::Log) => v
                    .matches
                    .iter()
                    .any(|m| &m.rule_id == r && m.action == RuleAction::Log),
                (Some(r), _) => v.action.rule_id() == Some(r.as_ref()),
            };
            if kind_ok && rule_ok {
                Ok(())
            } else {
                let by = case
                    .rule
                    .as_ref()
                    .map(|r| format!(" by `{r}`"))
                    .unwrap_or_default();
                Err(format!("expected {}{by}, got {got}", case.expect.as_str()))
            }
        }
    }
}

pub(super) fn run(rules: &CustomRules, now_ms: u64) -> TestReport {
    let mut report = TestReport::default();
    for case in &rules.tests {
        let limiter = RateLimiter::new(1024);
        let mut last = CustomVerdict::default();
        for i in 0..case.repeat {
            let at = now_ms.saturating_add(u64::from(i).saturating_mul(case.interval_ms));
            last = rules.evaluate(&case.request, at, &limiter);
        }
        let result = check(rules, case, &last);
        report.outcomes.push(TestOutcome {
            location: case.location.clone(),
            rule: case.owner.as_ref().map(|r| r.to_string()),
            name: case.name.clone(),
            passed: result.is_ok(),
            detail: result.err().unwrap_or_else(|| describe(&last)),
        });
    }
    report
}
