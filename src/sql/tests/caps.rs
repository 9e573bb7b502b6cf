//! The bulk-read guard in the analysis: a capped role's reads are wrapped and counted,
//! everyone else's are not, and an emergency lifts the cap.

use super::*;

fn analyse_as(a: &Analyzer, who: &Subject, sql: &str) -> Analysis {
    a.analyse(who, Context::default(), sql)
}

fn plan_as(a: &Analyzer, who: &Subject, sql: &str) -> Arc<Plan> {
    match analyse_as(a, who, sql) {
        Analysis::Rewrite(p) => p,
        other => panic!("{sql}: expected a rewrite, got {other:?}"),
    }
}

#[test]
fn a_capped_roles_reads_are_wrapped_and_counted() {
    let a = analyzer_with(ROW_POLICIES);
    let ann = subject("ann", "analyst");
    // the cap is the smaller of max_rows (500) and max_rows_per_hour (100)
    let p = plan_as(&a, &ann, "SELECT id FROM patients WHERE id = $1");
    assert!(p.counted);
    let text = p.sql.text();
    assert!(
        text.starts_with("WITH phigate_capped AS (SELECT id FROM "),
        "{text}"
    );
    assert!(
        text.ends_with("ORDER BY phigate.row_cap(pg_catalog.row_number() OVER (), 100)"),
        "{text}"
    );
    assert_eq!(p.arity, 1);
    // a cursor's rows count at each FETCH, and are capped at DECLARE
    assert!(plan_as(&a, &ann, "FETCH 10 FROM c").counted);
    let declared = plan_as(&a, &ann, "DECLARE c CURSOR FOR SELECT id FROM patients");
    assert!(declared.sql.text().contains("phigate.row_cap"));
    // a COPY of the table copies a capped query over it, filtered too where policies
    // apply (no policy names the analyst: no rows)
    let copy = plan_as(&a, &ann, "COPY patients (id) TO STDOUT");
    assert!(
        copy.sql.text().starts_with(
            "COPY (WITH phigate_capped AS (SELECT id FROM \"public\".\"patients\" WHERE false) SELECT * FROM phigate_capped"
        ),
        "{}",
        copy.sql.text()
    );
    let copy = plan_as(&analyzer(), &ann, "COPY patients (id) TO STDOUT");
    assert!(
        copy.sql.text().starts_with(
            "COPY (WITH phigate_capped AS (SELECT id FROM \"public\".\"patients\") SELECT * FROM phigate_capped"
        ),
        "{}",
        copy.sql.text()
    );
    // a statement that only writes is not counted
    assert!(!plan_as(&a, &ann, "DELETE FROM patients WHERE id = 1").counted);
    // other roles' reads are neither wrapped nor counted
    let p = plan(&a, "SELECT id FROM patients");
    assert!(!p.counted && !p.sql.text().contains("row_cap"));
}

#[test]
fn an_emergency_lifts_the_cap() {
    let a = analyzer_with(ROW_POLICIES);
    let mut ann = subject("ann", "analyst");
    ann.emergency = true;
    let p = plan_as(&a, &ann, "SELECT id FROM patients");
    assert!(!p.counted && !p.sql.text().contains("row_cap"));
    assert!(matches!(
        analyse_as(&a, &ann, "UPDATE patients SET clinic_id = 1 RETURNING id"),
        Analysis::Rewrite(_)
    ));
}

#[test]
fn literals_keep_their_slots_inside_the_wrapper() {
    let a = analyzer();
    let ann = subject("ann", "analyst");
    let p = plan_as(
        &a,
        &ann,
        "SELECT id FROM patients WHERE birth_date = '2000-01-01'",
    );
    assert_eq!(p.sql.literals().len(), 1);
    assert!(
        p.sql.shown().contains("<encrypted birth_date>"),
        "{:?}",
        p.sql
    );
    assert_eq!(
        analyse_refusal(&a, &ann, "DELETE FROM patients RETURNING id"),
        "0A000"
    );
}

fn analyse_refusal(a: &Analyzer, who: &Subject, sql: &str) -> &'static str {
    match analyse_as(a, who, sql) {
        Analysis::Refuse(r) => r.code,
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}
