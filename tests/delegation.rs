//! Delegated end users against a real PostgreSQL: a pooled service login names the person
//! behind each statement (a sqlcommenter comment, the application_name, or SET
//! phigate.end_user), and that person's column outcomes and row policies apply, in the
//! rewrite and natively; the audit log names both; a non-delegating user names no one.

mod common;

use common::{Options, Pg, Proxy, Setup, code};
use tokio_postgres::SimpleQueryMessage;

const PATIENTS: &str = r#"
[table]
name = "public.patients"

[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext" }

[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext", nurse_station = "plaintext" }

[[policy]]
name = "own-clinic"
roles = ["clinician", "nurse_station"]
commands = ["all"]
using = "clinic_id = :user.clinic_id"
check = "clinic_id = :user.clinic_id"
"#;

const ROLES: &str = "[roles.clinician]\n[roles.nurse_station]\n[roles.app_service]\nbreak_glass = [\"app_service\"]\n";

const USERS: &str = r#"
[users."dr.smith"]
role = "clinician"
auth = "delegated"
attributes = { clinic_id = 3 }

[users."nurse.joy"]
role = "nurse_station"
auth = "delegated"
attributes = { clinic_id = 4 }
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
        "create table patients (id int primary key, clinic_id int not null,
                                ssn phigate_encrypted, full_name phigate_encrypted);
         grant select, insert, update, delete on patients to svc_scram;
         create view patients_seen with (security_invoker = true) as select id from patients;
         grant select on patients_seen to svc_scram;",
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
    for (name, delegate) in [
        (
            "ehr_app",
            "{ comment = \"db_user\", application_name = \"ehr:{user}\", set = true }",
        ),
        (
            "strict_app",
            "{ comment = \"db_user\", without_end_user = \"refuse\" }",
        ),
    ] {
        phigate::policy::add_user(&users, name, "app_service", "app-pw").unwrap();
        let text = std::fs::read_to_string(&users).unwrap();
        let header = format!("[users.{name}]\n");
        let text = text.replace(&header, &format!("{header}delegate = {delegate}\n"));
        std::fs::write(&users, text).unwrap();
    }
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(USERS);
    std::fs::write(&users, text).unwrap();
    setup.attributes("alice", "{ clinic_id = 3 }");
    setup.attributes("nurse", "{ clinic_id = 4 }");
    let proxy = Proxy::with_setup(setup).await;
    db.batch_execute(
        "set row_security = off;
         insert into patients (id, clinic_id) values (1, 3), (2, 3), (3, 4)",
    )
    .await
    .unwrap();
    let alice = proxy.alice().await;
    for (id, ssn, name) in [(1, "111", "Ann"), (2, "222", "Bob")] {
        alice
            .execute(
                "update patients set ssn = $2, full_name = $3 where id = $1",
                &[&id, &ssn, &name],
            )
            .await
            .unwrap();
    }
    let nurse = proxy.connect("nurse", "nurse-pw").await.unwrap();
    nurse
        .execute("update patients set full_name = 'Cat' where id = 3", &[])
        .await
        .unwrap();
    World { _pg: pg, proxy }
}

/// Every value of every row of a simple query (NULL as "-"), or the error's SQLSTATE.
async fn simple(c: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let messages = c.simple_query(sql).await.map_err(|e| code(&e))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("-").to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect())
}

async fn connect(proxy: &Proxy, user: &str, app: &str) -> tokio_postgres::Client {
    let conninfo = format!("{} application_name={app}", proxy.conninfo(user, "app-pw"));
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A comment names the end user of one statement: their rows (in the rewrite and in
/// PostgreSQL's own row security, seen through a view phigate does not rewrite) and their
/// columns; without one, the service's own role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_users_named_in_comments_see_exactly_their_rows_and_columns() {
    let w = world().await;
    let app = connect(&w.proxy, "ehr_app", "ehr-web").await;
    let smith = "/*db_user='dr.smith',route='%2Fchart'*/";
    let joy = "/*db_user='nurse.joy'*/";
    let q = |sql: &str, tag: &str| format!("{sql} {tag}");
    let sql = "SELECT id, ssn, full_name FROM patients ORDER BY id";
    assert_eq!(
        simple(&app, &q(sql, smith)).await.unwrap(),
        ["1|111|Ann", "2|222|Bob"]
    );
    let sql = "SELECT id, full_name FROM patients ORDER BY id";
    assert_eq!(simple(&app, &q(sql, joy)).await.unwrap(), ["3|Cat"]);
    assert_eq!(
        simple(&app, &q("SELECT ssn FROM patients", joy))
            .await
            .unwrap_err(),
        "42501"
    );
    // the database's own layer: a view phigate passes through untouched
    let seen = "SELECT count(*) FROM patients_seen";
    assert_eq!(simple(&app, &q(seen, smith)).await.unwrap(), ["2"]);
    assert_eq!(simple(&app, &q(seen, joy)).await.unwrap(), ["1"]);
    // no end user: the service's own role, which no policy names and which reads no PHI
    assert_eq!(simple(&app, seen).await.unwrap(), ["0"]);
    assert_eq!(
        simple(&app, "SELECT id FROM patients").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        simple(&app, "SELECT full_name FROM patients")
            .await
            .unwrap_err(),
        "42501"
    );
    // the extended protocol, in a transaction that switches end users
    app.batch_execute("BEGIN").await.unwrap();
    let rows = app
        .query(
            &q(
                "SELECT full_name FROM patients WHERE id > $1 ORDER BY id",
                smith,
            ),
            &[&0i32],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["Ann", "Bob"]);
    let rows = app.query(&q(seen, joy), &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    app.batch_execute("COMMIT").await.unwrap();
    // pipelined: both queries are sent before either is answered
    let (first, second) = (q(seen, smith), q(seen, joy));
    let (a, b) = futures_util::join!(app.query(&first, &[]), app.query(&second, &[]));
    let counts = [a.unwrap(), b.unwrap()].map(|rows| rows[0].get::<_, i64>(0));
    assert_eq!(counts, [2, 1]);
    // an unknown end user is refused; a service that must name one is refused without
    assert_eq!(
        simple(&app, &q(seen, "/*db_user='mallory'*/"))
            .await
            .unwrap_err(),
        "42501"
    );
    let strict = connect(&w.proxy, "strict_app", "x").await;
    assert_eq!(simple(&strict, seen).await.unwrap_err(), "42501");
    assert_eq!(simple(&strict, &q(seen, smith)).await.unwrap(), ["2"]);

    // the audit log names the end user, their role and the service
    let dir = w.proxy.setup.dir.path().join("audit");
    let ours = |r: &phigate::audit::Record| {
        r.statement
            .as_deref()
            .is_some_and(|s| s.contains("ssn, full_name"))
    };
    let records = common::audit_records(&dir, |all| all.iter().any(ours)).await;
    let r = records.iter().find(|r| ours(r)).expect("recorded");
    assert_eq!(
        (r.user.as_deref(), r.role.as_deref(), r.service.as_deref()),
        (Some("dr.smith"), Some("clinician"), Some("ehr_app"))
    );
    let found = common::audit_cli("search", &dir, &["--user", "nurse.joy"]);
    assert!(found.contains("nurse.joy@ehr_app"), "{found}");
}

/// The application_name names the end user of the session until it changes; a prepared
/// statement is planned again for the new end user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_and_set_name_the_end_user_and_prepared_statements_follow() {
    let w = world().await;
    let app = connect(&w.proxy, "ehr_app", "ehr:nurse.joy").await;
    let stmt = app
        .prepare("SELECT id, full_name FROM patients ORDER BY id")
        .await
        .unwrap();
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    assert_eq!(ids(app.query(&stmt, &[]).await.unwrap()), [3]);
    app.batch_execute("SET application_name = 'ehr:dr.smith'")
        .await
        .unwrap();
    assert_eq!(ids(app.query(&stmt, &[]).await.unwrap()), [1, 2]);
    assert_eq!(
        simple(&app, "SELECT count(*) FROM patients_seen")
            .await
            .unwrap(),
        ["2"]
    );

    // SET phigate.end_user outranks the application_name, until RESET or DISCARD ALL
    app.batch_execute("SET phigate.end_user = 'nurse.joy'")
        .await
        .unwrap();
    assert_eq!(ids(app.query(&stmt, &[]).await.unwrap()), [3]);
    app.batch_execute("RESET phigate.end_user").await.unwrap();
    assert_eq!(ids(app.query(&stmt, &[]).await.unwrap()), [1, 2]);
    app.batch_execute("SET phigate.end_user = 'nurse.joy'")
        .await
        .unwrap();
    app.batch_execute("DISCARD ALL").await.unwrap();
    // DISCARD ALL also ends the application_name set by SET: back to the start-up one
    assert_eq!(
        simple(&app, "SELECT count(*) FROM patients_seen")
            .await
            .unwrap(),
        ["1"]
    );
    assert_eq!(
        simple(&app, "SET phigate.end_user = 'mallory'; SELECT 1")
            .await
            .unwrap_err(),
        "0A000"
    );

    // no emergency in a delegating service's session: it would outlast the end user
    let service_alone = connect(&w.proxy, "ehr_app", "ehr-batch").await;
    assert_eq!(
        simple(&service_alone, "SET phigate.break_glass = 'code blue'")
            .await
            .unwrap_err(),
        "0A000"
    );

    // a user who delegates nothing names no one: the SET is refused, a comment is a comment
    let alice = w.proxy.alice().await;
    assert_eq!(
        simple(&alice, "SET phigate.end_user = 'nurse.joy'")
            .await
            .unwrap_err(),
        "42501"
    );
    assert_eq!(
        simple(
            &alice,
            "SELECT id FROM patients ORDER BY id /*db_user='nurse.joy'*/"
        )
        .await
        .unwrap(),
        ["1", "2"]
    );
}
