//! Row policies in the rewrite: every reference filtered, new rows checked, literal slots
//! kept through the rewrites.

use super::*;

#[test]
fn row_policies_filter_every_reference() {
    let a = analyzer_with(ROW_POLICIES);
    let filtered = "(SELECT * FROM \"public\".\"patients\" WHERE (clinic_id = 3))";
    for (sql, wrapped) in [
        ("SELECT id FROM patients", "AS \"patients\""),
        ("SELECT p.id FROM patients AS p", "AS \"p\""),
        ("SELECT id FROM PUBLIC.Patients", "AS \"patients\""),
        (
            "SELECT id FROM \"patients\" x JOIN claims c ON c.id = x.id",
            "AS \"x\"",
        ),
        (
            "SELECT * FROM (SELECT id FROM patients) s",
            "AS \"patients\"",
        ),
        (
            "WITH s AS (SELECT id FROM patients) SELECT * FROM s",
            "AS \"patients\"",
        ),
        (
            "SELECT id FROM claims WHERE id IN (SELECT id FROM patients)",
            "AS \"patients\"",
        ),
        (
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM patients WHERE id = 1)",
            "AS \"patients\"",
        ),
        (
            "SELECT id FROM claims UNION SELECT id FROM patients",
            "AS \"patients\"",
        ),
        ("SELECT id FROM patients FOR UPDATE", "AS \"patients\""),
        (
            "DECLARE c CURSOR FOR SELECT id FROM patients",
            "AS \"patients\"",
        ),
        (
            "INSERT INTO claims (id, patient_ssn) SELECT id, ssn FROM patients",
            "AS \"patients\"",
        ),
        (
            "SELECT c.id FROM claims c, LATERAL (SELECT id FROM patients p WHERE p.id = c.id) l",
            "AS \"p\"",
        ),
    ] {
        let p = plan(&a, sql);
        assert!(
            p.sql.shown().contains(&format!("{filtered} {wrapped}")),
            "{sql}\n=> {:?}",
            p.sql
        );
        assert_eq!(p.policies, ["public.patients.own-clinic"], "{sql}");
    }
    for (sql, expected) in [
        (
            "UPDATE patients SET clinic_id = 4 WHERE id = 1",
            "WHERE (((clinic_id = 3)) AND (id = 1))",
        ),
        (
            "DELETE FROM patients",
            "DELETE FROM patients WHERE ((clinic_id = 3))",
        ),
        (
            "COPY patients (id) TO STDOUT",
            "COPY (SELECT id FROM \"public\".\"patients\" WHERE (clinic_id = 3)) TO STDOUT",
        ),
        (
            "WITH d AS (DELETE FROM patients WHERE id = 1 RETURNING id) SELECT * FROM d",
            "WHERE ((clinic_id = 3)) AND (id = 1)",
        ),
        (
            "INSERT INTO patients (id, clinic_id) VALUES (2, 3) ON CONFLICT (id) DO UPDATE SET clinic_id = 3",
            "DO UPDATE SET clinic_id = 3 WHERE (((patients.clinic_id = 3)))",
        ),
        (
            "INSERT INTO patients AS p (id, clinic_id) VALUES (2, 3) ON CONFLICT (id) DO UPDATE SET clinic_id = excluded.clinic_id WHERE p.id > 0",
            "WHERE ((((p.clinic_id = 3))) AND (p.id > 0))",
        ),
    ] {
        let p = plan(&a, sql);
        assert!(p.sql.shown().contains(expected), "{sql}\n=> {:?}", p.sql);
    }
    // policies for one role are OR-ed
    let two = analyzer_with(&format!(
        "{ROW_POLICIES}[[policy]]\nname = \"flagged\"\nroles = [\"clinician\"]\ncommands = [\"select\"]\nusing = \"id < 0\"\n"
    ));
    let p = plan(&two, "SELECT id FROM patients");
    assert!(
        p.sql.shown().contains("WHERE (clinic_id = 3) OR (id < 0))"),
        "{:?}",
        p.sql
    );
    assert_eq!(
        p.policies,
        ["public.patients.own-clinic", "public.patients.flagged"]
    );
    // billing has no policy: no rows
    let bill = subject("bill", "billing");
    match a.analyse(
        &bill,
        Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        },
        "SELECT id FROM patients",
    ) {
        Analysis::Rewrite(p) => assert!(p.sql.shown().contains("WHERE false)"), "{:?}", p.sql),
        other => panic!("{other:?}"),
    }
    // an emergency lifts the filter
    let mut emergency = subject("carol", "clinician");
    emergency.emergency = true;
    match a.analyse(
        &emergency,
        Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        },
        "SELECT id FROM patients",
    ) {
        Analysis::Pass => {}
        Analysis::Rewrite(p) => assert!(!p.sql.shown().contains("clinic_id"), "{:?}", p.sql),
        other => panic!("{other:?}"),
    }
    for sql in [
        "COPY patients FROM STDIN",
        "SELECT p FROM patients p",
        "SELECT row_to_json(p) FROM patients p",
        "SELECT count(p.*) FROM patients p",
        "SELECT array_agg(p.*) FROM patients p",
        "SELECT pg_sleep(1) FROM patients",
    ] {
        let r = refused(&a, sql);
        assert!(["0A000", "42501"].contains(&r.code), "{sql}: {r:?}");
    }
}

/// Each new row meets the role's `check` in the rewrite: INSERT through its source, UPDATE
/// and ON CONFLICT DO UPDATE with the assigned values in place of the old ones.
#[test]
fn row_policy_checks_reach_new_rows() {
    let a = analyzer_with(ROW_POLICIES);
    let check = "phigate.check_row(";
    for (sql, expected) in [
        (
            "UPDATE patients SET clinic_id = 4 WHERE id = 1",
            "WHERE (((clinic_id = 3)) AND (id = 1)) AND (CASE WHEN ((clinic_id = 3)) AND (id = 1) \
             THEN phigate.check_row(((4) = 3), E'public.patients.own-clinic') ELSE false END)",
        ),
        (
            "INSERT INTO patients (id, clinic_id) VALUES (1, 4), (2, $1)",
            "INSERT INTO patients (\"id\", \"clinic_id\") SELECT phigate_new.\"id\"::INTEGER, \
             phigate_new.\"clinic_id\"::INTEGER FROM (VALUES ((1)::INTEGER, (4)::INTEGER), \
             ((2)::INTEGER, ($1)::INTEGER)) AS phigate_new (\"id\", \"clinic_id\") \
             WHERE phigate.check_row((phigate_new.clinic_id = 3), E'public.patients.own-clinic')",
        ),
        (
            "INSERT INTO patients (id, clinic_id) VALUES (DEFAULT, 3)",
            "FROM (VALUES ((NULL)::INTEGER, (3)::INTEGER))",
        ),
        (
            "INSERT INTO patients AS p (id, clinic_id) VALUES (2, 3) ON CONFLICT (id) DO UPDATE SET clinic_id = excluded.clinic_id",
            "THEN phigate.check_row(((excluded.clinic_id) = 3), E'public.patients.own-clinic') ELSE false END)",
        ),
        (
            "INSERT INTO patients (id, clinic_id) SELECT id, 3 FROM patients WHERE id = 1 RETURNING id",
            "AS phigate_new (\"id\", \"clinic_id\") WHERE phigate.check_row(",
        ),
    ] {
        let p = plan(&a, sql);
        assert!(p.sql.shown().contains(expected), "{sql}\n=> {:?}", p.sql);
        assert!(p.sql.shown().contains(check), "{sql}");
    }
    for (sql, why) in [
        (
            "INSERT INTO patients (id) VALUES (1)",
            "must give column clinic_id",
        ),
        (
            "INSERT INTO patients SELECT 1, NULL, NULL, NULL, 3",
            "without a column list",
        ),
        ("INSERT INTO patients DEFAULT VALUES", "column list"),
        (
            "UPDATE patients SET (clinic_id, id) = (SELECT 3, 1)",
            "tuple",
        ),
    ] {
        let e = refused(&a, sql);
        assert!(e.message.contains(why), "{sql}: {}", e.message);
    }
    // a role that bypasses row policies is not checked
    let bill = a.analyse(
        &subject("bill", "billing"),
        Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        },
        "INSERT INTO patients (id, clinic_id) VALUES (1, 4)",
    );
    match bill {
        Analysis::Rewrite(p) => assert!(!p.sql.shown().contains(check), "{:?}", p.sql),
        Analysis::Refuse(r) => assert!(r.message.contains("no row policy admits"), "{r:?}"),
        other => panic!("{other:?}"),
    }
}

/// Rewrites under row policies print parts of the statement and parse them again (a
/// VALUES list wrapped for its row check, a WHERE clause copied into the check): the
/// literals' slots survive, and a repeated one stays one literal.
#[test]
fn literal_slots_survive_the_row_policy_rewrites() {
    let a = analyzer_with(ROW_POLICIES);
    for (sql, literals) in [
        (
            "INSERT INTO patients (id, ssn, full_name, clinic_id) VALUES (1, '111-22-3333', 'Ada', 3), (2, '222-22-3333', NULL, 3) RETURNING id",
            3,
        ),
        (
            "INSERT INTO patients (id, ssn, clinic_id) SELECT 1, '111-22-3333', 3",
            1,
        ),
        (
            "UPDATE patients SET ssn = '111-22-3333', clinic_id = 3 WHERE ssn = '999-99-9999'",
            2,
        ),
        (
            "INSERT INTO patients (id, ssn, clinic_id) VALUES (1, '111-22-3333', 3) ON CONFLICT (id) DO UPDATE SET ssn = '111-22-3334'",
            2,
        ),
        ("DELETE FROM patients WHERE ssn IN ('1', '2')", 2),
        (
            "WITH x AS (INSERT INTO patients (id, ssn, clinic_id) VALUES (1, '111-22-3333', 3) RETURNING id) SELECT * FROM x",
            1,
        ),
    ] {
        let p = plan(&a, sql);
        assert_eq!(p.sql.literals().len(), literals, "{sql}");
        assert!(p.sql.slots().len() >= literals, "{sql}");
        assert!(!p.sql.text().contains("-33"), "{sql}");
    }
    // an escape that prints as a NUL would cut the statement short upstream: refused
    let r = refused(&a, "SELECT id FROM patients WHERE length(E'a\\x00b') = 3");
    assert_eq!(r.code, "0A000", "{r:?}");
}
