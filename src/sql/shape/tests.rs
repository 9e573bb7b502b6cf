use std::sync::Arc;

use super::*;
use crate::protocol::value::DateOrder;
use crate::sql::SearchPath;
use crate::sql::tests::{analyzer, plan};

fn shape(sql: &str) -> Option<String> {
    of(sql).map(|s| s.text)
}

#[test]
fn value_literals_become_parameters_and_the_rest_stays() {
    for (sql, want) in [
        (
            "SELECT ssn FROM patients WHERE ssn = '1-2' AND id=42",
            "SELECT ssn FROM patients WHERE ssn = $1 AND id=$2",
        ),
        (
            "INSERT INTO patients VALUES (7, 'it''s', 'b') RETURNING id;",
            "INSERT INTO patients VALUES ($1, $2, $3) RETURNING id;",
        ),
        (
            "select * from patients where id in (1, 2) and age >= 3.5 order by 2, 1 limit 10",
            "select * from patients where id in ($1, 2) and age >= $2 order by 2, 1 limit 10",
        ),
        (
            "WITH x AS (SELECT 1) SELECT * FROM patients WHERE d = DATE '2020-01-01' AND n = 'x'",
            "WITH x AS (SELECT 1) SELECT * FROM patients WHERE d = DATE '2020-01-01' AND n = $1",
        ),
        (
            "UPDATE patients SET n = E'a\\'b', m = 'c\\d', k = -5, j = 1e3, i = 'ok' WHERE id = 1",
            "UPDATE patients SET n = E'a\\'b', m = 'c\\d', k = -5, j = 1e3, i = $1 WHERE id = $2",
        ),
    ] {
        assert_eq!(shape(sql).as_deref(), Some(want), "{sql}");
    }
}

#[test]
fn only_single_data_statements_with_a_value_and_no_parameters_have_a_shape() {
    for sql in [
        "SELECT * FROM patients ORDER BY 2",
        "SELECT * FROM patients WHERE id = $1 AND ssn = 'x'",
        "SELECT * FROM patients WHERE id = 1; SELECT 2",
        "SET search_path = 'x'",
        "(SELECT * FROM patients WHERE id = 1)",
        "SELECT * FROM patients WHERE ssn = 'unterminated",
        "COPY patients FROM STDIN WITH (DELIMITER ',')",
        "",
    ] {
        assert_eq!(shape(sql), None, "{sql}");
    }
}

/// The plan a statement gets from an analyser that has not seen its shape.
fn fresh(sql: &str) -> Arc<Plan> {
    plan(&analyzer(), sql)
}

#[test]
fn a_shape_seen_once_serves_its_other_statements_with_their_own_values() {
    let a = analyzer();
    for (first, second) in [
        (
            "SELECT id, ssn FROM patients WHERE ssn = '111-22-3333' AND id = 1",
            "SELECT id, ssn FROM patients WHERE ssn = '999-88-7777' AND id = 2",
        ),
        (
            "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES (1, '111-22-3333', 'Ada', '1990-1-2')",
            "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES (2, '999-88-7777', 'Grace O''Hara', '1991-03-04')",
        ),
        (
            "UPDATE patients SET full_name = 'Ada' WHERE ssn = '111-22-3333'",
            "UPDATE patients SET full_name = 'Bea' WHERE ssn = '999-88-7777'",
        ),
        (
            "DELETE FROM patients WHERE birth_date = '1990-01-02'",
            "DELETE FROM patients WHERE birth_date = '1991-3-4'",
        ),
    ] {
        let p1 = plan(&a, first);
        assert!(same(&p1, &fresh(first)), "{first}");
        let p2 = plan(&a, second);
        assert!(same(&p2, &fresh(second)), "{second}: {:?}", p2.sql);
        assert!(!Arc::ptr_eq(&p1, &p2));
        // the shape's plan was used: the text is not in the cache by text
        let key = (
            Arc::<str>::from("carol"),
            false,
            (
                Some(crate::protocol::zone::Zone::UTC),
                true,
                DateOrder::Mdy,
                crate::sql::SearchPath::Default,
            ),
            Box::<str>::from(second),
        );
        assert!(a.cache.get(&key).is_none(), "{second}");
    }
}

#[test]
fn a_shape_that_passes_passes_for_every_value() {
    let a = analyzer();
    let who = crate::sql::Subject {
        user: Arc::from("carol"),
        role: Arc::from("clinician"),
        emergency: false,
    };
    for sql in [
        "SELECT patients FROM notes WHERE patients = 1",
        "SELECT patients FROM notes WHERE patients = 2",
    ] {
        assert!(matches!(
            a.analyse(&who, Context::default(), sql),
            Analysis::Pass
        ));
    }
}

#[test]
fn a_value_that_does_not_fit_its_column_is_refused_as_before() {
    let a = analyzer();
    plan(
        &a,
        "SELECT id FROM patients WHERE birth_date = '1990-01-02'",
    );
    let ctx = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    let who = crate::sql::Subject {
        user: Arc::from("carol"),
        role: Arc::from("clinician"),
        emergency: false,
    };
    let bad = "SELECT id FROM patients WHERE birth_date = 'not a date'";
    assert!(
        matches!(a.analyse(&who, ctx, bad), Analysis::Refuse(r) if r.code == "22007"),
        "{bad}"
    );
}

#[test]
fn a_shape_whose_plan_differs_from_its_statements_is_not_used() {
    let a = analyzer();
    let (sql, shape) = {
        let sql = "SELECT ssn FROM patients WHERE ssn = '1' AND id = 1";
        (sql, of(sql).expect("a shape"))
    };
    let ctx = Context::default();
    let own = Analysis::Rewrite(fresh(sql));
    let other = outcome_of(&a, "SELECT ssn FROM patients WHERE ssn = $1 AND id = 2");
    assert!(matches!(
        Shaped::judge(other, &own, (sql, &shape, ctx)),
        Shaped::Unfit
    ));
    let template = outcome_of(&a, &shape.text);
    assert!(matches!(
        Shaped::judge(template, &own, (sql, &shape, ctx)),
        Shaped::Plan(_)
    ));
    let refused = Analysis::Refuse(Arc::new(Refusal::syntax("no")));
    let template = outcome_of(&a, &shape.text);
    assert!(matches!(
        Shaped::judge(template, &refused, (sql, &shape, ctx)),
        Shaped::Unfit
    ));
}

/// `sql` analysed as a shape's text is (a plan, or none).
fn outcome_of(a: &crate::sql::Analyzer, sql: &str) -> Result<Option<Plan>, Refusal> {
    let p = plan(a, sql);
    Ok(Some(Plan {
        sql: Sql::from_parts(
            p.sql.text().to_owned(),
            p.sql.literals().to_vec(),
            p.sql.slots().to_vec(),
        ),
        params: p.params.clone(),
        arity: p.arity,
        param_casts: p.param_casts.clone(),
        tables: p.tables.clone(),
        columns: p.columns.clone(),
        policies: p.policies.clone(),
        outputs: p.outputs.clone(),
        counted: p.counted,
        subject: p.subject.clone(),
        copy: None,
    }))
}

/// Statements of every kind the walker handles (row policies, caps, joins, CTEs, writes,
/// refusals), each with its values.
const STATEMENTS: &[&str] = &[
    "SELECT id, ssn FROM patients WHERE ssn = '123-45-6789'",
    "SELECT id FROM patients WHERE birth_date = '2020-1-1' AND clinic_id = 3",
    "select ssn from PATIENTS p where p.ssn in ('123-45-6789', '222-33-4444')",
    "SELECT p.id, c.amount FROM patients p JOIN claims c ON c.patient_ssn = p.ssn WHERE c.amount > 10",
    "SELECT id FROM patients WHERE ssn LIKE '1%'",
    "SELECT id FROM patients WHERE birth_date > '2000-01-01'",
    "SELECT id FROM patients WHERE full_name = 'Ada'",
    "SELECT ssn FROM patients ORDER BY 1",
    "SELECT id, ssn FROM patients WHERE id = 4 ORDER BY 2, 1 LIMIT 5",
    "SELECT id FROM patients WHERE id = 1 LIMIT 900",
    "INSERT INTO patients (birth_date) VALUES ('not a date')",
    "INSERT INTO patients (id, ssn, full_name, birth_date) VALUES (1, '111-22-3333', 'Ada', '1990-05-06'), (2, NULL, 'Bob', '1991-1-2') RETURNING id, ssn",
    "WITH x AS (SELECT id, ssn AS s FROM patients) SELECT s FROM x WHERE s = '111'",
    "SELECT id FROM patients WHERE ssn IN (SELECT patient_ssn FROM claims WHERE patient_ssn <> '1') AND id > 2",
    "INSERT INTO patients (id, ssn) SELECT 7, '777' FROM generate_series(1, 1)",
    "INSERT INTO claims (id, patient_ssn) VALUES (1, NULL)",
    "SELECT id FROM patients WHERE birth_date = '2020-01-01'::date AND ssn = 'x'::varchar",
    "SELECT id FROM patients WHERE birth_date = '2020-01-01'::text",
    "UPDATE patients SET clinic_id = 4, ssn = '999-88-7777' WHERE id = 1",
    "DELETE FROM patients WHERE ((clinic_id = 3)) AND ssn = '1'",
    "WITH d AS (DELETE FROM patients WHERE id = 1 RETURNING id) SELECT * FROM d",
    "INSERT INTO patients (id, clinic_id) VALUES (2, 3) ON CONFLICT (id) DO UPDATE SET clinic_id = 3",
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM patients WHERE id = 1 AND ssn = '5')",
    "SELECT c.id FROM claims c, LATERAL (SELECT id FROM patients p WHERE p.id = c.id AND p.ssn = '1') l",
    "SELECT ssn, 'label', 42 FROM patients WHERE birth_date = '1999-09-09'",
    "SELECT ssn FROM patients WHERE ssn = 'it''s' OR ssn = upper('x')",
    // the value is read under its casts: a zone, a precision, a length
    "INSERT INTO patients (id, seen_at) VALUES (1, '2020-01-01 10:00:00+00'::timestamptz)",
    "UPDATE patients SET seen_at = '2020-01-01 10:00:00.0'::timestamp(0) WHERE id = 1",
    "SELECT id FROM patients WHERE ssn = '12'::varchar(2)::text",
];

/// `sql` with every digit turned to the next one (9 to 0): other values of the same
/// forms (dates stay dates, numbers numbers).
fn other_values(sql: &str) -> String {
    let Some(shape) = of(sql) else {
        return sql.to_owned();
    };
    let mut out = sql.to_owned();
    for l in shape.literals.iter().rev() {
        let next: String = (sql[l.start..l.end].chars())
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_digit((d + 1) % 10, 10).unwrap_or(c),
                None => c,
            })
            .collect();
        out.replace_range(l.start..l.end, &next);
    }
    out
}

/// Two analyses agree: both pass, both refuse alike, or both plans send the same.
fn agree(a: &Analysis, b: &Analysis) -> bool {
    match (a, b) {
        (Analysis::Pass, Analysis::Pass) => true,
        (Analysis::Refuse(x), Analysis::Refuse(y)) => x == y,
        (Analysis::Rewrite(x), Analysis::Rewrite(y)) => same(x, y),
        _ => false,
    }
}

#[test]
fn a_statement_served_by_its_shape_is_analysed_as_it_would_be_alone() {
    let a = analyzer();
    let mut served = 0;
    for (user, role) in [
        ("carol", "clinician"),
        ("ann", "analyst"),
        ("bill", "billing"),
    ] {
        let who = crate::sql::Subject {
            user: Arc::from(user),
            role: Arc::from(role),
            emergency: false,
        };
        let ctx = Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        };
        for sql in STATEMENTS {
            let first = a.analyse(&who, ctx, sql);
            assert!(agree(&first, &analyzer().analyse(&who, ctx, sql)), "{sql}");
            let other = other_values(sql);
            let shaped = a.analyse(&who, ctx, &other);
            let alone = analyzer().analyse(&who, ctx, &other);
            assert!(
                agree(&shaped, &alone),
                "{user}: {other}\n{shaped:?}\n{alone:?}"
            );
            let key = (
                who.user.clone(),
                false,
                (
                    Some(crate::protocol::zone::Zone::UTC),
                    true,
                    DateOrder::Mdy,
                    SearchPath::Default,
                ),
                other.into(),
            );
            served +=
                usize::from(matches!(shaped, Analysis::Rewrite(_)) && a.cache.get(&key).is_none());
        }
    }
    assert!(served >= 30, "{served} statements served by their shape");
}
