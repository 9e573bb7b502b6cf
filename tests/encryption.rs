//! Transparent column encryption against a real PostgreSQL: values written through
//! phigate are ciphertext at rest and read back equal, in text and binary format.

mod common;

use common::{Options, Pg, Proxy, code, count};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// Every logical type: (column, type, a literal of it).
const TYPES: &[(&str, &str, &str)] = &[
    ("c_text", "text", "Ünïcode text ✓"),
    ("c_varchar", "varchar", "variable chars"),
    ("c_bpchar", "bpchar", "fixed chars"),
    ("c_int2", "int2", "-1234"),
    ("c_int4", "int4", "7654321"),
    ("c_int8", "int8", "-9000000000123"),
    ("c_numeric", "numeric", "-12345.678900"),
    ("c_bool", "bool", "true"),
    ("c_date", "date", "1987-06-05"),
    ("c_timestamp", "timestamp", "2020-03-04 05:06:07.891"),
    ("c_timestamptz", "timestamptz", "2020-03-04 05:06:07.5+02"),
    ("c_uuid", "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("c_json", "json", "{\"b\": [1, 2], \"a\": \"x\"}"),
    (
        "c_jsonb",
        "jsonb",
        "{\"bb\": {\"z\": null}, \"a\": [true, 1.50]}",
    ),
    ("c_bytea", "bytea", "\\xdeadbeef00"),
];

fn vault_policy() -> &'static str {
    let mut p = String::from("[table]\nname = \"public.vault\"\n");
    for (i, (col, ty, _)) in TYPES.iter().enumerate() {
        let mode = if i % 2 == 0 {
            "randomized"
        } else {
            "deterministic"
        };
        p.push_str(&format!(
            "[columns.{col}]\ntype = \"{ty}\"\nencrypt = \"{mode}\"\nread = {{ clinician = \"plaintext\" }}\n"
        ));
    }
    Box::leak(p.into_boxed_str())
}

const PATIENTS: &str = r#"
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

/// A table named with capitals, as ORMs that quote every name create them.
const RECORDS: &str = r#"
[table]
name = "public.Records"
[columns.Note]
type = "text"
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

/// The raw bytes of any value, in whichever format the driver received it.
#[derive(Debug, PartialEq)]
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter sent as the given binary bytes, whatever type the server described.
#[derive(Debug)]
struct Binary(Vec<u8>);

impl ToSql for Binary {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

async fn schema(pg: &Pg) -> tokio_postgres::Client {
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    let cols: Vec<String> = TYPES
        .iter()
        .map(|(c, _, _)| format!("{c} phigate_encrypted"))
        .collect();
    db.batch_execute(&format!(
        "create table vault (id int primary key, {});
         create table patients (id int primary key, ssn phigate_encrypted unique, full_name phigate_encrypted,
                                birth_date phigate_encrypted, clinic_id int);
         create table claims (id serial primary key, patient_ssn phigate_encrypted, amount numeric);
         create table \"Records\" (id int primary key, \"Note\" phigate_encrypted);
         grant all on all tables in schema public to svc_scram;
         grant all on all sequences in schema public to svc_scram;
         alter database ehr set timezone = 'UTC';",
        cols.join(", ")
    ))
    .await
    .unwrap();
    db
}

async fn setup() -> (Pg, Proxy, tokio_postgres::Client) {
    let pg = Pg::start();
    let db = schema(&pg).await;
    let tables: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
        ("vault.toml", vault_policy()),
        ("patients.toml", PATIENTS),
        ("claims.toml", CLAIMS),
        ("records.toml", RECORDS),
    ]));
    let proxy = Proxy::start(
        &pg,
        &Options {
            tables,
            ..Options::default()
        },
    )
    .await;
    (pg, proxy, db)
}

/// Every type: written through phigate as a literal (simple protocol, text) and as a
/// binary parameter (extended protocol); stored as ciphertext; read back through phigate
/// exactly as PostgreSQL itself formats the value, in text and in binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_as_ciphertext() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    let columns: Vec<&str> = TYPES.iter().map(|(c, _, _)| *c).collect();
    let literals: Vec<String> = TYPES
        .iter()
        .map(|(_, ty, v)| format!("'{}'::{ty}", v.replace('\'', "''")))
        .collect();
    app.batch_execute(&format!(
        "insert into vault (id, {}) values (1, {})",
        columns.join(", "),
        literals.join(", ")
    ))
    .await
    .unwrap();

    // The binary form of each value, as PostgreSQL produces it.
    let select_plain = format!("select {}", literals.join(", "));
    let expected = db.query_one(&select_plain, &[]).await.unwrap();
    let binaries: Vec<Binary> = (0..TYPES.len())
        .map(|i| Binary(expected.get::<_, Raw>(i).0))
        .collect();
    let placeholders: Vec<String> = (2..TYPES.len() + 2).map(|i| format!("${i}")).collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&2i32];
    params.extend(binaries.iter().map(|b| b as &(dyn ToSql + Sync)));
    app.execute(
        &format!(
            "insert into vault (id, {}) values ($1, {})",
            columns.join(", "),
            placeholders.join(", ")
        ),
        &params,
    )
    .await
    .unwrap();

    // At rest: only envelopes, and no plaintext anywhere in the table.
    let stored = db
        .simple_query("select v::text from vault v")
        .await
        .unwrap();
    for msg in &stored {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            let text = row.get(0).unwrap();
            for (_, _, v) in TYPES {
                if v.len() >= 5 {
                    assert!(!text.contains(v), "plaintext {v} stored: {text}");
                }
            }
        }
    }
    let direct_types = db
        .query_one(
            "select pg_typeof(c_date)::text, length(c_int4) from vault where id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(direct_types.get::<_, String>(0), "phigate_encrypted");
    assert_eq!(direct_types.get::<_, i32>(1), 4 + 34);

    // Text format (simple protocol) equals PostgreSQL's own text output.
    let text_expected: Vec<String> = match &db.simple_query(&select_plain).await.unwrap()[1] {
        tokio_postgres::SimpleQueryMessage::Row(r) => (0..TYPES.len())
            .map(|i| r.get(i).unwrap().to_owned())
            .collect(),
        other => panic!("{other:?}"),
    };
    for id in [1, 2] {
        let rows = app
            .simple_query(&format!(
                "select {} from vault where id = {id}",
                columns.join(", ")
            ))
            .await
            .unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
            panic!("{rows:?}")
        };
        for (i, (col, _, _)) in TYPES.iter().enumerate() {
            assert_eq!(r.get(i).unwrap(), text_expected[i], "text {col} (row {id})");
        }
        // Binary format (extended protocol) equals PostgreSQL's binary form, and the
        // description carries the logical type.
        let row = app
            .query_one(
                &format!("select {} from vault where id = $1", columns.join(", ")),
                &[&id],
            )
            .await
            .unwrap();
        for (i, (col, ty, _)) in TYPES.iter().enumerate() {
            assert_eq!(
                row.get::<_, Raw>(i),
                Raw(binaries[i].0.clone()),
                "binary {col} (row {id})"
            );
            assert_eq!(row.columns()[i].type_().name(), *ty, "{col}");
        }
    }

    // Drivers decode natively: a date reads as a date, a uuid as a uuid, jsonb as JSON.
    let row = app
        .query_one(
            "select c_date, c_uuid, c_jsonb, c_int8, c_text from vault where id = 1",
            &[],
        )
        .await
        .unwrap();
    let date: chrono::NaiveDate = row.get(0);
    assert_eq!(date.to_string(), "1987-06-05");
    let id: uuid::Uuid = row.get(1);
    assert_eq!(id.to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    let json: serde_json::Value = row.get(2);
    assert_eq!(json["bb"]["z"], serde_json::Value::Null);
    assert_eq!(row.get::<_, i64>(3), -9_000_000_000_123);
    assert_eq!(row.get::<_, String>(4), "Ünïcode text ✓");

    // SELECT * and RETURNING decrypt too, and typed Rust parameters encrypt.
    let day = chrono::NaiveDate::from_ymd_opt(2001, 2, 3).unwrap();
    let row = app
        .query_one(
            "insert into vault (id, c_date, c_text) values ($1, $2, $3) returning *",
            &[&3i32, &day, &"returned"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, chrono::NaiveDate>("c_date"), day);
    assert_eq!(row.get::<_, String>("c_text"), "returned");
    assert_eq!(row.get::<_, Option<i16>>("c_int2"), None);
    let star = app
        .query("select * from vault order by id", &[])
        .await
        .unwrap();
    assert_eq!(star.len(), 3);
    assert_eq!(star[0].get::<_, i32>("c_int4"), 7_654_321);
}

async fn patients(app: &tokio_postgres::Client) {
    app.batch_execute(
        "insert into patients (id, ssn, full_name, birth_date, clinic_id) values
           (1, '111-11-1111', 'Ada Lovelace', '1815-12-10', 1),
           (2, '222-22-2222', 'Alan Turing', '1912-6-23', 2),
           (3, '333-33-3333', 'Grace Hopper', '1906-12-09', 1),
           (4, NULL, 'Nobody', NULL, 2);
         insert into claims (patient_ssn, amount) values ('111-11-1111', 10), ('111-11-1111', 5), ('333-33-3333', 7);",
    )
    .await
    .unwrap();
}

fn names(rows: &[tokio_postgres::Row]) -> Vec<String> {
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// Deterministic columns answer =, <>, IN, = ANY, IS NULL, joins within their domain and
/// GROUP BY, through the simple and the extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_lookups() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    patients(&app).await;

    let simple = app
        .simple_query("select full_name from patients where ssn = '222-22-2222'")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &simple[1] else {
        panic!("{simple:?}")
    };
    assert_eq!(r.get(0), Some("Alan Turing"));

    let q = |sql: &'static str| async move { sql };
    let by_param = app
        .query(
            q("select full_name from patients where ssn = $1").await,
            &[&"111-11-1111"],
        )
        .await
        .unwrap();
    assert_eq!(names(&by_param), ["Ada Lovelace"]);
    // A date written as 1912-6-23 matches 1912-06-23: values are canonicalised.
    let by_date = app
        .query(
            "select full_name from patients where birth_date = $1",
            &[&chrono::NaiveDate::from_ymd_opt(1912, 6, 23).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(names(&by_date), ["Alan Turing"]);
    let listed = app
        .query(
            "select full_name from patients where ssn in ('111-11-1111', $1) and ssn <> '999' order by id",
            &[&"333-33-3333"],
        )
        .await
        .unwrap();
    assert_eq!(names(&listed), ["Ada Lovelace", "Grace Hopper"]);
    let any = app
        .query(
            "select full_name from patients where ssn = any($1) order by id",
            &[&vec!["222-22-2222", "333-33-3333", "nope"]],
        )
        .await
        .unwrap();
    assert_eq!(names(&any), ["Alan Turing", "Grace Hopper"]);
    let nulls = app
        .query("select full_name from patients where ssn is null", &[])
        .await
        .unwrap();
    assert_eq!(names(&nulls), ["Nobody"]);
    let joined = app
        .query(
            "select p.ssn, sum(c.amount)::int4 from patients p join claims c on c.patient_ssn = p.ssn \
             group by p.ssn order by 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(names(&joined), ["333-33-3333", "111-11-1111"]);
    let grouped = app
        .query(
            "select patient_ssn, count(*) from claims group by patient_ssn order by 2 desc",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(grouped[0].get::<_, String>(0), "111-11-1111");
    assert_eq!(grouped[0].get::<_, i64>(1), 2);

    // Upsert on the unique deterministic column, UPDATE and DELETE by it.
    let upserted = app
        .query(
            "insert into patients (id, ssn, full_name) values (5, $1, $2) \
             on conflict (ssn) do update set full_name = excluded.full_name returning id, full_name",
            &[&"111-11-1111", &"Augusta Ada King"],
        )
        .await
        .unwrap();
    assert_eq!(upserted[0].get::<_, i32>(0), 1);
    assert_eq!(upserted[0].get::<_, String>(1), "Augusta Ada King");
    let updated = app
        .execute(
            "update patients set full_name = $1 where ssn = $2",
            &[&"Rear Admiral Hopper", &"333-33-3333"],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let deleted = app
        .execute("delete from patients where ssn = '222-22-2222'", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let all = app
        .query("select full_name from patients order by id", &[])
        .await
        .unwrap();
    assert_eq!(
        names(&all),
        ["Augusta Ada King", "Rear Admiral Hopper", "Nobody"]
    );
    // The database itself saw only ciphertext.
    assert_eq!(
        count(
            &db,
            "select count(*) from patients where position(convert_to('111-11-1111', 'UTF8') in ssn) > 0 \
             or position(convert_to('Hopper', 'UTF8') in full_name) > 0"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "select count(*) from patients where length(ssn) > 34").await,
        2
    );
}

/// Each refused construct returns its SQLSTATE; the session stays usable, and a refused
/// statement aborts the transaction as a PostgreSQL error would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_session_usable() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    patients(&app).await;
    for (sql, sqlstate) in [
        ("select id from patients where ssn like '1%'", "0A000"),
        (
            "select id from patients where birth_date > '2000-01-01'",
            "0A000",
        ),
        ("select full_name from patients order by full_name", "0A000"),
        (
            "select id from patients where full_name = 'Ada Lovelace'",
            "0A000",
        ),
        ("select upper(full_name) from patients", "0A000"),
        (
            "select full_name from patients union select full_name from patients",
            "0A000",
        ),
        (
            "insert into patients (id, ssn) values (9, lower('X'))",
            "0A000",
        ),
        (
            "insert into patients (id, birth_date) values (9, 'yesterday-ish')",
            "22007",
        ),
        ("copy patients to program 'cat'", "42501"),
        ("select * from U&\"p\\0061tients\"", "42501"),
    ] {
        let e = app.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), sqlstate, "{sql}: {e:?}");
        let db_err = e.as_db_error().unwrap();
        assert!(db_err.hint().is_some(), "{sql}: no hint");
        assert!(db_err.where_().is_none(), "{sql}: {:?}", db_err.where_());
        assert_eq!(count(&app, "select count(*) from patients").await, 4);
        // Extended protocol: the error arrives at prepare, in order.
        let e = app.prepare(sql).await.expect_err(sql);
        assert_eq!(code(&e), sqlstate, "extended {sql}");
        assert_eq!(count(&app, "select count(*) from claims").await, 3);
    }
    // A parameter that is not a valid value of the column's type.
    let e = app
        .execute(
            "update patients set birth_date = $1::text::date where id = 1",
            &[&"x"],
        )
        .await;
    assert!(e.is_err());

    // Inside a transaction the refusal aborts it: nothing written before it survives.
    app.batch_execute("begin; insert into claims (patient_ssn, amount) values ('444', 1)")
        .await
        .unwrap();
    let e = app
        .simple_query("select id from patients where ssn like '4%'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = app.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    app.batch_execute("commit").await.unwrap();
    assert_eq!(count(&db, "select count(*) from claims").await, 3);
    // Unprotected statements pass through untouched.
    assert_eq!(
        count(
            &app,
            "select count(*) from pg_class where relname = 'patients'"
        )
        .await,
        1
    );
}

/// A ciphertext copied into another column does not decrypt: the client gets a clear error
/// naming the column, never the wrong plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_ciphertext_fails_to_decrypt() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    patients(&app).await;
    db.batch_execute("update patients set full_name = ssn where id = 1")
        .await
        .unwrap();
    let e = app
        .query("select full_name from patients where id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "XX001");
    let msg = e.as_db_error().unwrap().message().to_owned();
    assert!(
        msg.contains("full_name") && msg.contains("public.patients"),
        "{msg}"
    );
    assert!(!msg.contains("111"), "{msg}");
    // Other sessions are unaffected; the row's other columns still read.
    let app = proxy.alice().await;
    let ssn: String = app
        .query_one("select ssn from patients where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ssn, "111-11-1111");
}

/// COPY FROM STDIN (text and CSV, split across arbitrary chunks) encrypts; COPY TO STDOUT
/// decrypts; a bad value aborts the COPY with 22P02 and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    use futures_util::{SinkExt, StreamExt};
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;

    // Text format through the extended protocol (tokio-postgres), in awkward chunks.
    let data = "1\t111-11-1111\tTab\\there\t1815-12-10\n2\t\\N\tBack\\\\slash\t\\N\n";
    let sink = app
        .copy_in("copy patients (id, ssn, full_name, birth_date) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(7) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 2);

    // CSV with a header, quotes and an embedded newline, through psql (simple protocol).
    let csv = "id,ssn,full_name\n3,333-33-3333,\"Hopper, Grace\"\n4,444-44-4444,\"two\nlines\"\n";
    let mut psql = std::process::Command::new("psql")
        .arg(proxy.conninfo("alice", "alice-pw"))
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg("\\copy patients (id, ssn, full_name) from stdin with (format csv, header)")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    psql.stdin
        .take()
        .unwrap()
        .write_all(csv.as_bytes())
        .unwrap();
    let out = psql.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // At rest: envelopes only.
    assert_eq!(
        count(
            &db,
            "select count(*) from patients where position(convert_to('Hopper', 'UTF8') in full_name) > 0 \
             or position(convert_to('111-11', 'UTF8') in ssn) > 0"
        )
        .await,
        0
    );
    let rows = app
        .query("select full_name from patients order by id", &[])
        .await
        .unwrap();
    assert_eq!(
        names(&rows),
        ["Tab\there", "Back\\slash", "Hopper, Grace", "two\nlines"]
    );
    let by_ssn = app
        .query("select id from patients where ssn = $1", &[&"444-44-4444"])
        .await
        .unwrap();
    assert_eq!(by_ssn[0].get::<_, i32>(0), 4);

    // COPY TO STDOUT: text, then CSV with a header, then a query.
    let read = |sql: &'static str| {
        let app = &app;
        async move {
            let stream = app.copy_out(sql).await.unwrap();
            let chunks: Vec<_> = stream.collect().await;
            let mut all = Vec::new();
            for c in chunks {
                all.extend_from_slice(&c.unwrap());
            }
            String::from_utf8(all).unwrap()
        }
    };
    assert_eq!(
        read("copy patients (id, ssn, full_name, birth_date) to stdout").await,
        "1\t111-11-1111\tTab\\there\t1815-12-10\n2\t\\N\tBack\\\\slash\t\\N\n\
         3\t333-33-3333\tHopper, Grace\t\\N\n4\t444-44-4444\ttwo\\nlines\t\\N\n"
    );
    assert_eq!(
        read("copy (select id, full_name from patients where id > 2) to stdout with (format csv, header)").await,
        "id,full_name\n3,\"Hopper, Grace\"\n4,\"two\nlines\"\n"
    );

    // A value that is not a date aborts the COPY; nothing is written; the session goes on.
    let sink = app
        .copy_in("copy patients (id, birth_date) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"9\t1999-01-01\n10\tnot a date\n",
    ))
    .await
    .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(code(&e), "22007", "{e:?}");
    assert!(!e.to_string().contains("not a date"), "{e}");
    assert_eq!(count(&app, "select count(*) from patients").await, 4);
    // COPY to a file on the server is refused (for every table).
    let e = app
        .simple_query("copy patients to '/tmp/leak.csv'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
}

/// Reads decrypt through aliases, t.*, joins, subqueries, CTEs, UNION ALL, cursors and
/// row-limited portals; INSERT ... SELECT encrypts its literals and copies within a domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_every_query_shape() {
    let (_pg, proxy, _db) = setup().await;
    let mut app = proxy.alice().await;
    patients(&app).await;
    let strings = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    for (sql, expected) in [
        (
            "select p.full_name as who from patients p where p.id = 1",
            vec!["Ada Lovelace"],
        ),
        (
            "select p.* from patients p join claims c on c.patient_ssn = p.ssn where c.amount = 7",
            vec![],
        ),
        (
            "select s.n from (select full_name as n, id from patients) s where s.id = 2",
            vec!["Alan Turing"],
        ),
        (
            "with x as (select ssn, full_name from patients) select full_name from x where ssn = '333-33-3333'",
            vec!["Grace Hopper"],
        ),
        (
            "select ssn from patients where id = 1 union all select patient_ssn from claims where amount = 7",
            vec!["111-11-1111", "333-33-3333"],
        ),
        (
            "select full_name from patients where ssn in (select patient_ssn from claims) order by id",
            vec!["Ada Lovelace", "Grace Hopper"],
        ),
    ] {
        let rows = app
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        if sql.starts_with("select p.*") {
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].get::<_, String>("full_name"), "Grace Hopper");
            assert_eq!(
                rows[0]
                    .get::<_, chrono::NaiveDate>("birth_date")
                    .to_string(),
                "1906-12-09"
            );
            continue;
        }
        assert_eq!(strings(rows), expected, "{sql}");
        // The same through the simple protocol (text format).
        let simple = app.simple_query(sql).await.unwrap();
        let texts: Vec<String> = simple
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(texts, expected, "simple {sql}");
    }

    // A cursor, fetched through the simple protocol and as a prepared FETCH.
    app.batch_execute(
        "begin; declare c cursor for select full_name, birth_date from patients order by id",
    )
    .await
    .unwrap();
    let fetched = app.simple_query("fetch 2 from c").await.unwrap();
    let texts: Vec<String> = fetched
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["1815-12-10", "1912-06-23"]);
    let rows = app.query("fetch 1 from c", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "Grace Hopper");
    app.batch_execute("commit").await.unwrap();

    // A row-limited portal: two rows at a time.
    let tx = app.transaction().await.unwrap();
    let stmt = tx
        .prepare("select full_name from patients where ssn is not null order by id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let first = tx.query_portal(&portal, 2).await.unwrap();
    let rest = tx.query_portal(&portal, 2).await.unwrap();
    assert_eq!(strings(first), ["Ada Lovelace", "Alan Turing"]);
    assert_eq!(strings(rest), ["Grace Hopper"]);
    tx.commit().await.unwrap();

    // INSERT ... SELECT: a literal is encrypted; a same-domain column is copied as is.
    app.execute(
        "insert into claims (patient_ssn, amount) select ssn, 99 from patients where full_name is not null and id = $1",
        &[&2i32],
    )
    .await
    .unwrap();
    app.execute(
        "insert into patients (id, ssn, full_name) select 10 + g, '555-55-555' || g::text, 'x' from generate_series(1, 1) g",
        &[],
    )
    .await
    .expect_err("a computed value cannot be encrypted");
    let rows = app
        .query("select patient_ssn from claims where amount = 99", &[])
        .await
        .unwrap();
    assert_eq!(strings(rows), ["222-22-2222"]);
}

/// COPY data sent before the server's CopyInResponse (asyncpg does this; the protocol allows
/// it), split anywhere and mixed with Flush and Sync, is encrypted like any other: issue 11
/// found it forwarded as plaintext. Also after a refused COPY, the data is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_before_copy_in_response_is_encrypted() {
    use common::raw::{self, Raw, msg, query};
    let (_pg, proxy, db) = setup().await;
    let rows = b"1,111-11-1111,Ann\n2,222-22-2222,\"Bob, Jr.\"\n";
    // (name, what the client sends after the COPY statement)
    let orderings: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("one message", vec![msg(b'd', rows), msg(b'c', b"")]),
        (
            "split inside a row, with Flush",
            vec![
                msg(b'd', &rows[..7]),
                msg(b'H', b""),
                msg(b'd', &rows[7..30]),
                msg(b'd', &rows[30..]),
                msg(b'c', b""),
            ],
        ),
    ];
    for (i, (name, after)) in orderings.into_iter().enumerate() {
        db.batch_execute("truncate patients").await.unwrap();
        let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
        let mut bytes = query("copy patients (id, ssn, full_name) from stdin (format csv)");
        for m in after {
            bytes.extend_from_slice(&m);
        }
        // everything in one write: the data reaches phigate before CopyInResponse exists
        r.send(&bytes).await;
        let mut seen = Vec::new();
        while let Some(m) = r.recv().await {
            seen.push(m.0);
            if m.0 == b'E' {
                panic!("{name}: {}", String::from_utf8_lossy(&m.1));
            }
            if m.0 == b'Z' {
                break;
            }
        }
        assert_eq!(seen, [b'G', b'C', b'Z'], "{name}");
        // stored as ciphertext, read back as plaintext
        let stored: Vec<Vec<u8>> = db
            .query("select ssn::bytea from patients order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stored.len(), 2, "{name}");
        assert!(
            stored
                .iter()
                .all(|s| s[0] == 1 && !s.windows(3).any(|w| w == b"111"))
        );
        let app = proxy.alice().await;
        let back: Vec<(String, String)> = app
            .query("select ssn, full_name from patients order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            back,
            [
                ("111-11-1111".to_owned(), "Ann".to_owned()),
                ("222-22-2222".to_owned(), "Bob, Jr.".to_owned())
            ],
            "{name} ({i})"
        );
    }
    // A refused COPY (an ENCODING option phigate does not handle) followed at once by its
    // data: the data never reaches the server, the client gets the refusal, the session
    // goes on.
    db.batch_execute("truncate patients").await.unwrap();
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let mut bytes = query("copy patients (id, ssn) from stdin (format csv, encoding 'LATIN1')");
    bytes.extend_from_slice(&msg(b'd', b"3,333-33-3333\n"));
    bytes.extend_from_slice(&msg(b'c', b""));
    bytes.extend_from_slice(&query("select 'after'"));
    r.send(&bytes).await;
    let mut codes = Vec::new();
    let mut rows_seen = Vec::new();
    let mut ready = 0;
    while let Some(m) = r.recv().await {
        match m.0 {
            b'E' => codes.push(raw::sqlstate(&m.1)),
            b'D' => rows_seen.push(String::from_utf8_lossy(&m.1[6..]).into_owned()),
            b'Z' => {
                ready += 1;
                if ready == 2 {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(codes, ["0A000"]);
    assert_eq!(rows_seen, ["after"]);
    assert_eq!(count(&db, "select count(*) from patients").await, 0);
}

/// Parameters with casts, as SQLAlchemy, psycopg and pgjdbc write them, in binary format
/// (tokio-postgres): ParameterDescription shows the cast's type (varchar, int4 for an int8
/// column's `$1::INTEGER` ...), the values are encrypted, lookups find them; a declared
/// type is echoed as declared (pgjdbc checks that it does not change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_on_parameters_work_and_are_described_as_written() {
    use chrono::NaiveDate;
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    let insert = app
        .prepare(
            "INSERT INTO patients (id, ssn, full_name, birth_date) \
             VALUES ($1::INTEGER, $2::VARCHAR, CAST($3 AS TEXT), $4::DATE) RETURNING id",
        )
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        [Type::INT4, Type::VARCHAR, Type::TEXT, Type::DATE]
    );
    let born = NaiveDate::from_ymd_opt(1906, 12, 9).unwrap();
    app.query(&insert, &[&1i32, &"123-45-6789", &"Grace", &born])
        .await
        .unwrap();
    let find = app
        .prepare("SELECT full_name, birth_date FROM patients WHERE ssn = $1::VARCHAR")
        .await
        .unwrap();
    assert_eq!(find.params(), [Type::VARCHAR]);
    let row = app.query_one(&find, &[&"123-45-6789"]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "Grace");
    assert_eq!(row.get::<_, NaiveDate>(1), born);
    let any = app
        .query(
            "SELECT id FROM patients WHERE ssn = ANY($1::text[])",
            &[&vec!["x", "123-45-6789"]],
        )
        .await
        .unwrap();
    assert_eq!(any.len(), 1);
    // declared types are echoed as declared
    let declared = app
        .prepare_typed("SELECT id FROM patients WHERE ssn = $1", &[Type::VARCHAR])
        .await
        .unwrap();
    assert_eq!(declared.params(), [Type::VARCHAR]);
    assert_eq!(
        app.query(&declared, &[&"123-45-6789"]).await.unwrap().len(),
        1
    );
    // a cast to a type of another meaning is refused, naming the column
    let e = app
        .prepare("SELECT id FROM patients WHERE birth_date = $1::TEXT")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42846", "{e:?}");
    // stored encrypted
    let raw: Vec<u8> = db
        .query_one("select ssn::bytea from patients where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw[0], 1);
}

/// Value input as drivers send it (node-postgres's JS Date, pgjdbc's setDate, timestamps
/// with `T`, numeric exponents, uuid spellings): accepted as PostgreSQL accepts it, and
/// canonicalised so a deterministic lookup finds the value whatever form wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_form_postgres_accepts_is_canonical() {
    let (_pg, proxy, _db) = setup().await;
    let app = proxy.alice().await;
    for (id, written) in [
        (1, "1906-12-09T00:00:00.000+00:00"),
        (2, "1815-12-10 +00"),
        (3, "1906-12-09 00:00:00"),
    ] {
        app.simple_query(&format!(
            "INSERT INTO patients (id, birth_date) VALUES ({id}, '{written}')"
        ))
        .await
        .unwrap_or_else(|e| panic!("{written}: {e:?}"));
    }
    let found = app
        .simple_query("SELECT id FROM patients WHERE birth_date = '19061209' ORDER BY id")
        .await
        .unwrap();
    let ids: Vec<String> = found
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["1", "3"]);
    let e = app
        .simple_query("INSERT INTO patients (id, birth_date) VALUES (9, '1906-13-09')")
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        "22008",
        "PostgreSQL: date/time field value out of range"
    );
    assert!(!e.to_string().contains("1906-13-09"), "{e}");
    // every type's other spellings, through the vault table
    for (col, written, read) in [
        ("c_numeric", "1.5e3", "1500"),
        (
            "c_timestamp",
            "2020-03-04T05:06:07.891",
            "2020-03-04 05:06:07.891",
        ),
        (
            "c_timestamptz",
            "2020-03-04 07:06:07+02",
            "2020-03-04 05:06:07+00",
        ),
        (
            "c_uuid",
            "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        ("c_bool", " yes ", "t"),
        ("c_date", "0044-03-15 BC", "0044-03-15 BC"),
    ] {
        app.simple_query("DELETE FROM vault").await.unwrap();
        app.simple_query(&format!(
            "INSERT INTO vault (id, {col}) VALUES (1, '{written}')"
        ))
        .await
        .unwrap_or_else(|e| panic!("{col} {written}: {e:?}"));
        let back = app
            .simple_query(&format!("SELECT {col} FROM vault"))
            .await
            .unwrap();
        let value = back.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some(read), "{col} {written}");
    }
}

/// A client in LATIN1 (legacy applications are): statements with non-ASCII text are
/// analysed and forwarded in its encoding, encrypted values are canonicalised as UTF-8 (a
/// UTF-8 client finds what a LATIN1 client wrote) and delivered in the client's encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encodings_other_than_utf8() {
    use common::raw::{self, Raw};
    let (_pg, proxy, _db) = setup().await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    // every message of one simple query: (type, body)
    let mut run = async |sql: &[u8]| {
        let mut body = sql.to_vec();
        body.push(0);
        r.send(&raw::msg(b'Q', &body)).await;
        let mut got = Vec::new();
        while let Some(m) = r.recv().await {
            let done = m.0 == b'Z';
            got.push(m);
            if done {
                break;
            }
        }
        got
    };
    let errors = |msgs: &[raw::Msg]| -> Vec<String> {
        msgs.iter()
            .filter(|m| m.0 == b'E')
            .map(|m| raw::sqlstate(&m.1))
            .collect()
    };
    let values = |msgs: &[raw::Msg]| -> Vec<Vec<u8>> {
        msgs.iter()
            .filter(|m| m.0 == b'D')
            .map(|m| m.1[6..].to_vec())
            .collect()
    };
    assert!(errors(&run(b"SET client_encoding = 'LATIN1'").await).is_empty());
    let inserted = run(
        b"INSERT INTO patients (id, ssn, full_name) VALUES (1, '\xdcn\xefcode-1', 'Jos\xe9 M\xfcller')",
    )
    .await;
    assert!(errors(&inserted).is_empty(), "{inserted:?}");
    let read = run(b"SELECT full_name FROM patients WHERE ssn = '\xdcn\xefcode-1'").await;
    assert_eq!(values(&read), [b"Jos\xe9 M\xfcller".to_vec()]);
    // an unprotected table, and a name phigate never looks at
    let plain = run(b"CREATE TEMP TABLE notes (body text); INSERT INTO notes VALUES ('r\xe9sum\xe9'); SELECT body AS \"r\xe9sum\xe9\" FROM notes").await;
    assert!(errors(&plain).is_empty(), "{plain:?}");
    assert_eq!(values(&plain), [b"r\xe9sum\xe9".to_vec()]);
    // a UTF-8 client finds the value the LATIN1 client wrote, and reads it in UTF-8
    let app = proxy.alice().await;
    let row = app
        .query_one(
            "SELECT full_name FROM patients WHERE ssn = 'Ünïcode-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "José Müller");
    // a client-only encoding cannot have its text COPY data split by phigate
    assert!(errors(&run(b"SET client_encoding = 'SJIS'").await).is_empty());
    let copy = run(b"COPY patients (id, ssn) FROM STDIN").await;
    assert_eq!(errors(&copy), ["0A000"]);
    let ok = run(b"SELECT 1").await;
    assert_eq!(values(&ok), [b"1".to_vec()]);
}

/// A statement name prepared again after SQL deallocated it (`DEALLOCATE`, `DISCARD ALL`:
/// poolers and pgjdbc's statement cache do this) is the new statement: its parameters are
/// encrypted for it, whether the Bind is pipelined behind the Parse or sent after its
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_name_prepared_again_after_deallocate_is_the_new_statement() {
    use common::raw::{self, Raw, msg, query};
    let (_pg, proxy, db) = setup().await;
    let parse = |sql: &str| {
        let mut b = b"s\0".to_vec();
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(b"\0\0\0");
        msg(b'P', &b)
    };
    let bind = |value: &[u8]| {
        let mut b = b"\0s\0\0\0\0\x01".to_vec();
        b.extend_from_slice(&(value.len() as i32).to_be_bytes());
        b.extend_from_slice(value);
        b.extend_from_slice(b"\0\0");
        msg(b'B', &b)
    };
    let run = [msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    // (the Bind pipelined behind the Parse, or sent after the Parse is answered)
    for (id, pipelined) in [(21, true), (22, false)] {
        let first = [
            parse("select id from patients where id = $1::int"),
            msg(b'S', b""),
        ];
        let insert = format!("insert into patients (id, ssn) values ({id}, $1)");
        let mut steps = vec![
            query("deallocate all"),
            first.concat(),
            query("deallocate s"),
        ];
        let ssn = format!("{id}9-99-9999");
        if pipelined {
            steps.push([parse(&insert), bind(ssn.as_bytes()), run.clone()].concat());
        } else {
            steps.push([parse(&insert), msg(b'S', b"")].concat());
            steps.push([bind(ssn.as_bytes()), run.clone()].concat());
        }
        for step in steps {
            r.send(&step).await;
            while let Some(m) = r.recv().await {
                assert_ne!(m.0, b'E', "{}", raw::sqlstate(&m.1));
                if m.0 == b'Z' {
                    break;
                }
            }
        }
        let stored: Vec<u8> = db
            .query_one(
                &format!("select ssn::bytea from patients where id = {id}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored[0], 1, "stored as an envelope");
        let app = proxy.alice().await;
        let back: String = app
            .query_one("select ssn from patients where id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(back, ssn);
    }
}

/// Every plan is cached, and a literal for a randomized column is encrypted afresh at each
/// execution: the same statement text sent twice stores two different ciphertexts (which
/// both read back), while a deterministic literal stores the same one each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_statement_encrypts_its_randomized_literals_afresh() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    let insert = "insert into patients (id, ssn, full_name, clinic_id) \
                  values (1, '123-45-6789', 'Ada Lovelace', 1)";
    let mut stored = Vec::new();
    for _ in 0..2 {
        app.batch_execute(insert)
            .await
            .expect("insert through phigate");
        let read = app
            .query("select full_name, ssn from patients", &[])
            .await
            .unwrap();
        assert_eq!(names(&read), ["Ada Lovelace"]);
        assert_eq!(read[0].get::<_, String>(1), "123-45-6789");
        let row = db
            .query_one("select full_name::bytea, ssn::bytea from patients", &[])
            .await
            .unwrap();
        stored.push((row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)));
        db.batch_execute("delete from patients").await.unwrap();
    }
    assert_ne!(
        stored[0].0, stored[1].0,
        "randomized: a fresh nonce each time"
    );
    assert_eq!(
        stored[0].1, stored[1].1,
        "deterministic: the same ciphertext"
    );
}

/// A literal for a randomized column in a statement prepared once and executed many times
/// gets a fresh nonce at each execution: phigate sends it as a hidden parameter after the
/// client's, which the client never sees (its statement describes one parameter, int4);
/// a Bind with the wrong number of values gets PostgreSQL's own error and the session
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_encrypts_its_randomized_literals_at_each_execution() {
    use common::raw::{self, Raw, msg};
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    // c_text is randomized, c_varchar deterministic
    let insert = app
        .prepare("insert into vault (id, c_text, c_varchar) values ($1, 'Ada Lovelace', 'same')")
        .await
        .expect("prepare through phigate");
    assert_eq!(insert.params(), [Type::INT4]);
    for id in [1i32, 2] {
        app.execute(&insert, &[&id]).await.expect("insert");
    }
    let back: Vec<(String, String)> = app
        .query("select c_text, c_varchar from vault order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let one = ("Ada Lovelace".to_owned(), "same".to_owned());
    assert_eq!(back, [one.clone(), one]);
    let stored = db
        .query(
            "select c_text::bytea, c_varchar::bytea from vault order by id",
            &[],
        )
        .await
        .unwrap();
    let column = |i: usize| -> Vec<Vec<u8>> { stored.iter().map(|r| r.get(i)).collect() };
    assert_ne!(
        column(0)[0],
        column(0)[1],
        "randomized: a fresh nonce each time"
    );
    assert_eq!(
        column(1)[0],
        column(1)[1],
        "deterministic: the same ciphertext"
    );
    // Parse with one parameter, Bind with none
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let parse = b"\0insert into patients (id, full_name) values ($1, 'Bo')\0\0\0".to_vec();
    let mut bytes = msg(b'P', &parse);
    bytes.extend_from_slice(&msg(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend_from_slice(&msg(b'E', b"\0\0\0\0\0"));
    bytes.extend_from_slice(&msg(b'S', b""));
    bytes.extend_from_slice(&common::raw::query("select 'after'"));
    r.send(&bytes).await;
    let mut errors = Vec::new();
    let mut ready = 0;
    while let Some(m) = r.recv().await {
        match m.0 {
            b'E' => errors.push((
                raw::sqlstate(&m.1),
                String::from_utf8_lossy(&m.1).into_owned(),
            )),
            b'Z' if ready == 1 => break,
            b'Z' => ready += 1,
            _ => {}
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "08P01");
    assert!(
        errors[0].1.contains("supplies 0 parameters") && errors[0].1.contains("requires 1"),
        "{errors:?}"
    );
    assert_eq!(count(&db, "select count(*) from patients").await, 0);
}

/// Statements sent as text that differ only in their values share one analysis (their
/// shape, see `sql::shape`): each still writes, finds and refuses by its own values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_one_shape_each_run_with_their_own_values() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    for i in 1..=12 {
        app.batch_execute(&format!(
            "insert into patients (id, ssn, full_name, birth_date, clinic_id) \
             values ({i}, '{i:03}-00-0000', 'Patient ''{i}''', '1990-1-{i}', 1)"
        ))
        .await
        .expect("insert through phigate");
    }
    for i in [12, 1, 7] {
        let rows = app
            .simple_query(&format!(
                "select full_name, birth_date from patients where ssn = '{i:03}-00-0000' and id = {i}"
            ))
            .await
            .unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(r.get(0), Some(format!("Patient '{i}'").as_str()));
        assert_eq!(r.get(1), Some(format!("1990-01-{i:02}").as_str()));
    }
    let plain = count(
        &db,
        "select count(*) from patients where full_name::bytea::text like '%Patient%'",
    )
    .await;
    assert_eq!(plain, 0, "ciphertext at rest");
    let bad = app
        .batch_execute("select id from patients where birth_date = 'no date'")
        .await
        .expect_err("refused");
    assert_eq!(code(&bad), "22007");
    for (order, want) in [("1 desc", "12"), ("1", "1")] {
        let sql = format!("select id from patients where clinic_id = 1 order by {order} limit 1");
        let rows = app.simple_query(&sql).await.unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(r.get(0), Some(want), "{sql}");
    }
}

/// A protected table whose name has capitals is found where a statement names it quoted,
/// as PostgreSQL resolves it: its values are stored as ciphertext and read as plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_with_capitals_is_protected() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    app.batch_execute("INSERT INTO \"Records\" (id, \"Note\") VALUES (1, 'seen by dr. x')")
        .await
        .unwrap();
    app.execute(
        "INSERT INTO public.\"Records\" VALUES ($1, $2)",
        &[&2i32, &"second"],
    )
    .await
    .unwrap();
    let rows = app
        .query("SELECT \"Note\" FROM \"Records\" ORDER BY id", &[])
        .await
        .unwrap();
    let notes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(notes, ["seen by dr. x", "second"]);
    let stored = db
        .query("SELECT \"Note\"::bytea FROM \"Records\" ORDER BY id", &[])
        .await
        .unwrap();
    for (row, plain) in stored.iter().zip(["seen by dr. x", "second"]) {
        let bytes: Vec<u8> = row.get(0);
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()));
    }
}

/// A cursor the client's SQL declares, described by name (psycopg's server-side cursors
/// learn the types of their FETCHes so): its description carries the protected columns'
/// declared types, as its FETCHes' do, and a cursor over an unprotected query is described
/// as PostgreSQL describes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_declared_in_sql_is_described_with_the_declared_types() {
    use common::raw::{self, Raw, msg, query};
    let (_pg, proxy, _db) = setup().await;
    let app = proxy.alice().await;
    app.batch_execute(
        "insert into patients (id, ssn, full_name, birth_date) values (1, '123-45-6789', 'Grace', '1906-12-09')",
    )
    .await
    .unwrap();
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let mut bytes = query(
        "BEGIN; DECLARE c CURSOR FOR SELECT id, ssn, full_name, birth_date FROM patients; \
         DECLARE plain CURSOR FOR SELECT 1 AS one, 'x'::bytea AS raw",
    );
    for portal in ["c", "plain"] {
        bytes.extend_from_slice(&msg(b'D', format!("P{portal}\0").as_bytes()));
    }
    bytes.extend_from_slice(&msg(b'S', b""));
    bytes.extend_from_slice(&query("FETCH ALL FROM c"));
    r.send(&bytes).await;
    let (mut types, mut rows, mut ready) = (Vec::new(), Vec::new(), 0);
    while ready < 3 {
        match r.recv().await.expect("an answer") {
            (b'T', body) => types.push(field_types(&body)),
            (b'D', body) => rows.push(String::from_utf8_lossy(&body).into_owned()),
            (b'Z', _) => ready += 1,
            (b'E', body) => panic!("error {}", raw::sqlstate(&body)),
            _ => {}
        }
    }
    // int4, then text, text, date (the domain would be bytea), then the FETCH's own
    let declared = vec![23, 25, 25, 1082];
    assert_eq!(types, [declared.clone(), vec![23, 17], declared]);
    assert!(
        rows[0].contains("Grace") && rows[0].contains("1906-12-09"),
        "{rows:?}"
    );
}

/// The type OID of each field of a RowDescription body.
fn field_types(body: &[u8]) -> Vec<u32> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut types = Vec::new();
    for _ in 0..count {
        let name_end = at + body[at..].iter().position(|b| *b == 0).unwrap();
        let oid = &body[name_end + 7..name_end + 11];
        types.push(u32::from_be_bytes([oid[0], oid[1], oid[2], oid[3]]));
        at = name_end + 19;
    }
    types
}

/// PostgreSQL prints a failing row's and a duplicate key's values in its errors: through
/// phigate those are envelopes, withheld, since the deterministic envelope of a value the
/// client chose would let anyone match it against a copy of the database. In
/// `bytea_output = 'escape'` the whole detail is withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_show_the_envelopes_of_values() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    let detail = |e: tokio_postgres::Error| {
        let d = e.as_db_error().expect("a server error");
        (
            d.code().code().to_owned(),
            d.detail().unwrap_or_default().to_owned(),
        )
    };
    app.batch_execute(
        "insert into patients (id, ssn, full_name) values (1, '123-45-6789', 'Grace')",
    )
    .await
    .unwrap();
    let stored: Vec<u8> = db
        .query_one("select ssn::bytea from patients", &[])
        .await
        .unwrap()
        .get(0);
    let hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
    let cases = [
        (
            "insert into patients (id, ssn) values (2, '123-45-6789')",
            "23505",
            "Key (ssn)=(<encrypted>) already exists.",
        ),
        (
            "insert into patients (id, ssn, full_name) values (null, '123-45-6789', 'G')",
            "23502",
            "Failing row contains (null, <encrypted>..., <encrypted>..., null, null).",
        ),
    ];
    for (sql, code, want) in cases {
        let got = detail(app.batch_execute(sql).await.unwrap_err());
        assert_eq!(got, (code.to_owned(), want.to_owned()), "{sql}");
    }
    app.batch_execute("set bytea_output = 'escape'")
        .await
        .unwrap();
    for (sql, code, _) in cases {
        let (got_code, got) = detail(app.batch_execute(sql).await.unwrap_err());
        assert_eq!(got_code, code);
        assert!(got.starts_with("(phigate withheld"), "{got}");
    }
    // directly, the detail holds the stored envelope (what the test guards against)
    let again = format!("insert into patients (id, ssn) values (2, '\\x{hex}'::bytea)");
    let direct = detail(db.batch_execute(&again).await.unwrap_err()).1;
    assert!(direct.contains(&hex), "{direct}");
    assert_eq!(count(&app, "select count(*) from patients").await, 1);
}

/// A timestamptz value written to, or compared with, a timestamp column (Django sends every
/// datetime as timestamptz) and the other way round: in a session whose TimeZone is UTC,
/// PostgreSQL keeps the UTC time, and so does phigate, for literals and for parameters; in
/// another zone both take the wall clock there; in a zone phigate cannot resolve (a POSIX
/// rule without its dates, which PostgreSQL completes with US rules) it is refused: 42846.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_convert_between_zoned_and_unzoned_in_a_utc_session() {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let (_pg, proxy, _db) = setup().await;
    let app = proxy.alice().await;
    app.batch_execute(
        "insert into vault (id, c_timestamp, c_timestamptz) \
         values (1, '2020-01-01 12:00:00+02'::timestamptz, '2020-01-01 12:00:00'::timestamp)",
    )
    .await
    .unwrap();
    let zoned: DateTime<Utc> = "2021-06-07T08:09:10.5Z".parse().unwrap();
    app.execute(
        "insert into vault (id, c_timestamp) values ($1, $2::timestamptz)",
        &[&2i32, &zoned],
    )
    .await
    .unwrap();
    let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let rows = app
        .query("select id, c_timestamp from vault order by id", &[])
        .await
        .unwrap();
    let got: Vec<(i32, NaiveDateTime)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            (1, at("2020-01-01 10:00:00.0")),
            (2, at("2021-06-07 08:09:10.5"))
        ]
    );
    let tz: DateTime<Utc> = app
        .query_one("select c_timestamptz from vault where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tz.to_rfc3339(), "2020-01-01T12:00:00+00:00");
    let found = app
        .query(
            "select id from vault where c_timestamp = '2020-01-01 11:00:00+01'::timestamptz",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // an array's elements are read as the column's type: no conversion there
    let array = app
        .query(
            "select id from vault where c_timestamp = any($1::timestamptz[])",
            &[&vec![zoned]],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&array), "42846");
    app.batch_execute("set timezone = 'Europe/Paris'")
        .await
        .unwrap();
    app.batch_execute(
        "insert into vault (id, c_timestamp) values (3, '2020-01-01 12:00:00+02'::timestamptz)",
    )
    .await
    .unwrap();
    let paris: NaiveDateTime = app
        .query_one("select c_timestamp from vault where id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(paris, at("2020-01-01 11:00:00.0"));
    app.batch_execute("set timezone = 'CET-1CEST'")
        .await
        .unwrap();
    let refused = app
        .batch_execute(
            "insert into vault (id, c_timestamp) values (4, '2020-01-01 12:00:00+02'::timestamptz)",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "42846");
}

/// Rows of a simple query as text, NULL as "NULL".
async fn texts(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let msgs = client.simple_query(sql).await.unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// A cast with a length or precision (`'abc'::varchar(2)`, `::numeric(10, 2)`,
/// `::timestamp(0)`, Django's bulk_update CASE cast to `varchar(n)`) changes the value as
/// PostgreSQL's cast does: phigate applies it, since the server sees only ciphertext.
/// Checked against the same statements on a plaintext table, directly: literals (twice in
/// one shape, the second changed by its casts), parameters, a CASE, and an overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_with_a_length_or_precision_change_values_as_postgres_casts_do() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    plain_twin(&db).await;
    let statements = [
        "insert into {t} (id, c_varchar, c_bpchar, c_numeric, c_timestamp) values (1, \
         'abcdef'::varchar(3), 'xyz'::char, '1.5'::numeric(10,2), '2020-01-01 10:00:00.0'::timestamp(0))",
        "insert into {t} (id, c_varchar, c_bpchar, c_numeric, c_timestamp) values (2, \
         'ghijkl'::varchar(3), 'uvw'::char, '2.345'::numeric(10,2), '2020-01-01 10:00:00.6'::timestamp(0))",
        "update {t} set c_varchar = (CASE WHEN (id = 1) THEN 'longer value' ELSE NULL END)::varchar(4) \
         WHERE id IN (1)",
    ];
    for sql in statements {
        app.batch_execute(&sql.replace("{t}", "vault"))
            .await
            .unwrap();
        db.batch_execute(&sql.replace("{t}", "plain"))
            .await
            .unwrap();
    }
    let at =
        chrono::NaiveDateTime::parse_from_str("2021-02-03 04:05:06.789", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
    let insert = "insert into {t} (id, c_varchar, c_timestamp) values ($1, $2::varchar(2), $3::timestamp(1))";
    for (client, t) in [(&app, "vault"), (&db, "plain")] {
        client
            .execute(&insert.replace("{t}", t), &[&3i32, &"hello", &at])
            .await
            .unwrap();
    }
    let read = "select id, c_varchar, c_bpchar, c_numeric, c_timestamp from {t} order by id";
    let through = texts(&app, &read.replace("{t}", "vault")).await;
    assert_eq!(through, texts(&db, &read.replace("{t}", "plain")).await);
    assert_eq!(
        through,
        [
            "1|long|x|1.50|2020-01-01 10:00:00",
            "2|ghi|u|2.35|2020-01-01 10:00:01",
            "3|he|NULL|NULL|2021-02-03 04:05:06.8"
        ]
    );
    // a value too large for the cast's precision: 22003, and the session goes on
    let overflow = "insert into {t} (id, c_numeric) values (4, '99.995'::numeric(4,2))";
    let direct = db
        .batch_execute(&overflow.replace("{t}", "plain"))
        .await
        .unwrap_err();
    let refused = app
        .batch_execute(&overflow.replace("{t}", "vault"))
        .await
        .unwrap_err();
    assert_eq!(
        (code(&direct), code(&refused)),
        ("22003".into(), "22003".into())
    );
    assert_eq!(count(&app, "select count(*) from vault").await, 3);
}

/// `UPDATE ... FROM (VALUES ...)`, the bulk update by key: literals (simple protocol) and
/// parameters (extended protocol, text and binary) in the VALUES rows are encrypted for
/// the columns they are assigned to, and read back as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_update_from_a_values_list_encrypts_each_row() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    patients(&app).await;
    app.batch_execute(
        "update patients as p set full_name = v.n, birth_date = v.b::date \
         from (values (1, 'Ada King', '1815-12-10'), (3, 'G. Hopper', null)) as v (i, n, b) \
         where p.id = v.i",
    )
    .await
    .unwrap();
    let n = app
        .execute(
            "update patients set ssn = v.s, full_name = v.n \
             from (values ($1::int, $2::text, $3::text), ($4::int, $5::text, $6::text)) v (i, s, n) \
             where patients.id = v.i",
            &[&2i32, &"222-00-0000", &"Turing", &4i32, &"444-00-0000", &"Somebody"],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rows = texts(
        &app,
        "select id, ssn, full_name, birth_date from patients order by id",
    )
    .await;
    assert_eq!(
        rows,
        [
            "1|111-11-1111|Ada King|1815-12-10",
            "2|222-00-0000|Turing|1912-06-23",
            "3|333-33-3333|G. Hopper|NULL",
            "4|444-00-0000|Somebody|NULL"
        ]
    );
    // a lookup by the new value finds it: the deterministic ciphertext is the column's
    assert_eq!(
        count(
            &app,
            "select count(*) from patients where ssn = '444-00-0000'"
        )
        .await,
        1
    );
    let stored = texts(
        &db,
        "select count(*) from patients where full_name::text like '%Turing%'",
    )
    .await;
    assert_eq!(stored, ["0"]);
}

/// `COALESCE(col, fallback)` of an encrypted column: the fallback (a literal, or a
/// parameter in text or binary) is encrypted for the column, and every result decrypts as
/// the column does, in text and binary results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesce_of_an_encrypted_column_reads_as_the_column() {
    let (_pg, proxy, _db) = setup().await;
    let app = proxy.alice().await;
    patients(&app).await;
    let simple = texts(
        &app,
        "select id, coalesce(full_name, 'unknown') as n, coalesce(birth_date, '2000-01-01') \
         from patients where id in (3, 4) order by id",
    )
    .await;
    assert_eq!(simple, ["3|Grace Hopper|1906-12-09", "4|Nobody|2000-01-01"]);
    let rows = app
        .query(
            "select coalesce(ssn, $1) from patients order by id",
            &[&"none"],
        )
        .await
        .unwrap();
    let ssns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ssns, ["111-11-1111", "222-22-2222", "333-33-3333", "none"]);
    let born: Vec<chrono::NaiveDate> = app
        .query(
            "select coalesce(birth_date, '1999-09-09') from patients where id = 4",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(born, [chrono::NaiveDate::from_ymd_opt(1999, 9, 9).unwrap()]);
}

/// Outcome of one statement, run directly or through phigate: the value read back, or the
/// SQLSTATE.
async fn outcome(client: &tokio_postgres::Client, sql: &str) -> Result<Option<String>, String> {
    match client.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
                _ => None,
            })
            .flatten()),
        Err(e) => Err(code(&e)),
    }
}

/// Differential: each literal written through phigate to an encrypted column reads back as
/// PostgreSQL stores it in a plaintext column of the type, or is refused with the SQLSTATE
/// PostgreSQL gives; the only other outcome allowed is phigate's documented refusal
/// (22007) of input forms it does not read (relative dates, zone abbreviations). Never both
/// accepted with different values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_back_as_postgres_stores_them() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    plain_twin(&db).await;
    const REFUSED: &[&str] = &["today", "PST", "now"];
    let cases = [
        (
            "c_jsonb",
            r#"'{"a": 1e2, "b": -0, "c": 0.10, "d": 12345678901234567890123}'"#,
        ),
        (
            "c_jsonb",
            r#"'{"b": 1, "a": {"y": [1, 2.50], "x": null}, "a": 3}'"#,
        ),
        ("c_jsonb", r#"'[-0.0, 1.0e-3, "\u00e9\n", "x\/y"]'"#),
        ("c_json", r#"'{"a" : 1e2 }'"#),
        ("c_numeric", "'1e2'"),
        ("c_numeric", "' +1.50 '"),
        ("c_numeric", "'.5'"),
        ("c_numeric", "'-0.00'"),
        ("c_numeric", "'inf'"),
        ("c_numeric", "'1_000'"),
        ("c_numeric", "-1.5"),
        ("c_int4", "' 42 '"),
        ("c_int4", "-5"),
        ("c_int4", "'0x1F'"),
        ("c_int2", "'40000'"),
        ("c_int8", "'-9223372036854775808'"),
        ("c_bool", "'OFF'"),
        ("c_bool", "'tr'"),
        ("c_date", "'epoch'"),
        ("c_date", "'2020-02-30'"),
        ("c_date", "'today'"),
        ("c_date", "'Jan 5 2020'"),
        ("c_date", "'2020.01.05'"),
        ("c_timestamp", "'2020-01-01 24:00:00'"),
        ("c_timestamp", "'2020-01-01 10:00:00.1234567'"),
        ("c_timestamp", "TIMESTAMP(0) '2020-01-01 10:00:00.6'"),
        ("c_timestamp", "'2020-01-01 10:00:00 PST'"),
        ("c_timestamptz", "'2020-01-01 10:00:00 Europe/Paris'"),
        ("c_timestamptz", "'2020-07-01 10:00:00 america/new_york'"),
        ("c_timestamptz", "'2020-03-08 02:30 America/New_York'"),
        ("c_timestamp", "'2020-07-01 10:00:00 Europe/Paris'"),
        ("c_timestamptz", "'2020-01-01 10:00:00.9999995+05:30'"),
        ("c_timestamptz", "'now'"),
        // a fraction past microseconds rounds as PostgreSQL's double does
        ("c_timestamptz", "'2020-01-05 14:48:41.6886265+00'"),
        ("c_timestamp", "'1/16/1621 22:17:10.1242065'"),
        ("c_timestamp", "'sept 11, 1728 4:14:00.7443345'"),
        ("c_timestamptz", "'Sun Jan 05 10:11:12 2020 UTC'"),
        ("c_date", "'5.1.99'"),
        ("c_date", "'05-Jan-2020'"),
        ("c_date", "'2020-01-01T'"),
        ("c_date", "'not a date'"),
        ("c_uuid", "'a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11'"),
        ("c_varchar", "'x'::char(3)"),
        ("c_text", "E'a\\tb'"),
        ("c_text", "U&'\\0041\\0042'"),
        ("c_text", "$$dollar$$"),
        ("c_text", "varchar(2) 'abc'"),
        ("c_bytea", "'\\x0A0b'"),
        ("c_bytea", "'\\xZZ'"),
        ("c_bytea", "'abc\\\\000'"),
    ];
    for (id, (col, literal)) in cases.iter().enumerate() {
        let write = |t: &str| format!("insert into {t} (id, {col}) values ({id}, {literal})");
        let read = |t: &str| format!("select {col} from {t} where id = {id}");
        let direct = match outcome(&db, &write("plain")).await {
            Ok(_) => outcome(&db, &read("plain")).await,
            Err(e) => Err(e),
        };
        let through = match outcome(&app, &write("vault")).await {
            Ok(_) => outcome(&app, &read("vault")).await,
            Err(e) => Err(e),
        };
        let documented = through.as_ref().is_err_and(|c| c == "22007")
            && REFUSED.iter().any(|r| literal.contains(r));
        assert!(
            direct == through || documented,
            "{col} {literal}: directly {direct:?}, through phigate {through:?}"
        );
    }
}

/// Dates and timestamps are read and printed in the session's DateStyle, as PostgreSQL
/// reads and prints them (plaintext columns directly, encrypted ones through phigate): a
/// date of numbers only in the style's order, text results and COPY in its format. A
/// statement of one shape is read again after DateStyle changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_follow_the_session_datestyle() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    plain_twin(&db).await;
    let mut id = 0;
    for style in [
        "SQL, MDY",
        "SQL, DMY",
        "Postgres, DMY",
        "Postgres, MDY",
        "German",
        "ISO, DMY",
    ] {
        for client in [&app, &db] {
            client
                .batch_execute(&format!("set datestyle = '{style}'"))
                .await
                .unwrap();
        }
        for (date, stamp) in [
            ("01/05/2020", "05.01.2020 10:00:00.5"),
            ("2020-12-31", "2020-07-04 00:00:00.000001"),
            ("0044-03-15 BC", "infinity"),
            ("5.1.99", "Sun Jan 05 10:00:00.5 2020"),
            ("05-Jan-2020", "January 5, 2020 10:00"),
        ] {
            id += 1;
            let write = |t: &str| {
                format!(
                    "insert into {t} (id, c_date, c_timestamp, c_timestamptz) \
                     values ({id}, '{date}', '{stamp}', '{stamp}')"
                )
            };
            app.batch_execute(&write("vault")).await.unwrap();
            db.batch_execute(&write("plain")).await.unwrap();
        }
        // a typed literal stays in the text of its statement's shape, whose plan is
        // therefore one per DateStyle order
        id += 1;
        let typed =
            |t: &str| format!("insert into {t} (id, c_date) values ({id}, date '01/05/2020')");
        app.batch_execute(&typed("vault")).await.unwrap();
        db.batch_execute(&typed("plain")).await.unwrap();
        let read =
            |t: &str| format!("select id, c_date, c_timestamp, c_timestamptz from {t} order by id");
        assert_eq!(
            texts(&app, &read("vault")).await,
            texts(&db, &read("plain")).await,
            "{style}"
        );
        let copy =
            |t: &str| format!("copy (select c_date, c_timestamp from {t} order by id) to stdout");
        assert_eq!(
            copied(&app, &copy("vault")).await,
            copied(&db, &copy("plain")).await,
            "{style}"
        );
    }
}

/// Differential: timestamptz values are printed in the session's TimeZone, and read in it
/// when written without an offset, as PostgreSQL does: IANA zones in any case, zones set by
/// number (`'+5'`, shown as `<+05>-05`) and POSIX ones (`UTC+3`), in every DateStyle
/// (ISO prints the offset, the others the zone's abbreviation); a time a clock change
/// skips or repeats takes PostgreSQL's offset; a timestamptz written to a timestamp column,
/// as a literal or a parameter, becomes its wall clock in the zone, and a timestamp
/// written to a timestamptz column is read in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamptz_follows_the_session_timezone() {
    use chrono::{DateTime, Utc};
    use tokio_postgres::types::Type;
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    plain_twin(&db).await;
    let zoned: DateTime<Utc> = "2021-06-07T08:09:10.5Z".parse().unwrap();
    let mut id = 0;
    for (zone, style) in [
        ("America/New_York", "ISO, MDY"),
        ("america/new_york", "SQL, MDY"),
        ("Europe/Paris", "German"),
        ("Asia/Kolkata", "Postgres, DMY"),
        ("+5", "ISO, MDY"),
        ("UTC+3", "SQL, DMY"),
        ("GMT", "Postgres, MDY"),
        ("UTC", "ISO, MDY"),
    ] {
        for client in [&app, &db] {
            let set = format!("set time zone '{zone}'; set datestyle = '{style}'");
            client.batch_execute(&set).await.unwrap();
        }
        for stamp in [
            "2020-03-08 02:30",
            "2020-11-01 01:30",
            "2020-07-04 12:00:00.5",
            "1800-01-01 00:00",
            "2020-01-05 10:00+02",
            "infinity",
        ] {
            id += 1;
            let write = |t: &str| {
                format!(
                    "insert into {t} (id, c_timestamp, c_timestamptz) \
                     values ({id}, '{stamp}'::timestamptz, '{stamp}'::timestamp)"
                )
            };
            app.batch_execute(&write("vault")).await.unwrap();
            db.batch_execute(&write("plain")).await.unwrap();
        }
        id += 1;
        let insert = |t: &str| format!("insert into {t} (id, c_timestamp) values ($1, $2)");
        for (client, t) in [(&app, "vault"), (&db, "plain")] {
            let typed = client
                .prepare_typed(&insert(t), &[Type::INT4, Type::TIMESTAMPTZ])
                .await
                .unwrap();
            client.execute(&typed, &[&id, &zoned]).await.unwrap();
        }
        let read = |t: &str| format!("select id, c_timestamp, c_timestamptz from {t} order by id");
        assert_eq!(
            texts(&app, &read("vault")).await,
            texts(&db, &read("plain")).await,
            "{zone} {style}"
        );
        let copy = |t: &str| format!("copy (select c_timestamptz from {t} order by id) to stdout");
        assert_eq!(
            copied(&app, &copy("vault")).await,
            copied(&db, &copy("plain")).await,
            "{zone} {style}"
        );
    }
}

/// What a COPY ... TO STDOUT sends, whole.
async fn copied(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let stream = client.copy_out(sql).await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

/// Differential: an equality lookup on a deterministic column finds what PostgreSQL's own
/// equality finds on a plaintext column, whichever spelling of the value wrote it and
/// whichever looks it up (ISO or DateStyle dates, jsonb numbers and key order, integer and
/// uuid spellings). The one documented difference, numeric scale, is not among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_find_what_postgres_equality_finds() {
    let (_pg, proxy, db) = setup().await;
    let app = proxy.alice().await;
    plain_twin(&db).await;
    let cases = [
        ("c_timestamp", "'2020-01-05 10:00:00'", "'01/05/2020 10:00'"),
        (
            "c_timestamp",
            "'Jan 5 2020 10:00:00.000'",
            "'2020-01-05T10:00:00'",
        ),
        (
            "c_jsonb",
            r#"'{"b": [1e2], "a": 1}'"#,
            r#"'{"a":1,"b":[100]}'"#,
        ),
        ("c_jsonb", r#"'{"a": -0}'"#, r#"'{"a": 0}'"#),
        ("c_int2", "' +7 '", "7"),
        ("c_int8", "-5", "'-5'"),
        ("c_bool", "'yes'", "true"),
        (
            "c_uuid",
            "'{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}'",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        ),
        ("c_varchar", "'x'", "'x'::char(3)"),
    ];
    for (id, (col, written, looked_up)) in cases.iter().enumerate() {
        for (client, t) in [(&app, "vault"), (&db, "plain")] {
            client
                .batch_execute(&format!(
                    "insert into {t} (id, {col}) values ({id}, {written})"
                ))
                .await
                .unwrap();
        }
        let find = |t: &str| format!("select count(*) from {t} where {col} = {looked_up}");
        let direct = count(&db, &find("plain")).await;
        assert!(direct > 0, "{col} {written} {looked_up}");
        assert_eq!(
            count(&app, &find("vault")).await,
            direct,
            "{col} {written} {looked_up}"
        );
    }
}

/// `plain`: the vault's twin, a plaintext column of each type, made directly.
async fn plain_twin(db: &tokio_postgres::Client) {
    let cols: Vec<String> = TYPES.iter().map(|(c, t, _)| format!("{c} {t}")).collect();
    db.batch_execute(&format!(
        "create table plain (id int primary key, {})",
        cols.join(", ")
    ))
    .await
    .unwrap();
}

/// Window functions partitioned by a deterministic encrypted column, inline and as a named
/// window of the WINDOW clause, through a real client: partitions form on ciphertext as
/// they would on the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_partition_by_a_deterministic_column() {
    let (_pg, proxy, _db) = setup().await;
    let app = proxy.alice().await;
    app.batch_execute(
        "insert into claims (id, patient_ssn, amount) values
           (1, '111', 1), (2, '222', 1), (3, '111', 2), (4, '111', 2), (5, NULL, 1)",
    )
    .await
    .unwrap();
    let inline = texts(
        &app,
        "select id, count(*) over (partition by patient_ssn), \
         row_number() over (partition by patient_ssn order by id) from claims order by id",
    )
    .await;
    let expected = ["1|3|1", "2|1|1", "3|3|2", "4|3|3", "5|1|1"];
    assert_eq!(inline, expected);
    let named = texts(
        &app,
        "select id, count(*) over w, row_number() over (w order by id) from claims \
         window w as (partition by patient_ssn) order by id",
    )
    .await;
    assert_eq!(named, expected);
    let refused = app
        .batch_execute("select id, rank() over w from claims window w as (order by patient_ssn)")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "0A000");
}
