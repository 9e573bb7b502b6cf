//! Records as RFC 5424 syslog messages, framed for TCP by octet counting (RFC 6587). Pure:
//! the sink that sends them is `server::syslog`.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME phigate - MSGID [phigate@32473 ...] MSG`: facility
//! authpriv (10), severity warning for refusals, failed logins and errors, notice for
//! break-glass, informational otherwise; HOSTNAME is the instance, MSGID the record's kind;
//! the structured data repeats the fields a collector filters on; MSG is the record as
//! stored (JSON, MAC included) or its OCSF event.

use super::record::{Kind, Record};

/// The structured data ID: phigate has no private enterprise number, so it uses the one
/// RFC 5612 reserves for documentation.
pub const SD_ID: &str = "phigate@32473";

/// What a message carries after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// the stored line
    Stored,
    /// the OCSF event (checkpoints are then not sent)
    Ocsf,
}

/// `SD-PARAM` value escaping: `"`, `\` and `]`.
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field (HOSTNAME, MSGID): printable US-ASCII without spaces, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

fn severity(r: &Record) -> u8 {
    match (r.refused_or_failed(), r.kind) {
        (true, _) => 4,
        (false, Some(Kind::BreakGlass)) => 5,
        _ => 6,
    }
}

/// One record as a framed RFC 5424 message (`<length> <message>`); `None` when `body`
/// leaves it out (a checkpoint as OCSF).
pub fn message(record: &Record, line: &str, body: Body) -> Option<Vec<u8>> {
    let msg = match body {
        Body::Stored => line.to_owned(),
        Body::Ocsf => super::ocsf(record)?.to_string(),
    };
    let kind = record.kind.map(Kind::name).unwrap_or_default();
    let mut sd = format!("[{SD_ID} seq=\"{}\"", record.seq);
    let fields = [
        ("kind", Some(kind)),
        ("user", record.user.as_deref()),
        ("role", record.role.as_deref()),
        ("client_addr", record.client_addr.as_deref()),
        ("sqlstate", record.sqlstate.as_deref()),
    ];
    for (name, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            sd.push_str(&format!(" {name}=\"{}\"", sd_escape(v)));
        }
    }
    if let Some(d) = record.decision {
        sd.push_str(&format!(" decision=\"{}\"", d.name()));
    }
    sd.push(']');
    let text = format!(
        "<{}>1 {} {} phigate - {} {sd} {msg}",
        10 * 8 + severity(record),
        header_field(&record.ts, 64),
        header_field(&record.instance, 255),
        header_field(kind, 32),
    );
    Some(format!("{} {text}", text.len()).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;

    #[test]
    fn a_refusal_is_a_framed_warning_with_escaped_structured_data() {
        let r = Record {
            seq: 9,
            ts: "2026-12-02T10:00:00.000001Z".into(),
            instance: "ph 1".into(),
            kind: Some(Kind::Statement),
            user: Some("eve\"]".into()),
            decision: Some(Decision::Denied),
            sqlstate: Some("42501".into()),
            ..Record::default()
        };
        let framed = String::from_utf8(message(&r, "{\"seq\":9}", Body::Stored).unwrap()).unwrap();
        let (len, text) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), text.len());
        assert!(
            text.starts_with("<84>1 2026-12-02T10:00:00.000001Z ph1 phigate - statement "),
            "{text}"
        );
        assert!(
            text.contains("[phigate@32473 seq=\"9\" kind=\"statement\" user=\"eve\\\"\\]\" sqlstate=\"42501\" decision=\"denied\"]"),
            "{text}"
        );
        assert!(text.ends_with("] {\"seq\":9}"), "{text}");
        let mut checkpoint = r.clone();
        checkpoint.kind = Some(Kind::Checkpoint);
        assert!(message(&checkpoint, "{}", Body::Ocsf).is_none());
        assert!(message(&checkpoint, "{}", Body::Stored).is_some());
    }
}
