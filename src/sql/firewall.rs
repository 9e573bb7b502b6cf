//! The statement firewall: which kinds of statement a role may run, and what no client may
//! ever do through phigate (change its role, its search path or phigate's own session
//! settings, run SQL hidden in strings, read other sessions' statements, reach files or
//! programs). One pass of the lexer over every statement, parsed or not.

use super::Refusal;
use super::lex::{self, Token};
use crate::policy::{Role, StatementKind};

/// What the firewall lets through.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Screened {
    /// the statements may run (subject to the analysis of protected tables)
    Allowed,
    /// the text is `SET phigate.break_glass = ...`: an emergency declaration
    Declare,
}

/// Functions and relations no client may use through phigate: they run SQL held in a
/// string (which phigate cannot analyse), change or bypass session settings, reach the
/// server's files, end other sessions, or show other sessions' statements.
const FORBIDDEN_WORDS: &[&str] = &[
    "set_config",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "database_to_xml",
    "database_to_xml_and_xmlschema",
    "database_to_xmlschema",
    "schema_to_xml",
    "schema_to_xml_and_xmlschema",
    "schema_to_xmlschema",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_stat_activity",
    "pg_stat_get_activity",
    "pg_stat_statements",
];

fn refuse(message: String, hint: &str) -> Refusal {
    Refusal::new("42501", message, hint)
}

fn forbidden(what: &str) -> Refusal {
    refuse(
        format!("phigate does not allow {what}"),
        "this is not available through phigate to any role; an administrator can do it over a direct connection",
    )
}

/// Screens `sql` (one or more statements) for `role`. `bypass` is true for roles that
/// bypass row policies (only they may run procedural code phigate cannot see into).
pub(super) fn screen(sql: &str, role_name: &str, role: &Role) -> Result<Screened, Refusal> {
    let tokens = lex::tokens(sql).ok_or_else(|| {
        Refusal::syntax(
            "phigate could not read the statement (unterminated string, comment or identifier?)",
        )
    })?;
    let mut declare = false;
    let mut statements = 0;
    for stmt in tokens.split(|t| *t == Token::End) {
        let words = words_of(stmt);
        if stmt.contains(&Token::UnicodeIdent) {
            return Err(refuse(
                "phigate does not accept Unicode-escaped identifiers (U&\"...\")".into(),
                "write the identifier plainly",
            ));
        }
        if let Some(w) = words.iter().find(|w| {
            FORBIDDEN_WORDS.iter().any(|f| f.eq_ignore_ascii_case(w))
                || w.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("dblink"))
        }) {
            return Err(forbidden(&format!("the function or view {w}")));
        }
        let Some(kind) = kind(stmt, &words)? else {
            continue;
        };
        statements += 1;
        if kind == Kind::Declare {
            declare = true;
            continue;
        }
        let Kind::Is(kind) = kind else { continue };
        if kind == StatementKind::Procedural && !role.bypass_row_policies {
            return Err(refuse(
                format!(
                    "role {role_name} may not run DO blocks or CALL: phigate cannot see the statements inside"
                ),
                "run the statements themselves",
            ));
        }
        if !role.statements.allows(kind) {
            return Err(refuse(
                format!(
                    "role {role_name} may not run {} statements ({})",
                    kind.name(),
                    words.first().copied().unwrap_or("").to_uppercase()
                ),
                "the role's `statements` in roles.toml lists what it may run",
            ));
        }
    }
    if declare {
        if statements != 1 {
            return Err(refuse(
                "SET phigate.break_glass must be sent on its own".into(),
                "send the declaration as a single statement",
            ));
        }
        return Ok(Screened::Declare);
    }
    Ok(Screened::Allowed)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Is(StatementKind),
    Declare,
}

/// The words of a statement's tokens.
fn words_of<'a>(tokens: &'a [Token<'_>]) -> Vec<&'a str> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word { text, .. } => Some(text.as_ref()),
            _ => None,
        })
        .collect()
}

fn has(words: &[&str], any: &[&str]) -> bool {
    words
        .iter()
        .any(|w| any.iter().any(|a| a.eq_ignore_ascii_case(w)))
}

fn is(word: Option<&&str>, keyword: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// The kind of one statement; `None` for an empty one.
fn kind(stmt: &[Token<'_>], words: &[&str]) -> Result<Option<Kind>, Refusal> {
    use StatementKind as K;
    let Some(first) = stmt.iter().find(|t| !matches!(t, Token::Punct(b'('))) else {
        return Ok(None);
    };
    let Token::Word {
        text: head,
        quoted: false,
    } = first
    else {
        return Err(refuse(
            "phigate does not recognise this kind of statement".into(),
            "start the statement with its command keyword",
        ));
    };
    let writes = has(words, &["insert", "update", "delete", "merge"]);
    let head = head.to_ascii_lowercase();
    let kind = match head.as_str() {
        "select" | "values" | "table" | "with" if has(words, &["into"]) && !writes => K::Ddl,
        "with" if writes => K::Write,
        "explain" if has(words, &["analyze", "analyse"]) => {
            if writes {
                K::Write
            } else {
                K::Read
            }
        }
        "select" | "values" | "table" | "with" | "explain" | "fetch" | "move" | "close"
        | "declare" => K::Read,
        "show" => {
            if words
                .get(1)
                .and_then(|w| w.get(..7))
                .is_some_and(|p| p.eq_ignore_ascii_case("phigate"))
            {
                return Err(forbidden("reading phigate's session settings"));
            }
            K::Read
        }
        "insert" | "update" | "delete" | "merge" => {
            if head == "update" && has(words, &["pg_settings"]) {
                return Err(forbidden("changing settings through pg_settings"));
            }
            K::Write
        }
        "copy" => {
            if has(words, &["program"]) {
                return Err(forbidden("COPY ... PROGRAM"));
            }
            let file = stmt.windows(2).any(|w| {
                matches!(&w[0], Token::Word { text, quoted: false } if text.eq_ignore_ascii_case("to") || text.eq_ignore_ascii_case("from"))
                    && w[1] == Token::Str
            });
            if file {
                return Err(forbidden("COPY to or from a server file"));
            }
            K::Copy
        }
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            K::Transaction
        }
        "set" | "reset" => return settings(&head, words),
        "discard" => K::Session,
        "prepare" if is(words.get(1), "transaction") => K::Transaction,
        "prepare" => {
            // PREPARE name [(types)] AS statement: the statement decides.
            let at = stmt
                .iter()
                .position(|t| matches!(t, Token::Word { text, quoted: false } if text.eq_ignore_ascii_case("as")));
            if let Some(at) = at {
                let inner = &stmt[at + 1..];
                let inner_words = words_of(inner);
                if let Some(Kind::Is(k)) = kind(inner, &inner_words)?
                    && k != K::Read
                    && k != K::Write
                {
                    return Err(refuse(
                        format!("phigate does not prepare {} statements", k.name()),
                        "prepare queries and data changes only",
                    ));
                }
                if let Some(Kind::Is(K::Write)) = kind(inner, &inner_words)? {
                    return Ok(Some(Kind::Is(K::Write)));
                }
            }
            K::Prepare
        }
        "execute" | "deallocate" => K::Prepare,
        "create" | "alter" | "drop" | "truncate" | "comment" | "grant" | "revoke" | "security"
        | "import" | "refresh" | "reassign" => K::Ddl,
        "do" | "call" => K::Procedural,
        // Applications lock rows and tables around their writes, and use LISTEN/NOTIFY as
        // session features: neither is maintenance.
        "lock" => K::Write,
        "listen" | "notify" | "unlisten" => K::Session,
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint" => K::Maintenance,
        "load" => return Err(forbidden("LOAD")),
        // Every PostgreSQL command starts with one of the words above.
        other => {
            return Err(Refusal::syntax(&format!(
                "syntax error at or near \"{other}\" (not a statement PostgreSQL knows)"
            )));
        }
    };
    Ok(Some(Kind::Is(kind)))
}

/// SET and RESET: never of the role, the session authorization, the search path or
/// phigate's own settings; `SET phigate.break_glass` declares an emergency.
fn settings(head: &str, words: &[&str]) -> Result<Option<Kind>, Refusal> {
    let mut rest = &words[1..];
    if head == "set" && (is(rest.first(), "session") || is(rest.first(), "local")) {
        rest = &rest[1..];
    }
    let (first, second) = (rest.first(), rest.get(1));
    if is(first, "role")
        || is(first, "authorization")
        || (is(first, "session") && is(second, "authorization"))
    {
        return Err(forbidden("changing the session's role or authorization"));
    }
    if is(first, "search_path") || is(first, "schema") {
        return Err(forbidden("changing the search path"));
    }
    if head == "set" && is(first, "phigate") && is(second, "break_glass") {
        return Ok(Some(Kind::Declare));
    }
    if first
        .and_then(|w| w.get(..7))
        .is_some_and(|p| p.eq_ignore_ascii_case("phigate"))
    {
        return Err(forbidden("changing phigate's session settings"));
    }
    Ok(Some(Kind::Is(StatementKind::Session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(statements: &str) -> Role {
        let text = format!("[roles.r]\n{statements}\n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("roles.toml"), text).unwrap();
        let set = crate::policy::PolicySet::load(dir.path()).unwrap();
        set.role("r").unwrap().clone()
    }

    #[test]
    fn kinds_follow_the_role() {
        let clinician = role("");
        let ok = |sql: &str| screen(sql, "r", &clinician);
        for allowed in [
            "select 1",
            "(select 1) union (select 2)",
            "with x as (select 1) select * from x",
            "with d as (delete from t returning *) select * from d",
            "insert into t values (1); update t set a = 1; delete from t",
            "begin; set statement_timeout = 5; commit",
            "SET LOCAL work_mem = '4MB'",
            "prepare p as select 1; execute p; deallocate p",
            "copy t to stdout",
            "declare c cursor for select 1; fetch 1 from c; close c",
            "reset all; discard all",
            "listen jobs; notify jobs, 'x'; unlisten *",
            "begin; lock table t in share mode; commit",
            "explain select 1",
            "",
            " ; ",
        ] {
            assert_eq!(ok(allowed), Ok(Screened::Allowed), "{allowed}");
        }
        for (refused, why) in [
            ("create table x (a int)", "ddl"),
            ("select * into x from t", "ddl"),
            ("select 1; drop table t", "ddl"),
            ("vacuum t", "maintenance"),
            ("do $$ begin end $$", "DO blocks"),
            ("set role admin", "role"),
            ("SET SESSION AUTHORIZATION postgres", "authorization"),
            ("reset role", "role"),
            ("set search_path = evil, public", "search path"),
            ("set schema 'evil'", "search path"),
            ("set phigate.role = 'admin'", "phigate"),
            ("reset phigate.user.clinic_id", "phigate"),
            ("show phigate.role", "phigate"),
            (
                "select set_config('phigate.role', 'admin', false)",
                "set_config",
            ),
            ("select \"set_config\"('role', 'x', false)", "set_config"),
            (
                "select query_to_xml('select * from patients', true, true, '')",
                "query_to_xml",
            ),
            ("select * from pg_stat_activity", "pg_stat_activity"),
            ("copy t to program 'sh'", "PROGRAM"),
            ("copy t from '/etc/passwd'", "file"),
            ("select * from u&\"\\0070atients\"", "Unicode"),
            (
                "update pg_settings set setting = 'x' where name = 'work_mem'",
                "pg_settings",
            ),
            ("prepare p as create table x (a int)", "prepare"),
            ("frobnicate", "syntax error at or near \"frobnicate\""),
            ("load 'x'", "LOAD"),
            ("select 'unterminated", "could not read"),
            ("set phigate.break_glass = 'x'; select 1", "on its own"),
        ] {
            let e = ok(refused).expect_err(refused);
            assert!(e.message.contains(why), "{refused}: {}", e.message);
        }
        assert_eq!(
            ok("SET phigate.break_glass = 'code blue'"),
            Ok(Screened::Declare)
        );
        let admin = role("bypass_row_policies = true\nstatements = [\"all\"]");
        assert!(screen("create table x (a int); do $$ begin end $$", "r", &admin).is_ok());
        assert!(screen("set role postgres", "r", &admin).is_err());
    }
}
