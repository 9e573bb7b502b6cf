//! A record's JSON line, written by hand: the bytes serde_json writes for a [`Record`]
//! (a test holds them equal), without its per-field dispatch and allocations. It runs
//! twice for every statement.

use std::fmt::Write as _;

use super::record::Record;
use crate::protocol::value::push_hex;

/// Writes `record` as an open JSON object (`{"ts":...` up to its last field, without the
/// closing brace and without the chain's `seq`, `prev` and `mac`), with `ts` and
/// `instance` as given.
pub(super) fn write_open(record: &Record, ts: &str, instance: &str, out: &mut String) {
    let r = record;
    let mut o = Object { out, first: true };
    o.string("ts", ts);
    o.string("instance", instance);
    o.number("session", r.session);
    o.opt_string("user", r.user.as_deref());
    o.opt_string("role", r.role.as_deref());
    o.opt_string("service", r.service.as_deref());
    o.opt_string("client_addr", r.client_addr.as_deref());
    o.opt_string("application_name", r.application_name.as_deref());
    if let Some(tls) = r.tls {
        o.raw("tls", if tls { "true" } else { "false" });
    }
    o.raw("kind", r.kind.map_or("null", |k| k.quoted()));
    o.opt_string("statement", r.statement.as_deref());
    o.list("values", &r.values);
    o.list("tables", &r.tables);
    o.list("phi_columns", &r.phi_columns);
    if let Some(d) = r.decision {
        o.raw("decision", d.quoted());
    }
    o.list("policies_applied", &r.policies_applied);
    o.number("rows", r.rows);
    o.opt_string("sqlstate", r.sqlstate.as_deref());
    o.number("duration_us", r.duration_us);
    o.opt_string("break_glass", r.break_glass.as_deref());
    o.number("begin", r.begin);
    o.opt_string("detail", r.detail.as_deref());
    if let Some([a, b, c]) = r.covers {
        o.key("covers");
        let _ = write!(o.out, "[{a},{b},{c}]");
    }
    o.opt_string("digest", r.digest.as_deref());
    o.opt_string("signature", r.signature.as_deref());
}

/// An object being written.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl Object<'_> {
    fn key(&mut self, name: &str) {
        self.out.push_str(if self.first { "{\"" } else { ",\"" });
        self.first = false;
        self.out.push_str(name);
        self.out.push_str("\":");
    }

    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.out.push_str(json);
    }

    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        quote(value, self.out);
    }

    fn opt_string(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.string(name, v);
        }
    }

    fn number(&mut self, name: &str, value: Option<u64>) {
        if let Some(n) = value {
            self.key(name);
            self.out.push_str(itoa::Buffer::new().format(n));
        }
    }

    fn list(&mut self, name: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(name);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            quote(v, self.out);
        }
        self.out.push(']');
    }
}

/// `s` as a JSON string, escaped as serde_json escapes: `"` and `\`, the short forms of
/// five control characters and `\u00XX` for the other control characters. Runs of bytes
/// that need nothing are copied whole.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    // most strings need nothing: one pass without early exit (which vectorises)
    if !s
        .as_bytes()
        .iter()
        .fold(false, |any, &b| any | needs_escape(b))
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both ends are character boundaries
        out.push_str(s.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.push_str("\\u00");
            push_hex(&[b], out);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, Kind};

    fn written(r: &Record) -> String {
        let mut out = String::new();
        write_open(r, &r.ts, &r.instance, &mut out);
        out.push('}');
        out
    }

    fn nasty() -> String {
        let mut s: String = (0u8..0x80).map(char::from).collect();
        s.push_str("é 漢字 \u{2028} 🦀 \\\"");
        s
    }

    #[test]
    fn writes_what_serde_writes() {
        let full = Record {
            ts: "2026-12-02T15:00:00.123456Z".into(),
            instance: nasty(),
            session: Some(u64::MAX),
            user: Some("dr.\"smith\"".into()),
            role: Some("clinician".into()),
            service: Some("ehr\napp".into()),
            client_addr: Some("10.1.2.3".into()),
            application_name: Some(nasty().into()),
            tls: Some(false),
            kind: Some(Kind::Statement),
            statement: Some("SELECT $1 -- \u{1f}".into()),
            values: vec!["ab".into(), nasty()],
            tables: vec!["public.patients".into()],
            phi_columns: vec!["public.patients.ssn".into(), String::new()],
            decision: Some(Decision::DeniedByDatabase),
            policies_applied: vec!["p".into()],
            rows: Some(0),
            sqlstate: Some("42501".into()),
            duration_us: Some(17),
            break_glass: Some("code blue".into()),
            begin: Some(3),
            detail: Some(nasty()),
            covers: Some([1, 2, 3]),
            digest: Some("00ff".into()),
            signature: Some("sig".into()),
            seq: 0,
            prev: String::new(),
        };
        let cases = [
            full,
            Record::default(),
            Record {
                tls: Some(true),
                kind: Some(Kind::StatementEnd),
                decision: Some(Decision::Capped),
                ..Record::default()
            },
        ];
        for r in &cases {
            let serde = serde_json::to_string(r).expect("serialises");
            assert_eq!(written(r), serde);
        }
    }

    #[test]
    fn every_kind_and_decision_is_named_as_serde_names_it() {
        use Decision as D;
        use Kind as K;
        let kinds = [
            K::Statement,
            K::StatementEnd,
            K::SessionStart,
            K::SessionEnd,
            K::AuthFailure,
            K::IdleTimeout,
            K::ConnectionRefused,
            K::PolicyReload,
            K::BreakGlass,
            K::Checkpoint,
        ];
        for k in kinds {
            assert_eq!(k.quoted(), serde_json::to_string(&k).expect("kind"));
        }
        let decisions = [
            D::Allowed,
            D::Denied,
            D::DeniedByDatabase,
            D::Capped,
            D::Error,
        ];
        for d in decisions {
            assert_eq!(d.quoted(), serde_json::to_string(&d).expect("decision"));
        }
    }
}
