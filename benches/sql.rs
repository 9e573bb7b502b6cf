//! Cost of transparent encryption: statement analysis and rewriting (cold and cached), the
//! byte scan that lets unrelated statements through, and one prepared-statement exchange
//! on an encrypted column against the same exchange on a plaintext one.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use phigate::crypto::{ColumnCipher, Keyring, Mode, domain_aad};
use phigate::encryption::Ciphers;
use phigate::policy::{PolicySet, TableName};
use phigate::protocol::value::Context;
use phigate::session::{Enforcement, Guard, Outbound, Session};
use phigate::sql::catalog::{LiveColumn, LiveTable};
use phigate::sql::{Analyzer, Catalog, Subject};

mod common;
use common::{msg, round_trip};

const POLICY: &str = r#"
[table]
name = "public.patients"
[columns.ssn]
type = "text"
encrypt = "deterministic"
domain = "ssn"
read = { clinician = "plaintext" }
[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext" }
[columns.birth_date]
type = "date"
encrypt = "deterministic"
read = { clinician = "plaintext" }
"#;

fn keyring() -> Keyring {
    Keyring::from_keys(1, vec![(1, [9u8; 32])])
}

/// The catalog and the policy set it comes from.
fn catalog() -> (Arc<Catalog>, Arc<PolicySet>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("patients.toml"), POLICY).expect("policy");
    std::fs::write(dir.path().join("roles.toml"), "[roles.clinician]\n").expect("roles");
    phigate::policy::add_user(&dir.path().join("users.toml"), "carol", "clinician", "pw")
        .expect("user");
    let policies = PolicySet::load(dir.path()).expect("policies");
    let columns = ["id", "ssn", "full_name", "birth_date", "clinic_id"]
        .iter()
        .enumerate()
        .map(|(i, c)| LiveColumn {
            name: (*c).into(),
            attnum: i as i16 + 1,
            has_default: false,
            type_name: "phigate_encrypted".into(),
            base_type: "bytea".into(),
            sql_type: "phigate_encrypted".into(),
        })
        .collect();
    let mut live = HashMap::new();
    live.insert(
        TableName {
            schema: "public".into(),
            table: "patients".into(),
        },
        LiveTable { oid: 100, columns },
    );
    let catalog = Catalog::new(&policies, &live).expect("catalog");
    (Arc::new(catalog), Arc::new(policies))
}

fn subject() -> Subject {
    Subject {
        user: Arc::from("carol"),
        role: Arc::from("clinician"),
        emergency: false,
    }
}

const STATEMENTS: &[(&str, &str)] = &[
    (
        "lookup",
        "SELECT id, ssn, full_name FROM patients WHERE ssn = $1",
    ),
    (
        "insert",
        "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES ($1, $2, $3, $4)",
    ),
    (
        "update-literal",
        "UPDATE patients SET clinic_id = 3 WHERE ssn = '123-45-6789' AND birth_date = '1970-01-01'",
    ),
    (
        "join",
        "SELECT p.full_name, c.amount FROM patients p JOIN claims c ON c.patient_id = p.id \
         WHERE p.ssn IN ($1, $2) AND c.amount > 10",
    ),
];

fn analysis(c: &mut Criterion) {
    let (catalog, policies) = catalog();
    let role = subject();
    let ctx = Context {
        zone: Some(phigate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    for (name, sql) in STATEMENTS {
        c.bench_function(&format!("sql/analyse+rewrite cold/{name}"), |b| {
            b.iter(|| {
                let fresh = Analyzer::new(catalog.clone(), policies.clone());
                black_box(fresh.analyse(&role, ctx, sql))
            })
        });
    }
    let cached = Analyzer::new(catalog.clone(), policies.clone());
    c.bench_function("sql/analyse cached/lookup", |b| {
        b.iter(|| black_box(cached.analyse(&role, ctx, STATEMENTS[0].1)))
    });
    c.bench_function("sql/pass-through scan/pgbench-S", |b| {
        b.iter(|| {
            black_box(cached.analyse(
                &role,
                ctx,
                "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
            ))
        })
    });
    // what a driver on the extended protocol prepares again for each execution
    c.bench_function("sql/pass-through again/pgbench-S extended", |b| {
        b.iter(|| {
            black_box(cached.analyse(
                &role,
                ctx,
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            ))
        })
    });
}

/// Bind ($1 = an SSN in text) / Execute / Sync of statement "s", answered by one row
/// holding `value` in binary format.
fn exchange(c: &mut Criterion, name: &str, guard: Option<Guard>, value: &[u8]) {
    let mut session = Session::new("phigate:bench".into(), String::new(), guard);
    let mut out = Outbound::default();
    // Prepare once: Parse + Sync, answered (with the Describe phigate adds) by the
    // server's ParseComplete, ParameterDescription, RowDescription and ReadyForQuery.
    let mut parse = BytesMut::new();
    msg(
        &mut parse,
        b'P',
        b"s\0SELECT ssn FROM patients WHERE ssn = $1\0\0\0",
    );
    msg(&mut parse, b'S', b"");
    let mut described = BytesMut::new();
    msg(&mut described, b'1', b"");
    msg(&mut described, b't', b"\0\x01\0\0\0\x11");
    let mut row_desc = BytesMut::new();
    row_desc.put_i16(1);
    row_desc.put_slice(b"ssn\0");
    row_desc.put_u32(100);
    row_desc.put_i16(2);
    row_desc.put_u32(17);
    row_desc.put_i16(-1);
    row_desc.put_i32(-1);
    row_desc.put_i16(0);
    msg(&mut described, b'T', &row_desc);
    msg(&mut described, b'Z', b"I");
    round_trip(&mut session, &mut out, &parse, &described);

    let mut request = BytesMut::new();
    let mut bind = BytesMut::new();
    bind.put_slice(b"\0s\0");
    bind.put_i16(0);
    bind.put_i16(1);
    bind.put_i32(11);
    bind.put_slice(b"123-45-6789");
    bind.put_i16(1);
    bind.put_i16(1);
    msg(&mut request, b'B', &bind);
    msg(&mut request, b'E', b"\0\0\0\0\0");
    msg(&mut request, b'S', b"");
    let mut response = BytesMut::new();
    msg(&mut response, b'2', b"");
    let mut row = BytesMut::new();
    row.put_i16(1);
    row.put_i32(value.len() as i32);
    row.put_slice(value);
    msg(&mut response, b'D', &row);
    msg(&mut response, b'C', b"SELECT 1\0");
    msg(&mut response, b'Z', b"I");
    c.bench_function(name, |b| {
        b.iter(|| round_trip(&mut session, &mut out, &request, &response))
    });
}

fn session(c: &mut Criterion) {
    let (catalog, policies) = catalog();
    let guard = Guard {
        enforcement: Arc::new(Enforcement::new(
            Analyzer::new(catalog.clone(), policies),
            Ciphers::new(keyring(), &catalog),
        )),
        subject: subject(),
        break_glass_for: std::time::Duration::from_secs(1800),
        session_key: Arc::new(phigate::policy::session_key::SessionKey::from_bytes(
            [0; 32],
        )),
        backend_pid: 1,
        started: (std::time::Instant::now(), std::time::SystemTime::now()),
        budgets: Arc::new(phigate::policy::RowBudgets::new(std::time::Instant::now())),
        delegation: None,
    };
    let cipher = ColumnCipher::new(&keyring(), Mode::Deterministic, &domain_aad("ssn", "text"));
    let envelope = cipher.encrypt(b"123-45-6789");
    exchange(
        c,
        "session/prepared lookup, plaintext column",
        None,
        b"123-45-6789",
    );
    exchange(
        c,
        "session/prepared lookup, encrypted column",
        Some(guard),
        &envelope,
    );
}

criterion_group!(benches, analysis, session);
criterion_main!(benches);
