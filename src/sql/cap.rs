//! The bulk-read guard's per-statement cap: a query that reads a protected table, for a
//! role with a row cap, is rewritten so that PostgreSQL itself raises 54000 when its
//! result would pass the cap, before it sends a single row.
//!
//! The query becomes the last common table expression of a wrapper that numbers its rows
//! and sorts them by `phigate.row_cap(row_number, cap)`, which returns the number or raises
//! past the cap: the sort keeps the query's order, holds at most `cap` rows, and raises in
//! protocol order, so the statement fails as a whole (its transaction aborts as any
//! failed statement's does) and never delivers a partial result as if it were complete.
//! Cursors are wrapped at DECLARE, so no FETCH size gets around the cap; COPY TO copies a
//! wrapped query (the analysis turns a capped role's COPY of a table into a COPY of a
//! query, as it does for a filtered one).

use sqlparser::ast::{CopySource, Query, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::{Catalog, Refusal};

/// What capping did to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Capped {
    /// it returns no rows of a protected table (or none phigate caps)
    No,
    /// its rows count: it was wrapped, or it fetches from a cursor
    Yes,
}

/// Caps the rows `stmt` returns at `cap` when it reads a protected table of `catalog`.
/// UPDATE and DELETE with RETURNING (and INSERT ... SELECT with RETURNING) are refused:
/// their rows cannot be capped without changing their command tag.
pub(super) fn apply(stmt: &mut Statement, cap: u64, catalog: &Catalog) -> Result<Capped, Refusal> {
    if let Statement::Fetch { .. } = stmt {
        return Ok(Capped::Yes);
    }
    if !names_protected(stmt, catalog) {
        return Ok(Capped::No);
    }
    match stmt {
        Statement::Query(q) => wrap(q, cap),
        Statement::Declare { stmts, .. } => {
            let mut capped = Capped::No;
            for q in stmts.iter_mut().filter_map(|d| d.for_query.as_mut()) {
                if wrap(q, cap)? == Capped::Yes {
                    capped = Capped::Yes;
                }
            }
            Ok(capped)
        }
        Statement::Copy {
            source: CopySource::Query(q),
            to: true,
            ..
        } => wrap(q, cap),
        Statement::Update(u) if u.returning.is_some() => Err(returning("UPDATE")),
        Statement::Delete(d) if d.returning.is_some() => Err(returning("DELETE")),
        Statement::Insert(i) if i.returning.is_some() && reads(i.source.as_deref()) => {
            Err(returning("INSERT ... SELECT"))
        }
        _ => Ok(Capped::No),
    }
}

/// True when the statement's identifiers name a protected table.
fn names_protected(stmt: &Statement, catalog: &Catalog) -> bool {
    let text = stmt.to_string();
    crate::sql::firewall::read(&text)
        .ok()
        .and_then(|tokens| super::protected_names(catalog, &tokens).ok())
        .is_none_or(|names| !names.is_empty())
}

/// True when an INSERT's source reads rows (a query, not a VALUES list).
fn reads(source: Option<&Query>) -> bool {
    source.is_some_and(|q| !matches!(q.body.as_ref(), SetExpr::Values(_)))
}

/// `q`, wrapped (a SELECT INTO, which returns no rows, is left alone).
fn wrap(q: &mut Box<Query>, cap: u64) -> Result<Capped, Refusal> {
    if let SetExpr::Select(s) = q.body.as_ref()
        && s.into.is_some()
    {
        return Ok(Capped::No);
    }
    let with = q.with.take();
    let body = q.to_string();
    let lead = match &with {
        Some(w) => format!("{w}, "),
        None => "WITH ".to_owned(),
    };
    let text = format!(
        "{lead}phigate_capped AS ({body}) SELECT * FROM phigate_capped \
         ORDER BY phigate.row_cap(pg_catalog.row_number() OVER (), {cap})"
    );
    **q = reparse(&text)?;
    Ok(Capped::Yes)
}

/// A query phigate wrote, parsed back (its slot markers parse as themselves).
fn reparse(text: &str) -> Result<Query, Refusal> {
    match Parser::parse_sql(&PostgreSqlDialect {}, text).map(|mut v| v.pop()) {
        Ok(Some(Statement::Query(q))) => Ok(*q),
        _ => Err(Refusal::new(
            "0A000",
            "phigate cannot cap the rows of this statement".into(),
            "rewrite the statement in a simpler form, or ask for a role without max_rows",
        )),
    }
}

/// The refusal of a write whose RETURNING would return rows a role with a cap may read.
fn returning(what: &str) -> Refusal {
    Refusal::new(
        "0A000",
        format!(
            "{what} ... RETURNING on a protected table is not available to a role with a row cap (max_rows or max_rows_per_hour)"
        ),
        "leave RETURNING out and read the rows with a SELECT, whose rows are capped",
    )
}

/// The message PostgreSQL raises when a statement passes its cap (see `row_cap` in
/// [`crate::policy::session_key`]): phigate recognises it to record the stop.
pub const CAP_MESSAGE: &str = "phigate row cap:";

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(sql: &str) -> Result<String, Refusal> {
        let analyzer = crate::sql::tests::analyzer();
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0);
        apply(&mut stmt, 100, analyzer.catalog())?;
        Ok(stmt.to_string())
    }

    #[test]
    fn queries_cursors_and_copies_of_protected_tables_are_wrapped() {
        let order = "ORDER BY phigate.row_cap(pg_catalog.row_number() OVER (), 100)";
        assert_eq!(
            capped("SELECT id FROM patients ORDER BY id LIMIT 5").unwrap(),
            format!(
                "WITH phigate_capped AS (SELECT id FROM patients ORDER BY id LIMIT 5) SELECT * FROM phigate_capped {order}"
            )
        );
        assert_eq!(
            capped("WITH RECURSIVE a AS (SELECT id FROM patients) SELECT * FROM a").unwrap(),
            format!(
                "WITH RECURSIVE a AS (SELECT id FROM patients), phigate_capped AS (SELECT * FROM a) SELECT * FROM phigate_capped {order}"
            )
        );
        let cursor = capped("DECLARE c CURSOR FOR SELECT id FROM patients").unwrap();
        assert!(cursor.ends_with(order), "{cursor}");
        let copy = capped("COPY (SELECT id, ssn FROM patients) TO STDOUT").unwrap();
        assert!(
            copy.starts_with(
                "COPY (WITH phigate_capped AS (SELECT id, ssn FROM patients) SELECT * FROM phigate_capped"
            ),
            "{copy}"
        );
        // no protected table, no rows returned, or a write without RETURNING: unchanged
        for sql in [
            "SELECT 1",
            "SELECT id INTO t FROM patients",
            "UPDATE patients SET id = 1",
            "INSERT INTO patients (id) VALUES (1) RETURNING id",
        ] {
            assert_eq!(capped(sql).unwrap(), sql);
        }
    }

    #[test]
    fn writes_returning_existing_rows_are_refused() {
        for sql in [
            "UPDATE patients SET id = 1 RETURNING id",
            "DELETE FROM patients RETURNING id",
            "INSERT INTO patients (id) SELECT id FROM patients RETURNING id",
        ] {
            assert_eq!(capped(sql).unwrap_err().code, "0A000", "{sql}");
        }
    }
}
