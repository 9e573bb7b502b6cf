//! Statement shapes ORMs, reports and hand-written SQL send over protected tables: casts
//! with a length or precision, windows, row comparisons, bulk updates from a VALUES list,
//! COALESCE of an encrypted column.

use super::*;

/// A cast's length or precision applies to the literal under it, as PostgreSQL's explicit
/// cast applies it (`'abc'::varchar(2)` is `ab`): phigate encrypts the value, so the server
/// never sees the cast. A value too large for a cast's precision is refused with 22003, and
/// a modifier the type does not take with 22023.
#[test]
fn casts_cut_and_round_literals() {
    let a = analyzer();
    let values = |sql: &str| -> Vec<Vec<u8>> {
        let p = plan(&a, sql);
        p.sql.literals().iter().map(|l| l.value.clone()).collect()
    };
    assert_eq!(
        values(
            "INSERT INTO patients (id, ssn, full_name) VALUES (1, 'abc'::varchar(2), 'xyz'::char)"
        ),
        [b"ab".to_vec(), b"x".to_vec()]
    );
    assert_eq!(
        values("SELECT id FROM patients WHERE ssn = CAST('a b c' AS character varying(3))::text"),
        [b"a b".to_vec()]
    );
    // every cast of the chain applies, innermost first
    assert_eq!(
        values("INSERT INTO patients (id, ssn) VALUES (1, 'abcd'::varchar(3)::varchar(2))"),
        [b"ab".to_vec()]
    );
    // Django's bulk_update casts the whole CASE to the field's type
    assert_eq!(
        values(
            "UPDATE patients SET full_name = (CASE WHEN (id = 1) THEN 'long name' ELSE NULL END)::varchar(4) WHERE id IN (1)"
        ),
        [b"long".to_vec()]
    );
    // SQLAlchemy's insertmanyvalues casts each VALUES column to the column's type
    let p = plan(
        &a,
        "INSERT INTO patients (id, ssn) SELECT p0::INTEGER, p1::VARCHAR(2) \
         FROM (VALUES (1, 'abc', 0), ($1::INTEGER, $2::VARCHAR, 1)) AS imp_sen(p0, p1, sen_counter) \
         ORDER BY sen_counter",
    );
    let cut: Vec<Vec<u8>> = p.sql.literals().iter().map(|l| l.value.clone()).collect();
    assert_eq!(cut, [b"ab".to_vec()]);
    assert_eq!(
        p.param_casts.get(1).cloned().flatten().map(|c| c.modifiers),
        Some(vec![crate::protocol::value::Modifier::Length(2)])
    );
    for (sql, code) in [
        (
            "INSERT INTO patients (id, ssn) VALUES (1, 'abc'::varchar(0))",
            "22023",
        ),
        (
            "INSERT INTO patients (id, ssn) VALUES (1, 'abc'::text(2))",
            "22023",
        ),
        (
            "SELECT id FROM patients WHERE ssn = ANY(ARRAY['a']::varchar(1)[])",
            "0A000",
        ),
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, code, "{sql}: {}", r.message);
    }
}

/// Window functions over protected tables: a deterministic column partitions on
/// ciphertext as GROUP BY groups; ordering a window by an encrypted column, or a window
/// function over one, would compute over ciphertext and is refused.
#[test]
fn windows_partition_by_deterministic_columns() {
    let a = analyzer();
    for sql in [
        "SELECT id, row_number() OVER (PARTITION BY ssn ORDER BY id) FROM patients",
        "SELECT ssn, count(*) OVER (PARTITION BY ssn, clinic_id) AS n FROM patients",
        "SELECT id, count(full_name) OVER (PARTITION BY birth_date) FROM patients",
        "SELECT id, sum(clinic_id) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM patients",
        "SELECT id, count(*) OVER w, rank() OVER (w ORDER BY id) FROM patients WINDOW w AS (PARTITION BY ssn)",
    ] {
        plan(&a, sql);
    }
    for sql in [
        "SELECT id, row_number() OVER (PARTITION BY full_name) FROM patients",
        "SELECT id, rank() OVER (ORDER BY ssn) FROM patients",
        "SELECT id, lag(ssn) OVER (PARTITION BY clinic_id ORDER BY id) FROM patients",
        "SELECT id, row_number() OVER (PARTITION BY lower(ssn)) FROM patients",
        "SELECT id, count(*) OVER w FROM patients WINDOW w AS (PARTITION BY full_name)",
        "SELECT id, rank() OVER w FROM patients WINDOW w AS (ORDER BY ssn)",
        "SELECT id, lag(ssn) OVER w FROM patients WINDOW w AS (PARTITION BY clinic_id)",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "0A000", "{sql}: {}", r.message);
    }
    // = ANY of an array literal, as clients that write their values into the text send a
    // list: each element encrypted, the casts checked and dropped
    for sql in [
        "SELECT id FROM patients WHERE ssn = ANY('{111,\"2 2\"}')",
        "SELECT id FROM patients WHERE ssn = ANY('{111,\"2 2\"}'::text[])",
        "SELECT id FROM patients WHERE ssn = ANY(ARRAY['111', '2 2']::varchar[])",
    ] {
        let p = plan(&a, sql);
        let values: Vec<Vec<u8>> = p.sql.literals().iter().map(|l| l.value.clone()).collect();
        assert_eq!(values, [b"111".to_vec(), b"2 2".to_vec()], "{sql}");
        assert!(
            !p.sql.shown().contains("text[]") && !p.sql.shown().contains("varchar"),
            "{sql}: {:?}",
            p.sql
        );
    }
}

/// Row comparisons over deterministic columns, as SQLAlchemy's `tuple_(...).in_(...)` and
/// ORMs' composite keys write them: each position is compared as it would be alone.
#[test]
fn rows_are_compared_position_by_position() {
    let a = analyzer();
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE (ssn, clinic_id) = ('111', 3) OR (ssn, clinic_id) <> ('2', 4)",
    );
    let values: Vec<Vec<u8>> = p.sql.literals().iter().map(|l| l.value.clone()).collect();
    assert_eq!(values, [b"111".to_vec(), b"2".to_vec()]);
    let p = plan(
        &a,
        "SELECT id FROM patients WHERE (clinic_id, ssn) IN ((3, '111'), (4, $1))",
    );
    assert_eq!(p.sql.literals().len(), 1, "{:?}", p.sql);
    assert!(matches!(p.params[0], Some(ParamUse::Scalar(_))));
    plan(
        &a,
        "SELECT id FROM patients WHERE (id, clinic_id) IN ((1, 2), (3, 4))",
    );
    for sql in [
        "SELECT id FROM patients WHERE (full_name, id) = ('Ada', 1)",
        "SELECT id FROM patients WHERE (ssn, id) > ('1', 1)",
        "SELECT id FROM patients WHERE (ssn, id) IN (('1', 1), ('2', id + lower(ssn)::int))",
        "SELECT id FROM patients WHERE (ssn, id) IN (('1', 1), (full_name, 2))",
        "SELECT id FROM patients WHERE (id, clinic_id) = (1, length(ssn))",
    ] {
        let r = refused(&a, sql);
        assert!(["0A000", "42601"].contains(&r.code), "{sql}: {r:?}");
    }
}

/// `UPDATE ... FROM (VALUES ...)`, the bulk update by key: a VALUES column assigned to an
/// encrypted column has its rows encrypted for it (literals here, parameters at Bind), and
/// may be used nowhere else, since it then holds ciphertext.
#[test]
fn updates_from_values_lists() {
    let a = analyzer();
    let p = plan(
        &a,
        "UPDATE patients AS p SET full_name = v.n, clinic_id = v.c, birth_date = v.b::date \
         FROM (VALUES (1, 'Ada', 3, '2001-02-03'), (2, $1, 4, NULL)) AS v (i, n, c, b) WHERE p.id = v.i",
    );
    let values: Vec<Vec<u8>> = p.sql.literals().iter().map(|l| l.value.clone()).collect();
    assert_eq!(values.len(), 2, "{:?}", p.sql);
    assert_eq!(values[0], b"Ada");
    assert!(matches!(p.params[0], Some(ParamUse::Scalar(_))));
    assert!(
        p.sql.shown().contains("birth_date = v.b FROM"),
        "{:?}",
        p.sql
    );
    // a cast's length applies to each row
    let p = plan(
        &a,
        "UPDATE patients SET ssn = v.s::varchar(2) FROM (VALUES (1, 'abc')) v (i, s) WHERE patients.id = v.i",
    );
    assert_eq!(p.sql.literals()[0].value, b"ab");
    for sql in [
        "UPDATE patients SET ssn = v.s FROM (VALUES (1, '1')) v (i, s) WHERE id = v.i RETURNING v.s",
        "UPDATE patients SET ssn = v.s FROM (VALUES (1, '1')) v (i, s) WHERE id = v.i RETURNING *",
        "UPDATE patients SET ssn = v.s FROM (VALUES (1, '1')) v (i, s) WHERE id = v.i AND v.s > '0'",
        "UPDATE patients SET ssn = v.s, full_name = v.s FROM (VALUES (1, '1')) v (i, s) WHERE id = v.i",
        "UPDATE patients SET ssn = v.s FROM (VALUES (1, lower('1'))) v (i, s) WHERE id = v.i",
        "UPDATE patients SET ssn = v.s::int FROM (VALUES (1, '1')) v (i, s) WHERE id = v.i",
        "UPDATE patients SET ssn = w.s FROM (SELECT 1 AS i, '1' AS s) w WHERE id = w.i",
    ] {
        let r = refused(&a, sql);
        assert!(["0A000", "42846"].contains(&r.code), "{sql}: {r:?}");
    }
}

/// `COALESCE(col, fallback)` in a select list: the fallback is encrypted for the column, so
/// the result decrypts (or masks) as the column does; anything else computed stays
/// refused, and a role that reads the column masked or as ciphertext may not use it.
#[test]
fn coalesce_of_an_encrypted_column_encrypts_its_fallback() {
    let a = analyzer();
    let p = plan(
        &a,
        "SELECT id, COALESCE(full_name, 'none') AS n, pg_catalog.coalesce(birth_date, $1, NULL) FROM patients",
    );
    let outputs: Vec<Option<String>> = (p.outputs.iter().flatten())
        .map(|c| c.as_ref().map(|c| c.name.clone()))
        .collect();
    assert_eq!(
        outputs,
        [None, Some("full_name".into()), Some("birth_date".into())]
    );
    assert_eq!(p.sql.literals()[0].value, b"none");
    assert!(matches!(p.params[0], Some(ParamUse::Scalar(_))));
    for sql in [
        "SELECT COALESCE(full_name, ssn) FROM patients",
        "SELECT COALESCE(full_name, upper('x')) FROM patients",
        "SELECT id FROM patients WHERE COALESCE(ssn, 'x') = '1'",
        "SELECT COALESCE(full_name, 'x') || 'y' FROM patients",
        "SELECT COALESCE(clinic_id, length(ssn)) FROM patients",
    ] {
        let r = refused(&a, sql);
        assert_eq!(r.code, "0A000", "{sql}: {}", r.message);
    }
    let reads_ciphertext =
        analyzer_with_patients(&PATIENTS.replace("billing = \"deny\"", "billing = \"ciphertext\""));
    let ctx = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    let bill = subject("bill", "billing");
    let sql = "SELECT COALESCE(ssn, '123-45-6789') FROM patients";
    assert!(matches!(
        reads_ciphertext.analyse(&bill, ctx, sql),
        Analysis::Refuse(_)
    ));
    assert!(matches!(
        reads_ciphertext.analyse(&bill, ctx, "SELECT ssn FROM patients"),
        Analysis::Rewrite(_) | Analysis::Pass
    ));
    // a masked outcome of a chosen value: the keyed hash of a guess, say
    let masked =
        analyzer_with_patients(&PATIENTS.replace("billing = \"deny\"", "billing = \"mask:hash\""));
    assert!(matches!(
        masked.analyse(&bill, ctx, sql),
        Analysis::Refuse(_)
    ));
}

/// A role that reads a column masked may not search on it in any form of equality (the
/// match would reveal the value it probed), nor COALESCE it with a value of its own;
/// grouping and partitioning, which reveal only which rows are equal, stay allowed.
#[test]
fn a_masked_column_is_not_searched_in_any_form() {
    let masked =
        analyzer_with_patients(&PATIENTS.replace("billing = \"deny\"", "billing = \"mask:last4\""));
    let ctx = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    let bill = subject("bill", "billing");
    for sql in [
        "SELECT id FROM patients WHERE ssn = '1'",
        "SELECT id FROM patients WHERE ssn IN ('1', '2')",
        "SELECT id FROM patients WHERE ssn = ANY(ARRAY['1'])",
        "SELECT id FROM patients WHERE ssn = ANY($1)",
        "SELECT id FROM patients WHERE (ssn, clinic_id) = ('1', 3)",
        "SELECT id FROM patients WHERE (ssn, clinic_id) IN (('1', 3))",
        "SELECT id FROM patients WHERE ssn IS NOT DISTINCT FROM '1'",
        "SELECT id FROM patients WHERE ssn IN (SELECT patient_ssn FROM claims)",
        "DELETE FROM patients WHERE ssn IN ('1')",
        "SELECT COALESCE(ssn, '1') FROM patients",
    ] {
        match masked.analyse(&bill, ctx, sql) {
            Analysis::Refuse(r) => assert_eq!(r.code, "42501", "{sql}: {}", r.message),
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        "SELECT ssn, count(*) FROM patients GROUP BY ssn",
        "SELECT id, row_number() OVER (PARTITION BY ssn) FROM patients",
    ] {
        assert!(
            matches!(masked.analyse(&bill, ctx, sql), Analysis::Rewrite(_)),
            "{sql}"
        );
    }
}
