//! One self-contained HTML file per run (`--html PATH`): a timeline with a lane per
//! parallel slot (scenarios, their steps, retries), outcome colours, durations, skip
//! reasons, and for each failure its message and the diagnostics fixtures attached (last
//! observed state, events, logs). No external assets: it opens offline from a CI artifact.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::event::{Outcome, RunSummary, ScenarioReport};

use super::Reporter;

/// Writes the HTML report at the end of the run.
#[derive(Debug)]
pub struct HtmlReporter {
    path: PathBuf,
}

impl HtmlReporter {
    /// A reporter writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Reporter for HtmlReporter {
    fn finish(&mut self, summary: &RunSummary) -> Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                what: "HTML report",
                path: self.path.clone(),
                source,
            })?;
        }
        std::fs::write(&self.path, render(summary)).map_err(|source| Error::Write {
            what: "HTML report",
            path: self.path.clone(),
            source,
        })
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped { .. } => "skipped",
    }
}

fn pct(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        0.0
    } else {
        (part.as_secs_f64() / whole.as_secs_f64() * 100.0).clamp(0.0, 100.0)
    }
}

/// An HTML id for a scenario report.
fn anchor(index: usize) -> String {
    format!("s{index}")
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#57606a} .counts span{margin-right:12px;font-weight:600}
.passed{--c:#2da44e} .failed{--c:#cf222e} .skipped{--c:#8c959f}
.counts .passed,.counts .failed,.counts .skipped{color:var(--c)}
.timeline{position:relative;border:1px solid #d0d7de;border-radius:6px;padding:8px 8px 4px 64px}
.lane{position:relative;height:30px;margin-bottom:4px;border-bottom:1px dashed #eaeef2}
.lane .slot{position:absolute;left:-56px;top:6px;color:#57606a;font-size:12px}
.bar{position:absolute;top:2px;height:24px;min-width:3px;border-radius:4px;background:var(--c);opacity:.85;overflow:hidden;color:#fff;font-size:11px;white-space:nowrap;text-decoration:none}
.bar span{padding:0 4px;line-height:24px}
.step{position:absolute;bottom:0;height:5px;background:rgba(255,255,255,.7);border-right:1px solid rgba(0,0,0,.3)}
.step.error{background:#ffd33d}
table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
td.outcome{color:var(--c);font-weight:600}
.failure{border:1px solid #cf222e;border-left-width:6px;border-radius:6px;padding:8px 12px;margin:12px 0}
.failure h3{margin:0 0 6px;font-size:15px}
pre{background:#f6f8fa;padding:8px;border-radius:4px;overflow:auto;max-height:400px;white-space:pre-wrap;margin:4px 0}
details{margin:4px 0} summary{cursor:pointer;color:#0969da}
"#;

/// The report's HTML.
///
/// ```
/// use hami_e2e_core::{RunConfig, Runner, scenario, bail};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut config = RunConfig::default();
/// config.human_output = false;
/// let conclusion = Runner::new()
///     .scenario(scenario("a/passes").run(|_| async { Ok(()) }))
///     .scenario(scenario("b/fails").run(|_| async { bail!("no <GPU> left") }))
///     .run(config)
///     .await?;
/// let html = hami_e2e_core::report::render_html(conclusion.summary().unwrap());
/// assert!(html.contains("b::fails") && html.contains("no &lt;GPU&gt; left"));
/// # Ok::<(), hami_e2e_core::Error>(()) }).unwrap();
/// ```
pub fn render(summary: &RunSummary) -> String {
    let total = summary
        .scenarios
        .iter()
        .map(|s| s.start + s.duration)
        .max()
        .unwrap_or_default()
        .max(summary.duration);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>hami-e2e run {id}</title><style>{STYLE}</style></head><body>",
        id = esc(&summary.run_id)
    );
    let _ = write!(
        html,
        "<h1>hami-e2e run {}</h1><div class=\"meta\">{} · {}",
        esc(&summary.run_id),
        format_duration(summary.duration),
        if summary.cancelled {
            "cancelled"
        } else {
            "completed"
        }
    );
    for (k, v) in &summary.facts {
        let _ = write!(html, " · {}: {}", esc(k), esc(v));
    }
    let _ = write!(
        html,
        "</div><p class=\"counts\"><span class=\"passed\">{} passed</span><span class=\"failed\">{} failed</span><span class=\"skipped\">{} skipped</span>{} filtered out</p>",
        summary.passed(),
        summary.failed(),
        summary.skipped(),
        summary.filtered_out
    );

    // Timeline: one lane per slot; scenarios that never ran (skipped) are not on it.
    let lanes = summary
        .scenarios
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Skipped { .. }))
        .map(|s| s.slot + 1)
        .max()
        .unwrap_or(0);
    let _ = write!(
        html,
        "<h2>Timeline ({} lanes, {} in all)</h2><div class=\"timeline\" id=\"timeline\">",
        lanes,
        format_duration(total)
    );
    for lane in 0..lanes {
        let _ = write!(
            html,
            "<div class=\"lane\"><span class=\"slot\">slot {lane}</span>"
        );
        for (i, s) in summary.scenarios.iter().enumerate() {
            if s.slot != lane || matches!(s.outcome, Outcome::Skipped { .. }) {
                continue;
            }
            let mut title = format!(
                "{} — {} in {}{}",
                s.display_name(summary.repeated),
                class(&s.outcome),
                format_duration(s.duration),
                if s.attempts > 1 {
                    format!(", {} attempts", s.attempts)
                } else {
                    String::new()
                }
            );
            if !s.devices.is_empty() {
                let _ = write!(
                    title,
                    "; devices {} after waiting {}",
                    s.devices.join(", "),
                    format_duration(s.queued)
                );
            }
            let _ = write!(
                html,
                "<a class=\"bar {cls}\" href=\"#{a}\" title=\"{t}\" style=\"left:{l:.3}%;width:{w:.3}%\"><span>{name}</span>",
                cls = class(&s.outcome),
                a = anchor(i),
                t = esc(&title),
                l = pct(s.start, total),
                w = pct(s.duration, total),
                name = esc(&s.display_name(summary.repeated))
            );
            for step in &s.steps {
                let d = step
                    .duration
                    .unwrap_or(s.duration.saturating_sub(step.start));
                let _ = write!(
                    html,
                    "<div class=\"step{}\" title=\"{}\" style=\"left:{:.3}%;width:{:.3}%\"></div>",
                    if step.error.is_some() { " error" } else { "" },
                    esc(&format!("step {}: {}", step.name, format_duration(d))),
                    pct(step.start, s.duration),
                    pct(d, s.duration)
                );
            }
            html.push_str("</a>");
        }
        html.push_str("</div>");
    }
    html.push_str("</div>");

    // Failures first, with what their fixtures collected.
    let failed: Vec<(usize, &ScenarioReport)> = summary
        .scenarios
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.outcome, Outcome::Failed { .. }))
        .collect();
    if !failed.is_empty() {
        html.push_str("<h2>Failures</h2>");
    }
    for (i, s) in &failed {
        let Outcome::Failed { reason, message } = &s.outcome else {
            continue;
        };
        let _ = write!(
            html,
            "<div class=\"failure\" id=\"{a}\"><h3>{name}</h3><div class=\"meta\">{reason} after {d}{att}</div><pre class=\"message\">{m}</pre>",
            a = anchor(*i),
            name = esc(&s.display_name(summary.repeated)),
            reason = reason.as_str(),
            d = format_duration(s.duration),
            att = if s.attempts > 1 {
                format!(", {} attempts", s.attempts)
            } else {
                String::new()
            },
            m = esc(message)
        );
        for step in &s.steps {
            if let Some(e) = &step.error {
                let _ = write!(
                    html,
                    "<div>step <b>{}</b> failed: {}</div>",
                    esc(&step.name),
                    esc(e)
                );
            }
        }
        for e in &s.teardown_errors {
            let _ = write!(html, "<div>teardown: {}</div>", esc(e));
        }
        for a in &s.attachments {
            let _ = write!(
                html,
                "<details open><summary>{}</summary><pre>{}</pre></details>",
                esc(&a.title),
                esc(&a.text)
            );
        }
        if let Some(dir) = &s.artifacts {
            let _ = write!(
                html,
                "<div class=\"meta\">artifacts: {}</div>",
                esc(&dir.display().to_string())
            );
        }
        html.push_str("</div>");
    }

    // Every scenario.
    html.push_str("<h2>Scenarios</h2><table><tr><th>scenario</th><th>outcome</th><th>duration</th><th>labels</th><th>devices</th><th>steps / reason</th></tr>");
    for (i, s) in summary.scenarios.iter().enumerate() {
        let detail = match &s.outcome {
            Outcome::Skipped { reason } => esc(reason),
            _ => s
                .steps
                .iter()
                .map(|st| {
                    format!(
                        "{} ({})",
                        esc(&st.name),
                        st.duration
                            .map_or("unfinished".to_string(), format_duration)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let id = if matches!(s.outcome, Outcome::Failed { .. }) {
            String::new()
        } else {
            format!(" id=\"{}\"", anchor(i))
        };
        let _ = write!(
            html,
            "<tr class=\"{cls}\"{id}><td>{name}</td><td class=\"outcome\">{cls}</td><td>{d}</td><td>{l}</td><td>{dev}</td><td>{detail}</td></tr>",
            cls = class(&s.outcome),
            dev = if s.devices.is_empty() {
                String::new()
            } else {
                esc(&format!(
                    "{} (waited {})",
                    s.devices.join(", "),
                    format_duration(s.queued)
                ))
            },
            name = esc(&s.display_name(summary.repeated)),
            d = format_duration(s.duration),
            l = esc(&s.labels.join(", "))
        );
    }
    html.push_str("</table>");
    for e in &summary.run_errors {
        let _ = write!(
            html,
            "<div class=\"failure\"><h3>run error</h3><pre>{}</pre></div>",
            esc(e)
        );
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn positions_are_percentages_of_the_run() {
        assert_eq!(pct(Duration::from_secs(1), Duration::from_secs(4)), 25.0);
        assert_eq!(pct(Duration::from_secs(9), Duration::from_secs(4)), 100.0);
        assert_eq!(pct(Duration::from_secs(1), Duration::ZERO), 0.0);
    }
}
