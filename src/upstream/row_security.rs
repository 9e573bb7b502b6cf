//! Installing and checking the native row-level security policies behind row policies
//! (see [`crate::policy::native`]).

use super::{ServiceSession, UpstreamError};
use crate::config::Config;
use crate::policy::native::{self, NativeTable, PREFIX};
use crate::policy::session_key::SessionKey;
use crate::policy::{PolicySet, quote_text};

/// The phigate policies installed on `t` now.
async fn installed(db: &mut ServiceSession, t: &NativeTable) -> Result<Vec<String>, UpstreamError> {
    let rows = db
        .query(&format!(
            "SELECT policyname FROM pg_catalog.pg_policies WHERE schemaname = {} AND tablename = {} \
             AND starts_with(policyname, {}) ORDER BY 1",
            quote_text(&t.table.schema),
            quote_text(&t.table.table),
            quote_text(PREFIX)
        ))
        .await?;
    Ok(rows.into_iter().filter_map(|mut r| r.remove(0)).collect())
}

/// Installs the current native policies of every table with row policies, and the
/// functions through which they read phigate's tagged session settings, over the admin
/// login (one transaction).
pub async fn apply(
    config: &Config,
    policies: &PolicySet,
    key: &SessionKey,
) -> Result<Vec<String>, UpstreamError> {
    if let Some((table, policy, attribute)) = native::untyped_attribute(policies) {
        return Err(UpstreamError::NativePolicies(format!(
            "policy {policy} of table {table} uses :user.{attribute}, which no user has yet, so its type is unknown; \
             add the users first (`phigate user add NAME --role ROLE --attr {attribute}=VALUE`), then apply"
        )));
    }
    let tables = native::tables(policies);
    let mut db = ServiceSession::open_admin(config, "phigate:policies").await?;
    let mut sql = zeroize::Zeroizing::new(String::from("BEGIN;\n"));
    sql.push_str(&key.install_sql());
    let mut done = Vec::new();
    for t in &tables {
        let old = installed(&mut db, t).await?;
        sql.push_str(&t.apply_sql(&old));
        done.push(format!("{}: {} policies", t.table, t.policies.len()));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = db.query(sql.as_str()).await {
        let _ = db.query("ROLLBACK").await;
        return Err(e);
    }
    Ok(done)
}

/// Checks, over the service login, that native row-level security backs the row policies:
/// the login is neither superuser, nor BYPASSRLS, nor a member of a table's owner; every
/// table with row policies has row-level security enabled and forced, and exactly the
/// current phigate policies; the settings functions accept values tagged with `key`, and
/// the login can neither read nor change their secret. With `login_only`, only what
/// installing the policies cannot fix: the login's attributes and ownership.
pub async fn verify(
    config: &Config,
    policies: &PolicySet,
    key: &SessionKey,
    login_only: bool,
) -> Result<(), UpstreamError> {
    let tables = native::tables(policies);
    if !policies.uses_database_functions() {
        return Ok(());
    }
    let fail = |m: String| UpstreamError::NativePolicies(m);
    let mut db = ServiceSession::open(config, "phigate:check").await?;
    let who = db
        .query("SELECT rolsuper::text, rolbypassrls::text FROM pg_catalog.pg_roles WHERE rolname = current_user")
        .await?;
    if who
        .first()
        .is_none_or(|r| r.iter().any(|v| v.as_deref() != Some("false")))
    {
        return Err(fail(format!(
            "the upstream login {} is a superuser or has BYPASSRLS: PostgreSQL would not apply row policies to it; use a login that is neither",
            config.upstream.user
        )));
    }
    if !login_only {
        verify_key(&mut db, config, key).await?;
    }
    for t in &tables {
        let rows = db
            .query(&format!(
                "SELECT c.relrowsecurity::text, c.relforcerowsecurity::text, \
                 pg_catalog.pg_has_role(c.relowner, 'MEMBER')::text \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {} AND c.relname = {}",
                quote_text(&t.table.schema),
                quote_text(&t.table.table)
            ))
            .await?;
        let Some(row) = rows.first() else {
            return Err(fail(format!(
                "table {} does not exist; create it, or remove its table policy",
                t.table
            )));
        };
        let flag = |i: usize| row.get(i).and_then(Option::as_deref) == Some("true");
        if flag(2) {
            return Err(fail(format!(
                "the upstream login {} owns table {} (or is a member of its owner): PostgreSQL does not apply row-level security to owners reliably; give the table another owner",
                config.upstream.user, t.table
            )));
        }
        if login_only {
            continue;
        }
        let mut expected: Vec<&str> = t.names();
        expected.sort_unstable();
        let found = installed(&mut db, t).await?;
        if !flag(0) || !flag(1) || found != expected {
            return Err(fail(format!(
                "table {} lacks the current native row-level security policies (enabled and forced); run `phigate policies apply`, or set policies.native = \"apply\"",
                t.table
            )));
        }
    }
    Ok(())
}

/// The settings functions read what `key` tags, and the service login cannot reach the
/// secret behind them.
async fn verify_key(
    db: &mut ServiceSession,
    config: &Config,
    key: &SessionKey,
) -> Result<(), UpstreamError> {
    let fail = |m: String| UpstreamError::NativePolicies(m);
    let apply = "run `phigate policies apply` (with the same policies.session_key_file as serve), or set policies.native = \"apply\"";
    let installed = db
        .query(
            "SELECT to_regclass('phigate.secret') IS NOT NULL AND to_regprocedure('phigate.setting(text)') IS NOT NULL \
             AND to_regprocedure('phigate.emergency()') IS NOT NULL \
             AND to_regprocedure('phigate.check_row(boolean, text)') IS NOT NULL \
             AND to_regprocedure('phigate.row_cap(bigint, bigint)') IS NOT NULL",
        )
        .await?;
    if installed.first().and_then(|r| r.first()).cloned().flatten() != Some("t".into()) {
        return Err(fail(format!(
            "the functions through which native policies read phigate's session settings (or the row cap's) are missing; {apply}"
        )));
    }
    let probe = key.sign("phigate.check", "ok");
    let rows = db
        .query(&format!(
            "SELECT pg_catalog.set_config('phigate.check', {}, false) IS NULL, phigate.setting('phigate.check'), \
             has_table_privilege('phigate.secret', 'SELECT') OR has_table_privilege('phigate.secret', 'UPDATE') \
             OR has_table_privilege('phigate.secret', 'INSERT') \
             OR (SELECT pg_has_role(c.relowner, 'MEMBER') FROM pg_class c WHERE c.oid = 'phigate.secret'::regclass)",
            quote_text(&probe)
        ))
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    if row.get(1).cloned().flatten().as_deref() != Some("ok") {
        return Err(fail(format!(
            "the database holds another session key than {}; {apply}",
            config.session_key_file().display()
        )));
    }
    if row.get(2).cloned().flatten().as_deref() != Some("f") {
        return Err(fail(format!(
            "the upstream login {} can read or change phigate.secret (or owns it): install it with the admin login; {apply}",
            config.upstream.user
        )));
    }
    verify_identity(db, key).await.map_err(|()| {
        fail(format!(
            "the installed phigate.setting() predates delegated end users; {apply}"
        ))
    })
}

/// `phigate.setting` reads a tagged `phigate.identity` (installed by this version).
async fn verify_identity(db: &mut ServiceSession, key: &SessionKey) -> Result<(), ()> {
    let pid = db
        .query("SELECT pg_backend_pid()::text")
        .await
        .map_err(|_| ())?;
    let pid: i32 = (pid.first().and_then(|r| r.first()).cloned().flatten())
        .and_then(|p| p.parse().ok())
        .ok_or(())?;
    let identity = key.identity(r#"{"phigate.check": "delegated"}"#, pid);
    let rows = db
        .query(&format!(
            "SELECT pg_catalog.set_config('phigate.identity', {}, false) IS NULL, phigate.setting('phigate.check'), \
             pg_catalog.set_config('phigate.identity', '', false)",
            quote_text(&identity)
        ))
        .await
        .map_err(|_| ())?;
    match rows
        .first()
        .and_then(|r| r.get(1))
        .cloned()
        .flatten()
        .as_deref()
    {
        Some("delegated") => Ok(()),
        _ => Err(()),
    }
}
