//! Records in the formats SIEMs ingest: OCSF 1.1 JSON (Datastore Activity for statements,
//! Authentication for logins and connections, Authorize Session for break-glass, Base
//! Event for the rest) and ArcSight CEF. Pure: a record in, a line out. Statement records
//! are expected with their outcome folded in ([`super::with_outcomes`]); checkpoints are
//! the chain's own and are not exported (verify the files for integrity).

use serde_json::{Value, json};

use super::record::{Decision, Kind, Record};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// An OCSF class: (class_uid, category_uid, activity_id, activity_name).
struct Class(u32, u32, u32, &'static str);

/// The OCSF class and activity of a record; `None` for records not exported.
fn class(r: &Record) -> Option<Class> {
    Some(match r.kind? {
        Kind::Statement | Kind::StatementEnd => {
            let (id, name) = statement_activity(r.statement.as_deref().unwrap_or(""));
            Class(6005, 6, id, name)
        }
        Kind::SessionStart | Kind::AuthFailure | Kind::ConnectionRefused => {
            Class(3002, 3, 1, "Logon")
        }
        Kind::SessionEnd | Kind::IdleTimeout => Class(3002, 3, 2, "Logoff"),
        Kind::BreakGlass => Class(3003, 3, 1, "Assign Privileges"),
        Kind::PolicyReload => Class(0, 0, 99, "Policy Reload"),
        Kind::Checkpoint => return None,
    })
}

/// The Datastore Activity of a statement, from its first word.
fn statement_activity(statement: &str) -> (u32, &'static str) {
    let first = statement.split_whitespace().next().unwrap_or("");
    match first.to_ascii_lowercase().as_str() {
        "select" | "with" | "table" | "fetch" | "copy" => (1, "Read"),
        "update" => (2, "Update"),
        "insert" => (6, "Create"),
        "delete" => (7, "Delete"),
        _ => (99, "Other"),
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (0 when it does not parse).
fn epoch_ms(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One record as an OCSF event; `None` for checkpoints.
pub fn ocsf(r: &Record) -> Option<Value> {
    let Class(class_uid, category_uid, activity_id, activity_name) = class(r)?;
    let failed = r.refused_or_failed();
    let mut e = json!({
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": u64::from(class_uid) * 100 + u64::from(activity_id),
        "time": epoch_ms(&r.ts),
        "severity_id": if failed { 3 } else { 1 },
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": format!("{}:{}", r.instance, r.seq),
            "product": { "name": "phigate", "vendor_name": "phigate", "version": env!("CARGO_PKG_VERSION") },
            "log_name": "phigate audit",
        },
        "unmapped": unmapped(r),
    });
    let fields = [
        ("status_code", r.sqlstate.as_ref().map(|s| json!(s))),
        ("status_detail", r.detail.as_ref().map(|d| json!(d))),
        ("message", r.statement.as_ref().map(|s| json!(s))),
        ("duration", r.duration_us.map(|us| json!(us / 1000))),
        ("actor", actor(r)),
        (
            "src_endpoint",
            r.client_addr.as_ref().map(|ip| json!({ "ip": ip })),
        ),
        (
            "query_info",
            r.statement.as_ref().map(|s| json!({ "query_string": s })),
        ),
        ("table", r.tables.first().map(|t| json!({ "name": t }))),
        ("type_id", (!r.tables.is_empty()).then(|| json!(3))),
    ];
    for (name, value) in fields {
        if let (Some(v), Some(obj)) = (value, e.as_object_mut()) {
            obj.insert(name.to_owned(), v);
        }
    }
    Some(e)
}

fn actor(r: &Record) -> Option<Value> {
    let user = r.user.as_ref()?;
    let mut u = json!({ "name": user });
    if let (Some(role), Some(obj)) = (&r.role, u.as_object_mut()) {
        obj.insert("groups".into(), json!([{ "name": role }]));
    }
    let mut actor = json!({ "user": u });
    if let (Some(session), Some(obj)) = (r.session, actor.as_object_mut()) {
        obj.insert("session".into(), json!({ "uid": session.to_string() }));
    }
    Some(actor)
}

/// What OCSF has no place for: phigate's own fields, as stored.
fn unmapped(r: &Record) -> Value {
    let mut u = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() && v != json!([]) {
            u.insert(k.to_owned(), v);
        }
    };
    put("seq", json!(r.seq));
    put("kind", json!(r.kind.map(Kind::name)));
    put("service", json!(r.service));
    put("decision", json!(r.decision.map(Decision::name)));
    put("tables", json!(r.tables));
    put("phi_columns", json!(r.phi_columns));
    put("policies_applied", json!(r.policies_applied));
    put("values", json!(r.values));
    put("rows", json!(r.rows));
    put("break_glass", json!(r.break_glass));
    put("application_name", json!(r.application_name));
    put("tls", json!(r.tls));
    put("begin", json!(r.begin));
    Value::Object(u)
}

/// CEF escaping of a header field (`|` and `\`).
fn header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

/// CEF escaping of an extension value (`\`, `=`, line breaks).
fn ext(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// One record as a CEF line; `None` for checkpoints.
pub fn cef(r: &Record) -> Option<String> {
    let Class(_, _, _, activity) = class(r)?;
    let kind = r.kind.map(Kind::name).unwrap_or_default();
    let severity = if r.refused_or_failed() { 6 } else { 3 };
    let mut pairs: Vec<(&str, String)> = vec![
        ("rt", epoch_ms(&r.ts).to_string()),
        ("externalId", r.seq.to_string()),
        ("dvchost", r.instance.clone()),
    ];
    let optional = [
        ("suser", r.user.as_deref().map(str::to_owned)),
        ("src", r.client_addr.as_deref().map(str::to_owned)),
        ("act", r.decision.map(|d| d.name().to_owned())),
        (
            "outcome",
            Some(
                if r.refused_or_failed() {
                    "failure"
                } else {
                    "success"
                }
                .to_owned(),
            ),
        ),
        ("reason", r.sqlstate.clone()),
        ("msg", r.detail.clone()),
        (
            "cs1Label",
            r.statement.as_ref().map(|_| "statement".to_owned()),
        ),
        ("cs1", r.statement.clone()),
        (
            "cs2Label",
            Some("tables".to_owned()).filter(|_| !r.tables.is_empty()),
        ),
        ("cs2", Some(r.tables.join(",")).filter(|t| !t.is_empty())),
        (
            "cs3Label",
            Some("phi_columns".to_owned()).filter(|_| !r.phi_columns.is_empty()),
        ),
        (
            "cs3",
            Some(r.phi_columns.join(",")).filter(|t| !t.is_empty()),
        ),
        ("cs4Label", r.role.as_ref().map(|_| "role".to_owned())),
        ("cs4", r.role.as_deref().map(str::to_owned)),
        ("cn1Label", r.rows.map(|_| "rows".to_owned())),
        ("cn1", r.rows.map(|n| n.to_string())),
        ("cn2Label", r.session.map(|_| "session".to_owned())),
        ("cn2", r.session.map(|n| n.to_string())),
    ];
    pairs.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let extension: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", ext(v)))
        .collect();
    Some(format!(
        "CEF:0|phigate|phigate|{}|{}|{}|{severity}|{}",
        header(env!("CARGO_PKG_VERSION")),
        header(kind),
        header(&format!("{activity} ({kind})")),
        extension.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Record {
        Record {
            seq: 42,
            ts: "2026-12-01T10:00:00.250000Z".into(),
            instance: "ph1".into(),
            session: Some(7),
            user: Some("bill".into()),
            role: Some("billing".into()),
            client_addr: Some("10.0.0.9".into()),
            kind: Some(Kind::Statement),
            statement: Some("SELECT id FROM patients WHERE ssn = ? | x=1".into()),
            tables: vec!["public.patients".into()],
            phi_columns: vec!["public.patients.ssn".into()],
            decision: Some(Decision::Denied),
            sqlstate: Some("42501".into()),
            ..Record::default()
        }
    }

    #[test]
    fn a_denied_read_is_a_failed_datastore_read() {
        let e = ocsf(&statement()).expect("exported");
        assert_eq!(e["class_uid"], 6005);
        assert_eq!(e["activity_id"], 1);
        assert_eq!(e["type_uid"], 600_501);
        assert_eq!(e["time"], 1_796_119_200_250u64);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["status_code"], "42501");
        assert_eq!(e["actor"]["user"]["name"], "bill");
        assert_eq!(e["actor"]["user"]["groups"][0]["name"], "billing");
        assert_eq!(e["src_endpoint"]["ip"], "10.0.0.9");
        assert_eq!(e["table"]["name"], "public.patients");
        assert_eq!(e["unmapped"]["decision"], "denied");
        assert_eq!(e["unmapped"]["phi_columns"][0], "public.patients.ssn");
        assert_eq!(e["metadata"]["uid"], "ph1:42");
        let mut checkpoint = statement();
        checkpoint.kind = Some(Kind::Checkpoint);
        assert!(ocsf(&checkpoint).is_none());
    }

    #[test]
    fn logins_are_authentication_events() {
        let mut r = statement();
        r.kind = Some(Kind::ConnectionRefused);
        r.statement = None;
        r.sqlstate = Some("28000".into());
        let e = ocsf(&r).expect("exported");
        assert_eq!(
            (e["class_uid"].as_u64(), e["activity_id"].as_u64()),
            (Some(3002), Some(1))
        );
        assert_eq!(e["status"], "Failure");
        r.kind = Some(Kind::SessionEnd);
        r.decision = None;
        r.sqlstate = None;
        let e = ocsf(&r).expect("exported");
        assert_eq!(
            (e["activity_id"].as_u64(), e["status_id"].as_u64()),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn cef_escapes_its_separators() {
        let line = cef(&statement()).expect("exported");
        assert!(line.starts_with("CEF:0|phigate|phigate|"), "{line}");
        assert!(line.contains("|statement|Read (statement)|6|"), "{line}");
        assert!(
            line.contains("cs1=SELECT id FROM patients WHERE ssn \\= ? | x\\=1"),
            "{line}"
        );
        assert!(
            line.contains("suser=bill") && line.contains("reason=42501"),
            "{line}"
        );
        assert!(
            line.contains("act=denied") && line.contains("outcome=failure"),
            "{line}"
        );
        let mut r = statement();
        r.detail = Some("two\nlines".into());
        assert!(cef(&r).expect("exported").contains("msg=two\\nlines"));
    }
}
