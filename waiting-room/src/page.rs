//! The waiting page and its JSON twin.
//!
//! [`WaitingStatus::new`] turns a [`PollOutcome`] into what a shopper sees; the edge answers
//! `Accept: application/json` with [`WaitingStatus::to_json`] and everything else with
//! [`render_waiting_page`]. The page (`assets/waiting.html`, compiled in) polls the same URL for
//! JSON at the configured interval with JavaScript, and falls back to a `<meta refresh>` at
//! the same interval inside `<noscript>` (so the two never double the polls). Every
//! interpolated value is HTML-escaped; the script only ever writes `textContent`.

use serde::Serialize;

use crate::config::RoomConfig;
use crate::room::PollOutcome;
use crate::timestamp::format_rfc3339_ms;

const TEMPLATE: &str = include_str!("../assets/waiting.html");

/// What the waiting page shows, also served as JSON (snake_case keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingStatus {
    /// Room id.
    pub room: String,
    /// `not-open`, `pre-queue`, `waiting`, `admitted`, `expired` or `closed`.
    pub state: &'static str,
    /// Place in line (1 = next), when waiting.
    pub position: Option<u64>,
    /// Estimated wait in seconds, when waiting.
    pub estimated_wait_secs: Option<u64>,
    /// Progress since joining, 0..=1000.
    pub progress_permille: u16,
    /// How often to poll, seconds.
    pub poll_interval_secs: u64,
    /// Sale start (RFC 3339), before it.
    pub sale_starts_at: Option<String>,
    /// Session end (RFC 3339), once admitted.
    pub session_expires_at: Option<String>,
    /// One-sentence summary.
    pub headline: String,
    /// Place in line as text.
    pub position_text: String,
    /// Wait as text.
    pub wait_text: String,
}

fn wait_text(secs: u64) -> String {
    match secs {
        0..=59 => "less than a minute".to_string(),
        60..=119 => "about a minute".to_string(),
        120..=5399 => format!("about {} minutes", secs.div_ceil(60)),
        _ => format!("about {} hours", secs.div_ceil(3600)),
    }
}

impl WaitingStatus {
    /// The status for a poll's outcome.
    pub fn new(config: &RoomConfig, outcome: &PollOutcome) -> WaitingStatus {
        let mut s = WaitingStatus {
            room: config.id.clone(),
            state: "waiting",
            position: None,
            estimated_wait_secs: None,
            progress_permille: 0,
            poll_interval_secs: config.poll_interval_ms / 1000,
            sale_starts_at: None,
            session_expires_at: None,
            headline: String::new(),
            position_text: "—".to_string(),
            wait_text: "—".to_string(),
        };
        match *outcome {
            PollOutcome::NotOpen { opens_at } => {
                s.state = "not-open";
                s.sale_starts_at = Some(format_rfc3339_ms(config.sale_starts_ms));
                s.headline = format!("The waiting room opens at {} (UTC).", short_time(opens_at));
            }
            PollOutcome::PreQueue {
                sale_starts_at,
                queued,
            } => {
                s.state = "pre-queue";
                s.sale_starts_at = Some(format_rfc3339_ms(sale_starts_at));
                s.headline = format!(
                    "You're in. The sale starts at {} (UTC); everyone who is here before then \
                     gets a place drawn at random.",
                    short_time(sale_starts_at)
                );
                s.position_text = format!("drawn at the start ({queued} here so far)");
                s.wait_text = "until the sale starts".to_string();
            }
            PollOutcome::Waiting {
                position,
                estimated_wait_secs,
                progress_permille,
            } => {
                s.position = Some(position);
                s.estimated_wait_secs = Some(estimated_wait_secs);
                s.progress_permille = progress_permille.min(1000);
                s.headline = match position {
                    1 => "You're next.".to_string(),
                    2 => "There is 1 shopper ahead of you.".to_string(),
                    _ => format!("There are {} shoppers ahead of you.", position - 1),
                };
                s.position_text = position.to_string();
                s.wait_text = wait_text(estimated_wait_secs);
            }
            PollOutcome::Admitted { session_expires_at } => {
                s.state = "admitted";
                s.progress_permille = 1000;
                s.session_expires_at = Some(format_rfc3339_ms(session_expires_at));
                s.headline = "It's your turn. Taking you to the sale…".to_string();
                s.wait_text = "none".to_string();
            }
            PollOutcome::Expired => {
                s.state = "expired";
                s.headline =
                    "Your turn came while this page was closed, and passed to the next shopper."
                        .to_string();
            }
            PollOutcome::Closed => {
                s.state = "closed";
                s.headline = "The sale is over. Thank you for waiting.".to_string();
            }
        }
        s
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

fn short_time(ms: u64) -> String {
    // "2026-11-27T09:00:00.000Z" -> "2026-11-27 09:00"
    let t = format_rfc3339_ms(ms);
    format!("{} {}", &t[..10], &t[11..16])
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The waiting page for this status.
pub fn render_waiting_page(config: &RoomConfig, status: &WaitingStatus) -> String {
    let refresh = (config.poll_interval_ms / 1000).max(1);
    let vars: [(&str, String); 11] = [
        ("{{refresh_secs}}", refresh.to_string()),
        ("{{poll_ms}}", config.poll_interval_ms.to_string()),
        (
            "{{abandon_secs}}",
            (config.abandon_timeout_ms / 1000).to_string(),
        ),
        ("{{title}}", escape_html(&config.page_title)),
        ("{{message}}", escape_html(&config.page_message)),
        ("{{state}}", escape_html(status.state)),
        ("{{headline}}", escape_html(&status.headline)),
        ("{{position}}", escape_html(&status.position_text)),
        ("{{wait}}", escape_html(&status.wait_text)),
        (
            "{{progress_pct}}",
            (u32::from(status.progress_permille.min(1000)) / 10).to_string(),
        ),
        ("{{room}}", escape_html(&status.room)),
    ];
    // One pass over the template, so an interpolated value is never scanned for
    // placeholders again.
    let mut out = String::with_capacity(TEMPLATE.len() + 256);
    let mut rest = TEMPLATE;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match vars.iter().find(|(k, _)| tail.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::minimal;

    fn config(extra: &str) -> RoomConfig {
        RoomConfig::from_toml("t.toml", &(minimal() + extra)).unwrap()
    }

    #[test]
    fn waiting_page_shows_position_wait_and_progress() {
        let c = config("");
        let st = WaitingStatus::new(
            &c,
            &PollOutcome::Waiting {
                position: 1234,
                estimated_wait_secs: 600,
                progress_permille: 375,
            },
        );
        let html = render_waiting_page(&c, &st);
        assert!(html.contains(r#"<dd id="position">1234</dd>"#));
        assert!(html.contains("about 10 minutes"));
        assert!(html.contains("width: 37%"));
        assert!(html.contains(r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#));
        assert!(html.contains(r#"data-poll-ms="5000""#));
        assert!(html.contains("There are 1233 shoppers ahead of you."));
        assert!(!html.contains("{{"), "unfilled placeholder");
    }

    #[test]
    fn headline_counts_the_shoppers_ahead_in_good_english() {
        let c = config("");
        let headline = |position| {
            WaitingStatus::new(
                &c,
                &PollOutcome::Waiting {
                    position,
                    estimated_wait_secs: 5,
                    progress_permille: 0,
                },
            )
            .headline
        };
        assert_eq!(headline(1), "You're next.");
        assert_eq!(headline(2), "There is 1 shopper ahead of you.");
        assert_eq!(headline(3), "There are 2 shoppers ahead of you.");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let c = config("[page]\ntitle = \"<script>alert('x')</script> & {{headline}}\"\n");
        let st = WaitingStatus::new(&c, &PollOutcome::Closed);
        let html = render_waiting_page(&c, &st);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; {{headline}}"));
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the page's own script"
        );
    }

    #[test]
    fn json_has_the_same_data() {
        let c = config("");
        let st = WaitingStatus::new(
            &c,
            &PollOutcome::Waiting {
                position: 3,
                estimated_wait_secs: 30,
                progress_permille: 900,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&st.to_json()).unwrap();
        assert_eq!(v["state"], "waiting");
        assert_eq!(v["position"], 3);
        assert_eq!(v["estimated_wait_secs"], 30);
        assert_eq!(v["progress_permille"], 900);
        assert_eq!(v["poll_interval_secs"], 5);
        assert_eq!(v["wait_text"], "less than a minute");
        let pre = WaitingStatus::new(
            &c,
            &PollOutcome::PreQueue {
                sale_starts_at: c.sale_starts_ms,
                queued: 10,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&pre.to_json()).unwrap();
        assert_eq!(v["state"], "pre-queue");
        assert_eq!(v["sale_starts_at"], "2026-11-27T09:00:00.000Z");
        for (o, state) in [
            (PollOutcome::Expired, "expired"),
            (PollOutcome::Closed, "closed"),
            (
                PollOutcome::Admitted {
                    session_expires_at: c.sale_starts_ms,
                },
                "admitted",
            ),
            (PollOutcome::NotOpen { opens_at: 0 }, "not-open"),
        ] {
            assert_eq!(WaitingStatus::new(&c, &o).state, state);
        }
    }
}
