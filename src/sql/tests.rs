use std::collections::HashMap;
use std::sync::Arc;

use super::catalog::{LiveColumn, LiveTable};
use super::*;
use crate::policy::{PolicySet, TableName};

mod caps;
mod idioms;
mod rows;

const PATIENTS: &str = r#"
[table]
name = "public.patients"
[columns.ssn]
type = "text"
encrypt = "deterministic"
domain = "ssn"
read = { clinician = "plaintext", billing = "deny" }
[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext", billing = "plaintext" }
[columns.birth_date]
type = "date"
encrypt = "deterministic"
read = { clinician = "plaintext", analyst = "plaintext" }
[columns.seen_at]
type = "timestamp"
encrypt = "randomized"
read = { clinician = "plaintext" }
"#;

const CLAIMS: &str = r#"
[table]
name = "public.claims"
[columns.patient_ssn]
type = "text"
encrypt = "deterministic"
domain = "ssn"
read = { clinician = "plaintext" }
"#;

/// The encrypted columns of the test tables.
const ENCRYPTED: [&str; 5] = ["ssn", "full_name", "birth_date", "patient_ssn", "seen_at"];

fn live(oid: u32, cols: &[&str]) -> LiveTable {
    LiveTable {
        oid,
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| LiveColumn {
                name: (*c).to_owned(),
                attnum: i16::try_from(i + 1).expect("few columns"),
                has_default: *c == "patient_ssn",
                type_name: if ENCRYPTED.contains(c) {
                    "phigate_encrypted".into()
                } else {
                    "int4".into()
                },
                base_type: "bytea".into(),
                sql_type: if ENCRYPTED.contains(c) {
                    "phigate_encrypted".into()
                } else {
                    "integer".into()
                },
            })
            .collect(),
    }
}

pub(crate) fn analyzer() -> Analyzer {
    analyzer_with("")
}

/// Row policies on patients: clinicians see their clinic's rows, billing all rows it is
/// given by the `billable` policy.
const ROW_POLICIES: &str = r#"
[[policy]]
name = "own-clinic"
roles = ["clinician"]
commands = ["select", "update", "delete"]
using = "clinic_id = :user.clinic_id"
check = "clinic_id = :user.clinic_id"
"#;

fn analyzer_with(patients_extra: &str) -> Analyzer {
    analyzer_with_patients(&format!("{PATIENTS}{patients_extra}"))
}

/// An analyser whose patients policy is `patients`.
fn analyzer_with_patients(patients: &str) -> Analyzer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("patients.toml"), patients).expect("write");
    std::fs::write(dir.path().join("claims.toml"), CLAIMS).expect("write");
    std::fs::write(
        dir.path().join("roles.toml"),
        "[roles.clinician]\n[roles.billing]\n[roles.analyst]\nmax_rows = 500\nmax_rows_per_hour = 100\n[roles.admin]\nstatements = [\"all\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[users.carol]\nrole = \"clinician\"\nattributes = {{ clinic_id = 3 }}\nscram = \"{SCRAM}\"\n[users.bill]\nrole = \"billing\"\nscram = \"{SCRAM}\"\n[users.ann]\nrole = \"analyst\"\nscram = \"{SCRAM}\"\n[users.dana]\nrole = \"admin\"\nscram = \"{SCRAM}\"\n"),
    )
    .expect("write");
    let policies = PolicySet::load(dir.path()).expect("policies");
    let name = |t: &str| TableName {
        schema: "public".into(),
        table: t.into(),
    };
    let mut schema = HashMap::new();
    schema.insert(
        name("patients"),
        live(
            100,
            &[
                "id",
                "ssn",
                "full_name",
                "birth_date",
                "clinic_id",
                "seen_at",
            ],
        ),
    );
    schema.insert(name("claims"), live(200, &["id", "patient_ssn", "amount"]));
    let catalog = Catalog::new(&policies, &schema).expect("catalog");
    Analyzer::new(Arc::new(catalog), Arc::new(policies))
}

/// A verifier (of the password "pw"); the analysis never checks it.
const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$7i2t9s3m0V2bQ3u9Qyq3b9JmU9yqkqKpLq0h1h0n2p8=:1r9wq9ZQ0xY3+3W6b0vC8rXz0t4k9ZyQm2m1b1m0n4o=";

fn subject(user: &str, role: &str) -> Subject {
    Subject {
        user: Arc::from(user),
        role: Arc::from(role),
        emergency: false,
    }
}

fn run(a: &Analyzer, sql: &str) -> Analysis {
    a.analyse(
        &subject("carol", "clinician"),
        Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        },
        sql,
    )
}

pub(crate) fn plan(a: &Analyzer, sql: &str) -> Arc<Plan> {
    match run(a, sql) {
        Analysis::Rewrite(p) => p,
        other => panic!("{sql}: expected a rewrite, got {other:?}"),
    }
}

fn refused(a: &Analyzer, sql: &str) -> Refusal {
    match run(a, sql) {
        Analysis::Refuse(r) => (*r).clone(),
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn statements_without_protected_tables_pass_untouched() {
    let a = analyzer();
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
        "SELECT 'patients' AS word",
        "-- patients\nSELECT 1",
        "INSERT INTO notes VALUES ('call the patients back')",
        "BEGIN",
    ] {
        assert!(matches!(run(&a, sql), Analysis::Pass), "{sql}");
    }
}

#[test]
fn literals_compared_with_deterministic_columns_become_slots() {
    let a = analyzer();
    let p = plan(&a, "SELECT id, ssn FROM patients WHERE ssn = '123-45-6789'");
    assert!(!p.sql.text().contains("123-45-6789"), "{:?}", p.sql);
    assert!(
        p.sql.shown().ends_with("ssn = <encrypted ssn>"),
        "{:?}",
        p.sql
    );
    let values =
        |p: &Plan| -> Vec<Vec<u8>> { p.sql.literals().iter().map(|l| l.value.clone()).collect() };
    assert_eq!(values(&p), [b"123-45-6789".to_vec()]);
    let q = plan(
        &a,
        "select ssn from PATIENTS p where p.ssn in ('123-45-6789', $1)",
    );
    assert_eq!(values(&q), values(&p));
    assert!(matches!(q.params[0], Some(ParamUse::Scalar(_))));
    // Dates are canonicalised before encryption.
    let d1 = plan(&a, "SELECT id FROM patients WHERE birth_date = '2020-1-1'");
    let d2 = plan(
        &a,
        "SELECT id FROM patients WHERE birth_date = DATE '2020-01-01'",
    );
    assert_eq!(values(&d1), values(&d2));
}

#[test]
fn writes_leave_literals_as_slots_and_mark_parameters() {
    let a = analyzer();
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES (1, '111-22-3333', 'Ada Lovelace', $1), (2, NULL, $2, '1990-05-06') RETURNING id, ssn",
    );
    assert!(
        !p.sql.text().contains("Ada") && !p.sql.text().contains("111-22"),
        "{:?}",
        p.sql
    );
    let slots: Vec<_> = p
        .sql
        .literals()
        .iter()
        .map(|l| l.column.name.as_str())
        .collect();
    assert_eq!(slots, ["ssn", "full_name", "birth_date"]);
    assert_eq!(p.params.len(), 2);
    assert_eq!(
        p.params[0].as_ref().map(|u| u.column().name.as_str()),
        Some("birth_date")
    );
    assert_eq!(
        p.params[1].as_ref().map(|u| u.column().name.as_str()),
        Some("full_name")
    );
    // No column list: the table's column order applies.
    let p = plan(&a, "INSERT INTO patients VALUES ($1, $2, $3, $4, $5)");
    let names: Vec<_> = p
        .params
        .iter()
        .map(|u| u.as_ref().map(|u| u.column().name.clone()))
        .collect();
    assert_eq!(
        names,
        [
            None,
            Some("ssn".into()),
            Some("full_name".into()),
            Some("birth_date".into())
        ]
    );
    let p = plan(
        &a,
        "UPDATE patients SET full_name = $1, clinic_id = 3 WHERE ssn = $2",
    );
    assert!(p.params.iter().all(Option::is_some));
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn) VALUES ($1, $2) ON CONFLICT (ssn) DO UPDATE SET ssn = EXCLUDED.ssn RETURNING *",
    );
    assert!(p.params[1].is_some());
}

#[test]
fn joins_within_a_domain_and_any_arrays() {
    let a = analyzer();
    plan(
        &a,
        "SELECT p.id, c.amount FROM patients p JOIN claims c ON c.patient_ssn = p.ssn",
    );
    let p = plan(&a, "SELECT id FROM patients WHERE ssn = ANY($1)");
    assert!(matches!(p.params[0], Some(ParamUse::Array(_))));
    let r = refused(
        &a,
        "SELECT p.id FROM patients p JOIN claims c ON c.patient_ssn = p.birth_date",
    );
    assert_eq!(r.code, "0A000");
}

#[test]
fn unsupported_uses_are_refused_with_their_sqlstate() {
    let a = analyzer();
    for (sql, code) in [
        ("SELECT id FROM patients WHERE ssn LIKE '1%'", "0A000"),
        (
            "SELECT id FROM patients WHERE birth_date > '2000-01-01'",
            "0A000",
        ),
        ("SELECT id FROM patients ORDER BY ssn", "0A000"),
        ("SELECT ssn FROM patients ORDER BY 1", "0A000"),
        ("SELECT upper(ssn) FROM patients", "0A000"),
        ("SELECT id FROM patients WHERE full_name = 'Ada'", "0A000"),
        ("SELECT DISTINCT full_name FROM patients", "0A000"),
        ("SELECT (SELECT ssn FROM patients LIMIT 1)", "0A000"),
        (
            "INSERT INTO patients (ssn) SELECT full_name FROM patients",
            "0A000",
        ),
        (
            "WITH RECURSIVE x AS (SELECT ssn FROM patients) SELECT * FROM x",
            "0A000",
        ),
        ("INSERT INTO patients (ssn) VALUES (upper('a'))", "0A000"),
        (
            "INSERT INTO patients (birth_date) VALUES ('not a date')",
            "22007",
        ),
        ("CREATE TABLE copy AS SELECT * FROM patients", "42501"),
        ("COPY patients TO '/tmp/x'", "42501"),
        (
            "COPY patients FROM STDIN WITH (FORMAT binary, DELIMITER ',')",
            "0A000",
        ),
        ("SELECT * FROM U&\"p\\0061tients\"", "42501"),
        ("SELECT ssn FROM patients WHERE", "0A000"),
        (
            "SELECT id FROM patients p WHERE EXISTS (SELECT 1 FROM visits v WHERE ssn = '1')",
            "0A000",
        ),
        (
            "SELECT * FROM (SELECT ssn FROM patients) s WHERE EXISTS (SELECT 1 FROM visits WHERE ssn = '1')",
            "0A000",
        ),
    ] {
        assert_eq!(refused(&a, sql).code, code, "{sql}");
    }
}

#[test]
fn denied_columns_refuse_any_reference_including_star() {
    let a = analyzer();
    let billing = subject("bill", "billing");
    for sql in [
        "SELECT ssn FROM patients",
        "SELECT * FROM patients",
        "SELECT p.* FROM patients p",
        "SELECT id FROM patients WHERE ssn = '1'",
    ] {
        match a.analyse(
            &billing,
            Context {
                zone: Some(crate::protocol::zone::Zone::UTC),
                ..Context::default()
            },
            sql,
        ) {
            Analysis::Refuse(r) => {
                assert_eq!(r.code, "42501", "{sql}");
                assert!(r.message.contains("ssn"), "{}", r.message);
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn refusals_never_echo_values() {
    let a = analyzer();
    let r = refused(
        &a,
        "INSERT INTO patients (birth_date) VALUES ('1999-99-99')",
    );
    assert!(!r.message.contains("1999"), "{}", r.message);
    assert!(!r.hint.contains("1999"));
}

#[test]
fn analyses_are_cached_per_text() {
    let a = analyzer();
    let sql = "SELECT ssn FROM patients WHERE ssn = $1";
    let (Analysis::Rewrite(p1), Analysis::Rewrite(p2)) = (run(&a, sql), run(&a, sql)) else {
        panic!("rewrites expected")
    };
    assert!(Arc::ptr_eq(&p1, &p2));
}

#[test]
fn ctes_set_operations_and_subqueries() {
    let a = analyzer();
    // A CTE over a protected table: its columns stay protected in the main query.
    let p = plan(
        &a,
        "WITH x AS (SELECT id, ssn AS s FROM patients) SELECT s FROM x WHERE s = '111'",
    );
    assert!(!p.sql.shown().contains("'111'"), "{:?}", p.sql);
    assert_eq!(p.outputs.as_deref().map(<[_]>::len), Some(1));
    // A CTE named like the protected table shadows it.
    assert!(matches!(
        run(
            &a,
            "WITH patients AS (SELECT 1 AS ssn) SELECT ssn FROM patients WHERE ssn = 1"
        ),
        Analysis::Pass | Analysis::Rewrite(_)
    ));
    // UNION ALL of two columns of one domain decrypts by the analysis.
    let p = plan(
        &a,
        "SELECT ssn FROM patients UNION ALL SELECT patient_ssn FROM claims",
    );
    let outputs = p.outputs.as_ref().expect("outputs");
    assert!(outputs[0].is_some());
    assert_eq!(
        refused(
            &a,
            "SELECT full_name FROM patients UNION SELECT full_name FROM patients"
        )
        .code,
        "0A000"
    );
    assert_eq!(
        refused(&a, "SELECT ssn FROM patients UNION SELECT 'x'").code,
        "0A000"
    );
    // IN (subquery) within a domain; EXISTS with an encrypted comparison inside.
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE ssn IN (SELECT patient_ssn FROM claims WHERE patient_ssn <> '1') \
         AND EXISTS (SELECT 1 FROM claims c WHERE c.patient_ssn = '2')",
    );
    assert!(
        !p.sql.shown().contains("'1'") && !p.sql.shown().contains("'2'"),
        "{:?}",
        p.sql
    );
    assert_eq!(
        refused(
            &a,
            "SELECT id FROM patients WHERE ssn IN (SELECT full_name FROM patients)"
        )
        .code,
        "0A000"
    );
    // INSERT ... SELECT: literals and parameters encrypt; same-domain columns copy.
    let p = plan(
        &a,
        "INSERT INTO claims (id, patient_ssn, amount) SELECT 1, ssn, 2 FROM patients WHERE ssn = $1",
    );
    assert!(p.params[0].is_some());
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn) SELECT 7, '777' FROM generate_series(1, 1)",
    );
    assert!(!p.sql.shown().contains("'777'"));
    assert_eq!(
        refused(
            &a,
            "INSERT INTO patients (id, ssn) SELECT 7, full_name FROM patients"
        )
        .code,
        "0A000"
    );
    // Cursors: the declaration is analysed; FETCH results are inspected.
    plan(
        &a,
        "DECLARE c CURSOR FOR SELECT ssn FROM patients WHERE ssn = '1'",
    );
    for fetch in ["FETCH 10 FROM c", "fetch next in c", "FETCH ALL FROM c"] {
        assert!(
            matches!(run(&a, fetch), Analysis::Rewrite(_)),
            "{fetch}: {:?}",
            run(&a, fetch)
        );
    }
}

#[test]
fn database_defaults_of_protected_columns_are_refused() {
    let a = analyzer();
    // claims.patient_ssn has a default in this catalog: leaving it to it would store
    // plaintext.
    for sql in [
        "INSERT INTO claims (id) VALUES (1)",
        "INSERT INTO claims (id, patient_ssn) VALUES (1, DEFAULT)",
        "INSERT INTO claims DEFAULT VALUES",
    ] {
        assert_eq!(refused(&a, sql).code, "0A000", "{sql}");
    }
    plan(&a, "INSERT INTO claims (id, patient_ssn) VALUES (1, NULL)");
}

/// Casts on values meeting an encrypted column, as ORMs and drivers write them: removed
/// from parameters (PostgreSQL sees bytea), kept in the plan for ParameterDescription,
/// checked against the column's type; a cast to a type of other meaning is refused.
#[test]
fn casts_on_parameters_and_literals() {
    use crate::policy::LogicalType as T;
    let a = analyzer();
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES ($1::INTEGER, $2::VARCHAR, CAST($3 AS TEXT), ($4)::DATE)",
    );
    assert!(
        p.sql.shown().contains("VALUES ($1::INTEGER, $2, $3, $4)"),
        "{:?}",
        p.sql
    );
    assert_eq!(
        p.param_casts
            .iter()
            .map(|c| c.as_ref().map(|c| c.ty))
            .collect::<Vec<_>>(),
        [None, Some(T::Varchar), Some(T::Text), Some(T::Date)]
    );
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE ssn = $1::character varying(11)",
    );
    assert!(p.sql.shown().ends_with("WHERE ssn = $1"), "{:?}", p.sql);
    assert_eq!(
        p.param_casts,
        [Some(crate::protocol::value::Cast {
            ty: T::Varchar,
            modifiers: vec![crate::protocol::value::Modifier::Length(11)],
        })]
    );
    let p = plan(&a, "SELECT id FROM patients WHERE ssn = ANY($1::text[])");
    assert!(p.sql.shown().contains("ssn = ANY($1)"), "{:?}", p.sql);
    assert!(matches!(p.params[0], Some(ParamUse::Array(_))));
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE birth_date = '2020-01-01'::date AND ssn = 'x'::varchar",
    );
    assert!(!p.sql.shown().contains("::"), "{:?}", p.sql);
    for sql in [
        "SELECT id FROM patients WHERE ssn = $1::INTEGER",
        "INSERT INTO patients (id, birth_date) VALUES (1, $1::TEXT)",
        "SELECT id FROM patients WHERE birth_date = '2020-01-01'::text",
        "SELECT id FROM patients WHERE ssn = ANY($1::int[])",
        "UPDATE patients SET birth_date = $1::timestamp WHERE id = 1",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "42846", "{sql}: {}", r.message);
    }
}

/// The batch INSERT shapes ORMs send: SQLAlchemy's insertmanyvalues and Django's UNNEST.
#[test]
fn orm_batch_inserts() {
    let a = analyzer();
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn, birth_date) SELECT p0::INTEGER, p1::VARCHAR, p2::DATE \
         FROM (VALUES ($1::INTEGER, $2::VARCHAR, $3::DATE, 0), ($4::INTEGER, $5::VARCHAR, '2020-01-02', 1)) \
         AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING patients.id, patients.id AS id__1",
    );
    assert!(
        p.sql.shown().contains("SELECT p0::INTEGER, p1, p2 FROM (VALUES ($1::INTEGER, $2, $3, 0), ($4::INTEGER, $5, <encrypted birth_date>, 1))"),
        "{:?}",
        p.sql
    );
    let used: Vec<Option<&str>> = p
        .params
        .iter()
        .map(|u| u.as_ref().map(|u| u.column().name.as_str()))
        .collect();
    assert_eq!(
        used,
        [None, Some("ssn"), Some("birth_date"), None, Some("ssn")]
    );
    let p = plan(
        &a,
        "INSERT INTO \"patients\" (\"id\", \"ssn\", \"full_name\") SELECT * FROM UNNEST(($1)::integer[], ($2)::text[], ($3)::varchar[])",
    );
    assert!(
        p.sql.shown().contains("UNNEST(($1)::INTEGER[], $2, $3)"),
        "{:?}",
        p.sql
    );
    assert!(matches!(p.params[1], Some(ParamUse::Array(_))));
    assert!(matches!(p.params[2], Some(ParamUse::Array(_))));
    // Django binding on the client side: array literals, encrypted element by element
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn) SELECT * FROM UNNEST(('{1,2}'::int2[])::integer[], (E'{\"a b\",NULL}')::text[])",
    );
    assert!(
        p.sql
            .shown()
            .contains("ARRAY[<encrypted ssn>, NULL]::BYTEA[]"),
        "{:?}",
        p.sql
    );
    assert!(!p.sql.shown().contains("a b"), "{:?}", p.sql);
    for sql in [
        "INSERT INTO patients (id, ssn) SELECT p0, p1::INTEGER FROM (VALUES (1, $1)) AS v(p0, p1)",
        "INSERT INTO patients (id, ssn) SELECT p0, p1 FROM (VALUES (1, $1)) AS v(p0, p1) ORDER BY p1",
        "INSERT INTO patients (id, ssn) SELECT * FROM UNNEST($1::int[], ARRAY['a'])",
    ] {
        let r = refused(&a, sql);
        assert!(["42846", "0A000"].contains(&r.code), "{sql}: {r:?}");
    }
}

/// Django's `bulk_update`: `SET col = (CASE WHEN <condition> THEN <value> ... END)::type`.
#[test]
fn a_case_of_values_is_written_to_an_encrypted_column() {
    let a = analyzer();
    let p = plan(
        &a,
        "UPDATE \"patients\" SET \"full_name\" = (CASE WHEN (\"patients\".\"id\" = 10) THEN 'Ada' \
         WHEN (\"patients\".\"ssn\" = '111-22-3333') THEN $1 ELSE NULL END)::text WHERE \"patients\".\"id\" IN (10, 11)",
    );
    assert!(
        p.sql.shown().contains(
            "SET \"full_name\" = CASE WHEN (\"patients\".\"id\" = 10) THEN <encrypted full_name> \
             WHEN (\"patients\".\"ssn\" = <encrypted ssn>) THEN $1 ELSE NULL END WHERE"
        ),
        "{:?}",
        p.sql
    );
    assert!(!p.sql.text().contains("Ada") && !p.sql.text().contains("111-22"));
    assert_eq!(
        p.params[0].as_ref().map(|u| u.column().name.as_str()),
        Some("full_name")
    );
    // the operand form over plaintext, a date cast on each value
    plan(
        &a,
        "UPDATE patients SET birth_date = CASE id WHEN 1 THEN DATE '2020-01-02' ELSE '2021-03-04'::date END",
    );
    for sql in [
        // a computed result, a result of another cipher, a condition over ciphertext
        "UPDATE patients SET full_name = CASE WHEN id = 1 THEN upper('a') END",
        "UPDATE patients SET full_name = CASE WHEN id = 1 THEN ssn END",
        "UPDATE patients SET full_name = CASE WHEN ssn LIKE '1%' THEN 'a' END",
        "UPDATE patients SET full_name = CASE ssn WHEN '1' THEN 'a' END",
        // a cast to a type whose values mean something else
        "UPDATE patients SET full_name = (CASE WHEN id = 1 THEN '1' END)::int",
    ] {
        let r = refused(&a, sql);
        assert!(["42846", "0A000"].contains(&r.code), "{sql}: {r:?}");
    }
}

/// `count(col)` and `count(DISTINCT col)` are counted on ciphertext (also over a window:
/// `windows_partition_by_deterministic_columns`); nothing else computes.
#[test]
fn encrypted_columns_are_counted() {
    let a = analyzer();
    let p = plan(
        &a,
        "SELECT clinic_id, count(full_name), COUNT(DISTINCT ssn) AS n, pg_catalog.count(birth_date) \
         FROM patients GROUP BY clinic_id",
    );
    assert_eq!(p.outputs.as_deref().map(<[_]>::len), Some(4));
    assert!(
        p.outputs.iter().flatten().all(Option::is_none),
        "{:?}",
        p.outputs
    );
    for sql in [
        "SELECT count(DISTINCT full_name) FROM patients",
        "SELECT count(full_name) FILTER (WHERE id > 1) FROM patients",
        "SELECT count(full_name) + 1 FROM patients",
        "SELECT myschema.count(full_name) FROM patients",
        "SELECT count(upper(full_name)) FROM patients",
        "SELECT count(*) FROM patients HAVING count(full_name) > 1",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "0A000", "{sql}: {r:?}");
    }
}

/// A protected column tested for NULL inside an expression, in a select list or a
/// condition: NULL stays NULL in ciphertext. Anything else over it is still refused.
#[test]
fn encrypted_columns_are_tested_for_null_inside_expressions() {
    let a = analyzer();
    for sql in [
        "SELECT id, full_name IS NULL AS missing FROM patients",
        "SELECT CASE WHEN ssn IS NULL THEN 'none' ELSE 'some' END FROM patients",
        "SELECT id FROM patients WHERE (full_name IS NOT NULL) = true",
        "SELECT id FROM patients WHERE CASE WHEN birth_date IS NULL THEN 1 ELSE 0 END = 1",
    ] {
        let p = plan(&a, sql);
        assert!(p.outputs.iter().flatten().all(Option::is_none), "{sql}");
    }
    for sql in [
        "SELECT CASE WHEN ssn IS NULL THEN full_name END FROM patients",
        "SELECT coalesce(full_name, 'x') IS NULL FROM patients",
        "SELECT id FROM patients WHERE CASE WHEN full_name IS NULL THEN ssn END = '1'",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "0A000", "{sql}: {r:?}");
    }
}

/// Scalar subqueries over protected tables, compared or selected: each a query of its own.
#[test]
fn scalar_subqueries_are_walked_as_queries() {
    let a = analyzer();
    for sql in [
        "SELECT id FROM patients WHERE id = (SELECT max(id) FROM patients)",
        "SELECT id FROM patients WHERE (SELECT min(id) FROM patients) < id",
        "SELECT id FROM claims WHERE patient_ssn = (SELECT ssn FROM patients WHERE id = 1)",
        "SELECT id, (SELECT count(*) FROM claims c WHERE c.patient_ssn = p.ssn) AS n FROM patients p",
    ] {
        plan(&a, sql);
    }
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE id = (SELECT max(id) FROM patients WHERE ssn = '111-22-3333')",
    );
    assert_eq!(p.sql.literals().len(), 1, "{:?}", p.sql);
    assert!(!p.sql.text().contains("111-22"), "{:?}", p.sql);
    for sql in [
        // a range over ciphertext, another column, a randomized one, an encrypted output
        "SELECT id FROM patients WHERE ssn > (SELECT ssn FROM patients WHERE id = 1)",
        "SELECT id FROM patients WHERE ssn = (SELECT full_name FROM patients WHERE id = 1)",
        "SELECT id FROM patients WHERE full_name = (SELECT full_name FROM patients WHERE id = 1)",
        "SELECT id FROM patients WHERE id = (SELECT ssn FROM patients WHERE id = 1)",
        "SELECT (SELECT full_name FROM patients WHERE id = 1)",
        "SELECT id FROM patients WHERE id = (SELECT id FROM patients WHERE full_name LIKE 'A%')",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "0A000", "{sql}: {r:?}");
    }
}

/// The search path decides what an unqualified name means: followed when known (the first
/// schema holding a relation of that name), refused when not.
#[test]
fn unqualified_names_follow_the_search_path() {
    use crate::sql::SearchPath;
    let a = analyzer();
    let ctx = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    let who = subject("carol", "clinician");
    let sql = "SELECT ssn FROM patients";
    match a.analyse_on(&who, ctx, &SearchPath::Unknown, sql) {
        Analysis::Refuse(r) => assert!(r.message.contains("search_path"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.analyse_on(
            &who,
            ctx,
            &SearchPath::Unknown,
            "SELECT ssn FROM public.patients"
        ),
        Analysis::Rewrite(_)
    ));
    let path = |p: &[&str]| SearchPath::Known(p.iter().map(|s| (*s).to_owned()).collect());
    assert!(matches!(
        a.analyse_on(&who, ctx, &path(&["tenant", "public"]), sql),
        Analysis::Rewrite(_)
    ));
    // no schema on the path holds a patients table: PostgreSQL will say so
    assert!(matches!(
        a.analyse_on(&who, ctx, &path(&["tenant"]), sql),
        Analysis::Pass
    ));
}

/// In a client-only encoding (SJIS, BIG5, ...), text COPY of a protected table is refused
/// by the analysis, for the simple and the extended protocol alike; binary COPY is not.
#[test]
fn text_copy_is_refused_in_client_only_encodings() {
    let a = analyzer();
    let who = subject("carol", "clinician");
    let sjis = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        encoding: crate::protocol::encoding::ClientEncoding::from_name("SJIS"),
        ..Context::default()
    };
    match a.analyse(&who, sjis, "COPY patients (id, ssn) FROM STDIN") {
        Analysis::Refuse(r) => assert_eq!(r.code, "0A000", "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.analyse(
            &who,
            sjis,
            "COPY patients (id, ssn) FROM STDIN (FORMAT binary)"
        ),
        Analysis::Rewrite(_)
    ));
    // the same text in UTF8 is analysed as usual (the cache keeps the two apart)
    assert!(matches!(
        a.analyse(
            &who,
            Context {
                zone: Some(crate::protocol::zone::Zone::UTC),
                ..Context::default()
            },
            "COPY patients (id, ssn) FROM STDIN"
        ),
        Analysis::Rewrite(_)
    ));
}

#[test]
fn a_text_kept_as_passed_is_screened_again_for_another_role() {
    let a = analyzer();
    let ctx = Context::default();
    let ddl = "CREATE TABLE notes (id int)";
    for _ in 0..2 {
        let passed = a.analyse(&subject("dana", "admin"), ctx, ddl);
        assert!(matches!(passed, Analysis::Pass), "{passed:?}");
    }
    assert!(a.passed_before("admin", ddl));
    let other = a.analyse(&subject("carol", "clinician"), ctx, ddl);
    assert!(matches!(other, Analysis::Refuse(_)), "{other:?}");
    // a role whose name ends like another's text begins is another key
    assert!(!a.passed_before("ad", "minCREATE TABLE notes (id int)"));
}

#[test]
fn only_texts_without_literals_are_kept_as_passed() {
    let a = analyzer();
    let with = [
        "SELECT x FROM t WHERE id = 42",
        "SELECT x FROM t WHERE n = 'a'",
        "SELECT x FROM t WHERE n = $$a$$",
        "SELECT x FROM t -- isn't kept",
    ];
    for sql in with {
        assert!(matches!(run(&a, sql), Analysis::Pass));
        assert!(!a.passed_before("clinician", sql), "{sql}");
    }
    let sql = "SELECT x FROM t WHERE id = $1";
    assert!(matches!(run(&a, sql), Analysis::Pass));
    assert!(a.passed_before("clinician", sql));
}

#[test]
fn a_setting_named_by_a_parameter_is_left_to_the_bind_and_never_kept_as_passed() {
    let a = analyzer();
    let sql = "select current_setting($1)";
    for _ in 0..2 {
        match run(&a, sql) {
            Analysis::Bound(b) => assert_eq!(b[0].param, 1),
            other => panic!("{sql}: expected a bound setting, got {other:?}"),
        }
    }
    assert!(!a.passed_before("clinician", sql));
    let r = refused(&a, "select current_setting($1), ssn from patients");
    assert_eq!(r.code, "0A000");
    assert!(r.message.contains("no protected table"), "{}", r.message);
}

/// An analyzer over protected tables `public.<name>` of columns `id` and `ssn` (encrypted),
/// for a clinician, carol.
fn analyzer_of(tables: &[&str]) -> Analyzer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut schema = HashMap::new();
    for (i, table) in tables.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("t{i}.toml")),
            format!("[table]\nname = \"public.{table}\"\n[columns.ssn]\ntype = \"text\"\nencrypt = \"deterministic\"\nread = {{ clinician = \"plaintext\" }}\n"),
        )
        .expect("write");
        let name = TableName {
            schema: "public".into(),
            table: (*table).into(),
        };
        let oid = 100 * (u32::try_from(i).expect("few tables") + 1);
        schema.insert(name, live(oid, &["id", "ssn"]));
    }
    std::fs::write(dir.path().join("roles.toml"), "[roles.clinician]\n").expect("write");
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[users.carol]\nrole = \"clinician\"\nscram = \"{SCRAM}\"\n"),
    )
    .expect("write");
    let policies = PolicySet::load(dir.path()).expect("policies");
    let catalog = Catalog::new(&policies, &schema).expect("catalog");
    Analyzer::new(Arc::new(catalog), Arc::new(policies))
}

/// A protected table named with capitals (`"Records"`, as ORMs that quote every name
/// create them), and one whose name is 63 bytes long, found as PostgreSQL reads names:
/// quoted as written, unquoted in lower case, cut at 63 bytes.
#[test]
fn protected_names_are_read_as_postgresql_reads_names() {
    let long = format!("r{}", "x".repeat(62));
    let a = analyzer_of(&["Records", &long]);
    for sql in [
        "INSERT INTO \"Records\" (id, ssn) VALUES (1, '123')".to_owned(),
        "SELECT ssn FROM public.\"Records\"".to_owned(),
        format!("INSERT INTO {long}tail (id, ssn) VALUES (1, '123')"),
        format!(
            "SELECT ssn FROM \"{}\"",
            long.to_uppercase().replacen('R', "r", 1) + "Z"
        )
        .replace(&"X".repeat(62), &"x".repeat(62)),
    ] {
        assert!(!matches!(run(&a, &sql), Analysis::Pass), "{sql}");
    }
    for sql in ["SELECT ssn FROM records", "SELECT ssn FROM RECORDS"] {
        assert!(matches!(run(&a, sql), Analysis::Pass), "{sql}");
    }
}

/// An unquoted name with non-ASCII capitals that a single-byte database would fold to a
/// protected table's name is refused: phigate cannot tell which table it names.
#[test]
fn a_name_folded_by_the_encoding_is_refused() {
    let a = analyzer_of(&["dossiers_médicaux"]);
    let r = refused(&a, "SELECT ssn FROM DOSSIERS_MÉDICAUX");
    assert_eq!(r.code, "0A000");
    assert!(r.hint.contains("\"dossiers_médicaux\""), "{r:?}");
    assert!(!matches!(
        run(&a, "SELECT ssn FROM dossiers_médicaux"),
        Analysis::Pass
    ));
    assert!(matches!(run(&a, "SELECT 1 FROM CAFÉ"), Analysis::Pass));
}

/// A declared emergency's reason is its string's value, in any string form.
#[test]
fn a_declared_reason_is_the_value_of_its_string() {
    for (sql, reason) in [
        (
            "SET phigate.break_glass = 'code blue, bed 4'",
            Some("code blue, bed 4"),
        ),
        ("SET phigate.break_glass TO 'it''s  '", Some("it's")),
        ("SET phigate.break_glass = E'ward\\\\3'", Some("ward\\3")),
        ("SET phigate.break_glass = $$bed 4$$", Some("bed 4")),
        ("SET phigate.break_glass = '  '", None),
    ] {
        assert_eq!(declared_reason(sql).as_deref(), reason, "{sql}");
    }
}
