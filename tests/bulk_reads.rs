//! The bulk-read guard against a real PostgreSQL: a role's cap on the rows one statement
//! returns (PostgreSQL stops the statement in protocol order, before any row), its hourly
//! budget shared by the user's sessions, break-glass lifting both, and what the audit log
//! and the metrics say of each stop.

mod common;

use common::{Options, Pg, Proxy, Setup, audit_cli, code};
use futures_util::StreamExt;
use tokio_postgres::SimpleQueryMessage;

const PATIENTS: &str = r#"
[table]
name = "public.patients"

[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext", analyst = "plaintext" }
"#;

const ROLES: &str = r#"
[roles.clinician]
[roles.nurse_station]
[roles.analyst]
max_rows = 3
max_rows_per_hour = 6
break_glass = ["analyst"]
"#;

struct World {
    _pg: Pg,
    proxy: Proxy,
}

async fn world() -> World {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute(
        "create table patients (id int primary key, ssn phigate_encrypted);
         grant select, insert, update, delete on patients to svc_scram;",
    )
    .await
    .unwrap();
    let setup = Setup::new(
        &pg,
        &Options {
            roles: ROLES,
            tables: &[("patients.toml", PATIENTS)],
            session: "[policies]\nnative = \"apply\"",
            ..Options::default()
        },
    );
    setup.upstream_line("admin_user = \"postgres\"");
    let users = setup.dir.path().join("policies/users.toml");
    phigate::policy::add_user(&users, "ann", "analyst", "ann-pw").unwrap();
    let proxy = Proxy::with_setup(setup).await;
    proxy
        .alice()
        .await
        .batch_execute(
            "insert into patients values (1, '111-11-1111'), (2, '222-22-2222'), \
             (3, '333-33-3333'), (4, '444-44-4444'), (5, '555-55-5555')",
        )
        .await
        .unwrap();
    World { _pg: pg, proxy }
}

/// The rows of a simple query, or the error's SQLSTATE and message.
async fn simple(c: &tokio_postgres::Client, sql: &str) -> Result<usize, (String, String)> {
    match c.simple_query(sql).await {
        Ok(m) => Ok(m
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count()),
        Err(e) => Err((
            code(&e),
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default(),
        )),
    }
}

fn sqlstate(r: Result<usize, (String, String)>) -> String {
    r.expect_err("the statement should fail").0
}

/// One statement over the cap is stopped whole, in every form a read takes, and the
/// session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_over_its_cap_is_stopped_and_the_next_statement_works() {
    let w = world().await;
    let ann = w.proxy.connect("ann", "ann-pw").await.unwrap();
    assert_eq!(
        simple(&ann, "SELECT id FROM patients WHERE id <= 3").await,
        Ok(3)
    );
    let (state, message) = simple(&ann, "SELECT id, ssn FROM patients")
        .await
        .unwrap_err();
    assert_eq!(state, "54000");
    assert!(message.contains("more than 3 rows"), "{message}");
    assert_eq!(simple(&ann, "SELECT 1").await, Ok(1));

    // the extended protocol: decrypted under the cap, stopped over it
    let two = ann
        .query(
            "SELECT ssn FROM patients WHERE id <= $1 ORDER BY id",
            &[&2i32],
        )
        .await
        .unwrap();
    let ssns: Vec<String> = two.iter().map(|r| r.get(0)).collect();
    assert_eq!(ssns, ["111-11-1111", "222-22-2222"]);
    let over = ann
        .query("SELECT ssn FROM patients WHERE id <= $1", &[&5i32])
        .await
        .unwrap_err();
    assert_eq!(code(&over), "54000");

    // in a transaction the stop aborts it, as any failed statement does
    ann.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        sqlstate(
            simple(&ann, "DECLARE c CURSOR FOR SELECT id FROM patients")
                .await
                .and(simple(&ann, "FETCH 1 FROM c").await)
        ),
        "54000"
    );
    assert_eq!(sqlstate(simple(&ann, "SELECT 1").await), "25P02");
    ann.batch_execute("ROLLBACK").await.unwrap();

    // COPY TO copies no more than a SELECT returns
    // (tokio-postgres's stream does not end after an error: read up to the first one)
    let copied = match ann.copy_out("COPY patients (id) TO STDOUT").await {
        Ok(stream) => {
            let mut stream = std::pin::pin!(stream);
            let mut failed = None;
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    failed = Some(e);
                    break;
                }
            }
            failed
        }
        Err(e) => Some(e),
    };
    assert_eq!(code(&copied.expect("COPY is stopped")), "54000");
    assert_eq!(simple(&ann, "SELECT 1").await, Ok(1));

    // a user whose role has no cap reads everything
    assert_eq!(
        simple(&w.proxy.alice().await, "SELECT id FROM patients").await,
        Ok(5)
    );
    let stops = "phigate_row_cap_stops_total{cap=\"statement\",role=\"analyst\"}";
    assert_eq!(w.proxy.metric(stops).await, 4.0);
}

/// The hourly budget counts the rows a user read in all sessions; once it is spent, reads
/// of protected tables are refused (other statements run), and break-glass lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_budget_is_shared_and_break_glass_lifts_it() {
    let w = world().await;
    let ann = w.proxy.connect("ann", "ann-pw").await.unwrap();
    let other = w.proxy.connect("ann", "ann-pw").await.unwrap();
    let lookup = other
        .prepare("SELECT id FROM patients WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(
        simple(&ann, "SELECT id FROM patients WHERE id <= 3").await,
        Ok(3)
    );
    assert_eq!(other.query(&lookup, &[&4i32]).await.unwrap().len(), 1);
    assert_eq!(
        simple(&ann, "SELECT id FROM patients WHERE id <= 2").await,
        Ok(2)
    );
    // 6 of 6 read: both sessions are refused, in both protocols
    let (state, message) = simple(&ann, "SELECT id FROM patients WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(state, "54000");
    assert!(message.contains("max_rows_per_hour"), "{message}");
    let refused = other.query(&lookup, &[&5i32]).await.unwrap_err();
    assert_eq!(code(&refused), "54000");
    assert_eq!(simple(&other, "SELECT 1").await, Ok(1));
    assert_eq!(
        w.proxy
            .metric("phigate_row_cap_stops_total{cap=\"hour\",role=\"analyst\"}")
            .await,
        2.0
    );

    simple(&ann, "SET phigate.break_glass = 'registry audit'")
        .await
        .unwrap();
    assert_eq!(simple(&ann, "SELECT id FROM patients").await, Ok(5));

    // the audit log: each stop is recorded as capped, with its table and SQLSTATE
    let dir = w.proxy.setup.dir.path().join("audit");
    let lifted = |r: &phigate::audit::Record| {
        r.statement.as_deref() == Some("SELECT id FROM patients") && r.break_glass.is_some()
    };
    let records = common::audit_records(&dir, |all| all.iter().any(lifted)).await;
    let capped: Vec<_> = records
        .iter()
        .filter(|r| r.decision == Some(phigate::audit::Decision::Capped))
        .collect();
    assert_eq!(capped.len(), 2, "{capped:?}");
    for r in &capped {
        assert_eq!(r.sqlstate.as_deref(), Some("54000"));
        assert_eq!(r.tables, ["public.patients"]);
    }
    let found = audit_cli("search", &dir, &["--decision", "capped"]);
    assert_eq!(found.lines().count(), 2, "{found}");
    assert!(
        records.iter().any(lifted),
        "the read under break-glass is marked"
    );
}
