//! The access report for compliance officers (`phigate audit report`): who accessed one
//! patient's data (found by the keyed hash of a value that identifies them) or what one
//! user did, when, from where and with what outcome, as a text table and as one
//! self-contained HTML page with a timeline. Pure: records in, text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::record::{Decision, Kind, Record};

/// Whose accesses a report lists.
#[derive(Debug, Clone)]
pub enum Subject {
    /// statements that used this value (its keyed hash), shown as `label`
    Patient {
        /// the value's keyed hash
        hash: String,
        /// how the report names the patient (never the value itself)
        label: String,
    },
    /// everything this user did or tried
    User(String),
}

/// An access report: the records it lists, oldest first.
#[derive(Debug)]
pub struct AccessReport {
    /// whose accesses
    pub subject: Subject,
    /// the period, as given (`None`: open)
    pub period: (Option<String>, Option<String>),
    /// the accesses: statements with their outcomes, and for a user, logins and refused
    /// connections
    pub rows: Vec<Record>,
}

impl AccessReport {
    /// The report over `records` (statements with their outcomes folded in, see
    /// [`super::with_outcomes`]).
    pub fn new(
        subject: Subject,
        period: (Option<String>, Option<String>),
        records: Vec<Record>,
    ) -> Self {
        let in_period = |r: &Record| {
            period
                .0
                .as_ref()
                .is_none_or(|s| r.ts.as_str() >= s.as_str())
                && period.1.as_ref().is_none_or(|u| r.ts.as_str() < u.as_str())
        };
        let concerns = |r: &Record| match &subject {
            Subject::Patient { hash, .. } => {
                r.kind == Some(Kind::Statement) && r.values.contains(hash)
            }
            Subject::User(u) => {
                r.user.as_deref() == Some(u.as_str())
                    && matches!(
                        r.kind,
                        Some(
                            Kind::Statement
                                | Kind::BreakGlass
                                | Kind::AuthFailure
                                | Kind::ConnectionRefused
                                | Kind::SessionStart
                        )
                    )
            }
        };
        let rows = records
            .into_iter()
            .filter(|r| in_period(r) && concerns(r))
            .collect();
        Self {
            subject,
            period,
            rows,
        }
    }

    fn title(&self) -> String {
        let who = match &self.subject {
            Subject::Patient { label, .. } => format!("Accesses to patient {label}"),
            Subject::User(u) => format!("Activity of user {u}"),
        };
        let from = self.period.0.as_deref().unwrap_or("the start of the log");
        let to = self.period.1.as_deref().unwrap_or("now");
        format!("{who}, from {from} to {to}")
    }

    /// (allowed, refused or failed) counts.
    fn counts(&self) -> (usize, usize) {
        let allowed = self.rows.iter().filter(|r| !r.refused_or_failed()).count();
        (allowed, self.rows.len() - allowed)
    }

    /// The report as a text table.
    pub fn text(&self) -> String {
        let (allowed, refused) = self.counts();
        let mut out = format!(
            "{}\n{} accesses: {allowed} allowed, {refused} refused or failed\n\n",
            self.title(),
            self.rows.len()
        );
        let _ = writeln!(
            out,
            "{:<27} {:<14} {:<14} {:<16} {:<28} {:>6}  what",
            "time", "user", "role", "from", "outcome", "rows"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<27} {:<14} {:<14} {:<16} {:<28} {:>6}  {}",
                r.ts,
                r.user.as_deref().unwrap_or("-"),
                r.role.as_deref().unwrap_or("-"),
                r.client_addr.as_deref().unwrap_or("-"),
                outcome(r),
                r.rows.map(|n| n.to_string()).unwrap_or_default(),
                shortened(&what(r), 100)
            );
        }
        out
    }

    /// The report as one HTML page: no scripts, no external resources.
    pub fn html(&self) -> String {
        let (allowed, refused) = self.counts();
        let mut rows = String::new();
        for r in &self.rows {
            let class = if r.refused_or_failed() {
                "refused"
            } else {
                "allowed"
            };
            let _ = writeln!(
                rows,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&r.ts),
                esc(r.user.as_deref().unwrap_or("-")),
                esc(r.role.as_deref().unwrap_or("-")),
                esc(r.client_addr.as_deref().unwrap_or("-")),
                esc(&outcome(r)),
                r.rows.map(|n| n.to_string()).unwrap_or_default(),
                esc(&r.phi_columns.join(", ")),
                esc(&shortened(&what(r), 400)),
            );
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title}</title><style>{STYLE}</style></head><body>\n\
             <h1>{title}</h1>\n<p id=\"summary\">{n} accesses: <b>{allowed}</b> allowed, \
             <b>{refused}</b> refused or failed. Generated by phigate from its signed audit \
             log; values are never in the log (a patient is found by the keyed hash of a \
             value that identifies them).</p>\n<h2>Timeline</h2>\n{timeline}\n\
             <h2>Accesses</h2>\n<table id=\"accesses\"><thead><tr><th>time (UTC)</th>\
             <th>user</th><th>role</th><th>from</th><th>outcome</th><th>rows</th>\
             <th>PHI columns</th><th>statement</th></tr></thead><tbody>\n{rows}</tbody>\
             </table>\n</body></html>\n",
            title = esc(&self.title()),
            n = self.rows.len(),
            timeline = self.timeline(),
        )
    }

    /// Accesses per day as an SVG bar chart: allowed in green, refused or failed in red
    /// stacked on top.
    fn timeline(&self) -> String {
        let mut days: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &self.rows {
            let day = days.entry(r.ts.get(..10).unwrap_or("")).or_default();
            match r.refused_or_failed() {
                false => day.0 += 1,
                true => day.1 += 1,
            }
        }
        let max = days.values().map(|(a, b)| a + b).max().unwrap_or(1).max(1);
        let (bar, height) = (28usize, 120usize);
        let width = (days.len() * (bar + 8)).max(200) + 40;
        let mut svg = format!(
            "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"accesses per day\">",
            height + 40
        );
        for (i, (day, (ok, bad))) in days.iter().enumerate() {
            let x = 20 + i * (bar + 8);
            let h_ok = ok * height / max;
            let h_bad = bad * height / max;
            let _ = write!(
                svg,
                "<g><title>{day}: {ok} allowed, {bad} refused or failed</title>\
                 <rect class=\"allowed\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h_ok}\"/>\
                 <rect class=\"refused\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h_bad}\"/>\
                 <text x=\"{x}\" y=\"{}\">{}</text></g>",
                10 + height - h_ok,
                10 + height - h_ok - h_bad,
                height + 30,
                esc(day.get(5..).unwrap_or(day)),
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;\
text-align:left;vertical-align:top}tr.refused td{background:#fde8e8}\
rect.allowed{fill:#3a8f4b}rect.refused{fill:#c0392b}svg text{font-size:10px}";

fn outcome(r: &Record) -> String {
    let decision = match r.kind {
        Some(Kind::AuthFailure) => "login failed",
        Some(Kind::ConnectionRefused) => "connection refused",
        Some(Kind::SessionStart) => "logged in",
        Some(Kind::BreakGlass) => "emergency declared",
        _ => match r.decision {
            Some(Decision::Allowed) => "allowed",
            Some(Decision::Denied) => "denied by phigate",
            Some(Decision::DeniedByDatabase) => "denied by the database",
            Some(Decision::Capped) => "stopped by the row cap",
            Some(Decision::Error) => "error",
            None => "",
        },
    };
    match &r.sqlstate {
        Some(s) => format!("{decision} ({s})"),
        None => decision.to_owned(),
    }
}

/// At most `n` characters of `s`, with `…` when it was cut.
fn shortened(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn what(r: &Record) -> String {
    let mut w = r
        .statement
        .clone()
        .or_else(|| r.detail.clone())
        .or_else(|| r.break_glass.clone())
        .unwrap_or_default();
    if let Some(reason) = r
        .break_glass
        .as_ref()
        .filter(|_| r.kind == Some(Kind::Statement))
    {
        let _ = write!(w, " [emergency: {reason}]");
    }
    w
}

/// HTML escaping of text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn access(ts: &str, user: &str, decision: Decision, values: &[&str]) -> Record {
        Record {
            ts: ts.into(),
            user: Some(user.into()),
            role: Some("billing".into()),
            client_addr: Some("10.0.0.9".into()),
            kind: Some(Kind::Statement),
            statement: Some("SELECT full_name FROM patients WHERE ssn = ? AND '<b>' = ?".into()),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            decision: Some(decision),
            phi_columns: vec!["public.patients.ssn".into()],
            rows: Some(1),
            ..Record::default()
        }
    }

    fn report(subject: Subject) -> AccessReport {
        let records = vec![
            access("2026-11-02T10:00:00Z", "bill", Decision::Allowed, &["h1"]),
            access(
                "2026-11-02T11:00:00Z",
                "eve",
                Decision::Denied,
                &["h1", "h2"],
            ),
            access("2026-11-05T09:00:00Z", "bill", Decision::Allowed, &["h2"]),
            access("2026-12-05T09:00:00Z", "bill", Decision::Allowed, &["h1"]),
        ];
        let period = (Some("2026-11-01".into()), Some("2026-12-01".into()));
        AccessReport::new(subject, period, records)
    }

    #[test]
    fn a_patient_report_lists_who_used_their_value_in_the_period() {
        let r = report(Subject::Patient {
            hash: "h1".into(),
            label: "SSN ***-**-1111".into(),
        });
        let users: Vec<_> = r
            .rows
            .iter()
            .map(|r| r.user.as_deref().unwrap().to_owned())
            .collect();
        assert_eq!(users, ["bill", "eve"]);
        let text = r.text();
        assert!(
            text.contains("2 accesses: 1 allowed, 1 refused or failed"),
            "{text}"
        );
        assert!(text.contains("denied by phigate"), "{text}");
        let html = r.html();
        assert!(html.contains("<svg id=\"timeline\""), "{html}");
        assert!(
            html.contains("11-02: 1 allowed, 1 refused or failed"),
            "{html}"
        );
        assert!(
            html.contains("&#39;&lt;b&gt;&#39;") && !html.contains("'<b>'"),
            "escaped"
        );
        // self-contained: no scripts, nothing fetched
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn a_user_report_lists_everything_they_did() {
        let r = report(Subject::User("bill".into()));
        assert_eq!(r.rows.len(), 2, "in the period");
        assert!(
            r.text()
                .starts_with("Activity of user bill, from 2026-11-01 to 2026-12-01")
        );
    }
}
