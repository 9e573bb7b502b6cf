//! The statement firewall: which kinds of statement a role may run, and what no client may
//! ever do through phigate (change its role, its search path or phigate's own session
//! settings, run SQL hidden in strings, read other sessions' statements, reach files or
//! programs). One pass of the lexer over every statement, parsed or not.

mod calls;

use super::lex::{self, Token, is_keyword};
use super::{BoundSetting, Refusal};
use crate::policy::settings::forbidden_setting;
use crate::policy::{Role, StatementKind};
pub(super) use calls::setting_named;
use calls::{binds_parameters, calls, literal_name_refusal, screened_bound};

/// What the firewall lets through.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Screened {
    /// the statements may run (subject to the analysis of protected tables)
    Allowed,
    /// the statement may run once the values bound to these parameters name settings
    /// it may read or set (see [`BoundSetting`])
    Bound(Vec<BoundSetting>),
    /// the text is `SET phigate.break_glass = ...`: an emergency declaration
    Declare,
    /// the text is `SET phigate.end_user = '<user>'` (`Some`) or `RESET phigate.end_user`
    /// (`None`): a delegating service names its end user
    EndUser(Option<String>),
    /// the text is `SET [SESSION | LOCAL] application_name = <value>`: phigate keeps the
    /// user in the upstream name (`local` for SET LOCAL)
    ApplicationName {
        /// the name the client gave
        value: String,
        /// SET LOCAL
        local: bool,
    },
}

/// Functions and relations no client may use through phigate: they run SQL held in a
/// string or read a table or cursor given by name (which phigate cannot analyse; the list
/// is checked against PostgreSQL's catalogue by `tests/firewall_catalogue.rs`), show every
/// setting (phigate's among them), reach the server's files, end other sessions, or show
/// other sessions' statements.
pub const FORBIDDEN_WORDS: &[&str] = &[
    "ts_stat",
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
    "pg_reload_conf",
    "pg_stat_activity",
    "pg_stat_get_activity",
    "pg_stat_statements",
    "pg_settings",
    "pg_show_all_settings",
];

/// Bit `n` is set when a forbidden word is `n` bytes long: most words are ruled out by
/// their length before any comparison (the screen runs for every statement).
const FORBIDDEN_LENGTHS: u64 = {
    let mut mask = 0u64;
    let mut i = 0;
    while i < FORBIDDEN_WORDS.len() {
        assert!(FORBIDDEN_WORDS[i].len() < 64);
        mask |= 1 << FORBIDDEN_WORDS[i].len();
        i += 1;
    }
    mask
};

/// `w` is a forbidden function or view (any `dblink*` included).
fn is_forbidden(w: &str) -> bool {
    let length_may_match = w.len() < 64 && FORBIDDEN_LENGTHS & (1 << w.len()) != 0;
    (length_may_match && FORBIDDEN_WORDS.iter().any(|f| f.eq_ignore_ascii_case(w)))
        || w.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("dblink"))
}

fn refuse(message: String, hint: &str) -> Refusal {
    Refusal::new("42501", message, hint)
}

fn forbidden(what: &str) -> Refusal {
    refuse(
        format!("phigate does not allow {what}"),
        "this is not available through phigate to any role; an administrator can do it over a direct connection",
    )
}

/// The refusal of the forbidden function or view `w`; the settings' lists say how to read
/// one setting instead.
fn forbidden_word(w: &str) -> Refusal {
    if w.eq_ignore_ascii_case("pg_settings") || w.eq_ignore_ascii_case("pg_show_all_settings") {
        return refuse(
            format!("phigate does not allow {w}: it lists phigate's own settings"),
            "read a setting by its name: SHOW work_mem, or current_setting('work_mem')",
        );
    }
    forbidden(&format!("the function or view {w}"))
}

/// The tokens of `sql`, or the refusal of a text phigate cannot read.
pub(super) fn read(sql: &str) -> Result<Vec<Token<'_>>, Refusal> {
    lex::tokens(sql).ok_or_else(|| {
        Refusal::syntax(
            "phigate could not read the statement (unterminated string, comment or identifier?)",
        )
    })
}

/// Screens a text's `tokens` (one or more statements) for `role`.
pub(super) fn screen(
    tokens: &[Token<'_>],
    role_name: &str,
    role: &Role,
) -> Result<Screened, Refusal> {
    let mut declare = false;
    let mut app_name = None;
    let mut bound = Vec::new();
    let mut statements = 0;
    for stmt in tokens.split(|t| *t == Token::End) {
        let words = words_of(stmt);
        if stmt.contains(&Token::UnicodeIdent) {
            return Err(refuse(
                "phigate does not accept Unicode-escaped identifiers (U&\"...\")".into(),
                "write the identifier plainly",
            ));
        }
        if let Some(w) = words.iter().find(|w| is_forbidden(w)) {
            return Err(forbidden_word(w));
        }
        let named = calls(stmt)?;
        let Some(kind) = kind(stmt, &words)? else {
            continue;
        };
        if let Some(b) = named.first() {
            if !binds_parameters(stmt) {
                return Err(literal_name_refusal(b.function()));
            }
            bound.extend(named);
        }
        statements += 1;
        if kind == Kind::Declare {
            declare = true;
            continue;
        }
        if let Kind::ApplicationName(value, local) = kind {
            app_name = Some(Screened::ApplicationName { value, local });
            continue;
        }
        if let Kind::EndUser(name) = kind {
            app_name = Some(Screened::EndUser(name));
            continue;
        }
        if let Kind::Is(kind) = kind {
            permitted(kind, (role_name, role), &words)?;
        }
    }
    let single = statements == 1;
    if declare {
        return match single {
            true => Ok(Screened::Declare),
            false => Err(refuse(
                "SET phigate.break_glass must be sent on its own".into(),
                "send the declaration as a single statement",
            )),
        };
    }
    if let Some(set) = app_name {
        return match single {
            true => Ok(set),
            false => Err(Refusal::new(
                "0A000",
                "phigate needs SET application_name and SET phigate.end_user on their own".into(),
                "send the SET as a single statement",
            )),
        };
    }
    screened_bound(bound, single)
}

/// Whether the role may run a statement of `kind` (its `words`).
fn permitted(
    kind: StatementKind,
    (role_name, role): (&str, &Role),
    words: &[&str],
) -> Result<(), Refusal> {
    if kind == StatementKind::Procedural && !role.bypass_row_policies {
        return Err(refuse(
            format!(
                "role {role_name} may not run DO blocks or CALL or create functions: phigate cannot see the statements inside"
            ),
            "run the statements themselves, or create the function as an administrator",
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
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Is(StatementKind),
    Declare,
    EndUser(Option<String>),
    ApplicationName(String, bool),
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
    let written = head;
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
        // a statement of a `BEGIN ATOMIC` function body, after a `;`: an expression, as
        // a SELECT's (anywhere else PostgreSQL's own syntax error)
        "return" => K::Read,
        "show" => {
            if is(words.get(1), "all") || words.get(1).is_some_and(|w| is_phigate(w)) {
                return Err(forbidden("reading phigate's session settings"));
            }
            K::Read
        }
        "insert" | "update" | "delete" | "merge" => K::Write,
        "copy" => copy_kind(stmt, words)?,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            K::Transaction
        }
        "set" | "reset" => return settings(&head, stmt),
        "discard" => K::Session,
        "prepare" if is(words.get(1), "transaction") => K::Transaction,
        "prepare" => return prepare_kind(stmt),
        "execute" | "deallocate" => K::Prepare,
        "create" | "alter" => {
            ddl_settings(stmt, words)?;
            if head == "create" && creates_routine(words) {
                // its body runs later, unseen by phigate, as DO's does
                K::Procedural
            } else {
                K::Ddl
            }
        }
        "drop" | "truncate" | "comment" | "grant" | "revoke" | "security" | "import"
        | "refresh" | "reassign" => K::Ddl,
        "do" | "call" => K::Procedural,
        // Applications lock rows and tables around their writes, and use LISTEN/NOTIFY as
        // session features: neither is maintenance.
        "lock" => K::Write,
        "listen" | "notify" | "unlisten" => K::Session,
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint" => K::Maintenance,
        "load" => return Err(forbidden("LOAD")),
        // Every PostgreSQL command starts with one of the words above. The word is quoted
        // as the client wrote it, as PostgreSQL quotes it.
        _ => {
            return Err(Refusal::syntax(&format!(
                "syntax error at or near \"{written}\" (not a statement PostgreSQL knows)"
            )));
        }
    };
    Ok(Some(Kind::Is(kind)))
}

/// `CREATE [OR REPLACE] FUNCTION | PROCEDURE`: a routine with a body.
fn creates_routine(words: &[&str]) -> bool {
    let at = if is(words.get(1), "or") && is(words.get(2), "replace") {
        3
    } else {
        1
    };
    is(words.get(at), "function") || is(words.get(at), "procedure")
}

/// COPY: to and from the client only.
fn copy_kind(stmt: &[Token<'_>], words: &[&str]) -> Result<StatementKind, Refusal> {
    if has(words, &["program"]) {
        return Err(forbidden("COPY ... PROGRAM"));
    }
    let file = stmt.windows(2).any(|w| {
        (is_keyword(Some(&w[0]), "to") || is_keyword(Some(&w[0]), "from"))
            && matches!(w[1], Token::Str(_))
    });
    if file {
        return Err(forbidden("COPY to or from a server file"));
    }
    Ok(StatementKind::Copy)
}

/// PREPARE name [(types)] AS statement: the statement decides.
fn prepare_kind(stmt: &[Token<'_>]) -> Result<Option<Kind>, Refusal> {
    use StatementKind as K;
    let at = stmt.iter().position(|t| is_keyword(Some(t), "as"));
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
    Ok(Some(Kind::Is(K::Prepare)))
}

fn is_phigate(name: &str) -> bool {
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("phigate"))
}

/// The setting name at `tokens[i..]`: a word, or words joined by `.`.
fn setting_name(tokens: &[Token<'_>]) -> Option<String> {
    let mut name = String::new();
    let mut rest = tokens;
    loop {
        let Some(Token::Word { text, .. }) = rest.first() else {
            return None;
        };
        name.push_str(text);
        match rest.get(1) {
            Some(Token::Punct(b'.')) => {
                name.push('.');
                rest = &rest[2..];
            }
            _ => return Some(name),
        }
    }
}

fn forbidden_to_set(name: &str) -> Refusal {
    match forbidden_setting(name) {
        Some(why) => forbidden(&format!("setting {name} ({why})")),
        None => forbidden(&format!("setting {name}")),
    }
}

/// SET and RESET: never of the role, the session authorization, the search path or
/// phigate's own settings (the rule of [`forbidden_setting`]); `SET phigate.break_glass`
/// declares an emergency.
fn settings(head: &str, stmt: &[Token<'_>]) -> Result<Option<Kind>, Refusal> {
    let mut rest = &stmt[1..];
    if head == "set" && (is_keyword(rest.first(), "session") || is_keyword(rest.first(), "local")) {
        rest = &rest[1..];
    }
    if is_keyword(rest.first(), "authorization")
        || (is_keyword(rest.first(), "session") && is_keyword(rest.get(1), "authorization"))
    {
        return Err(forbidden("changing the session's role or authorization"));
    }

    let Some(name) = setting_name(rest) else {
        return Ok(Some(Kind::Is(StatementKind::Session)));
    };
    if head == "set" && name.eq_ignore_ascii_case("phigate.break_glass") {
        return Ok(Some(Kind::Declare));
    }
    if name.eq_ignore_ascii_case("phigate.end_user") && (head == "set" || head == "reset") {
        return end_user(head, stmt, rest).map(Some);
    }
    if head == "set" && name.eq_ignore_ascii_case("application_name") {
        let local = is_keyword(stmt.get(1), "local");
        let value = match rest.get(1..) {
            Some([Token::Punct(b'=') | Token::Word { .. }, Token::Str(Some(v))]) => {
                Some(v.to_string())
            }
            Some(
                [
                    Token::Punct(b'=') | Token::Word { .. },
                    Token::Word { text, quoted },
                ],
            ) if *quoted || !text.eq_ignore_ascii_case("default") => Some(if *quoted {
                text.to_string()
            } else {
                text.to_ascii_lowercase()
            }),
            _ => None,
        };
        return match value {
            Some(v) => Ok(Some(Kind::ApplicationName(v, local))),
            None if matches!(rest.get(2), Some(Token::Word { text, quoted: false }) if text.eq_ignore_ascii_case("default")) => {
                Ok(Some(Kind::Is(StatementKind::Session)))
            }
            None => Err(Refusal::new(
                "0A000",
                "phigate accepts SET application_name only with a plain string or name".into(),
                "SET application_name = 'my app'",
            )),
        };
    }
    if forbidden_setting(&name).is_some() {
        return Err(forbidden_to_set(&name));
    }
    Ok(Some(Kind::Is(StatementKind::Session)))
}

/// `SET phigate.end_user = '<user>'` (or TO, or DEFAULT) and `RESET phigate.end_user`; not
/// SET LOCAL (an end user for one statement is named in a comment).
fn end_user(head: &str, stmt: &[Token<'_>], rest: &[Token<'_>]) -> Result<Kind, Refusal> {
    let bad = || {
        Refusal::new(
            "0A000",
            "phigate accepts SET phigate.end_user = '<user>' (a session setting) and RESET phigate.end_user only".into(),
            "name the end user as a string: SET phigate.end_user = 'dr.smith'",
        )
    };
    if head == "reset" {
        return Ok(Kind::EndUser(None));
    }
    if is_keyword(stmt.get(1), "local") {
        return Err(bad());
    }
    // after the dotted name: `=` or TO, and the value
    let at = rest
        .iter()
        .position(|t| *t == Token::Punct(b'=') || is_keyword(Some(t), "to"));
    match at.and_then(|i| rest.get(i..)) {
        Some([Token::Punct(b'=') | Token::Word { .. }, Token::Str(Some(v))]) => {
            Ok(Kind::EndUser((!v.is_empty()).then(|| v.to_string())))
        }
        Some(
            [
                Token::Punct(b'=') | Token::Word { .. },
                Token::Word {
                    text,
                    quoted: false,
                },
            ],
        ) if text.eq_ignore_ascii_case("default") => Ok(Kind::EndUser(None)),
        _ => Err(bad()),
    }
}

/// `SET name ...` inside CREATE and ALTER (`ALTER ROLE ... SET`, `ALTER DATABASE ... SET`,
/// `ALTER SYSTEM SET`, a function's `SET` clause): the same rule as a session's SET. A
/// function may set its own search path.
fn ddl_settings(stmt: &[Token<'_>], words: &[&str]) -> Result<(), Refusal> {
    let routine = has(words, &["function", "procedure", "routine"]);
    for (i, t) in stmt.iter().enumerate() {
        if !is_keyword(Some(t), "set") {
            continue;
        }
        let Some(name) = setting_name(&stmt[i + 1..]) else {
            continue;
        };
        if name.eq_ignore_ascii_case("search_path") {
            // a function may set its own; a role's or database's default would change how
            // every later session resolves names
            if routine {
                continue;
            }
            return Err(forbidden(
                "setting a default search_path for roles or databases (set it in the session)",
            ));
        }
        if forbidden_setting(&name).is_some() {
            return Err(forbidden_to_set(&name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_settings_list_says_how_to_read_one_setting() {
        let role = Role::default();
        for sql in [
            "select setting from PG_SETTINGS where name = 'max_prepared_transactions'",
            "select * from pg_catalog.pg_show_all_settings()",
        ] {
            let e = screen(&read(sql).unwrap(), "r", &role).unwrap_err();
            assert_eq!(e.code, "42501");
            assert!(e.hint.contains("current_setting('work_mem')"), "{e:?}");
        }
    }

    #[test]
    fn every_forbidden_word_is_found_in_any_case() {
        for w in FORBIDDEN_WORDS {
            assert!(is_forbidden(w), "{w}");
            assert!(is_forbidden(&w.to_ascii_uppercase()), "{w}");
            assert!(!is_forbidden(&format!("{w}x")), "{w}x");
        }
        assert!(is_forbidden("DBLINK_exec") && is_forbidden("dblink"));
        assert!(!is_forbidden("pgbench_accounts") && !is_forbidden(&"x".repeat(100)));
    }

    fn screen_sql(sql: &str, role_name: &str, role: &Role) -> Result<Screened, Refusal> {
        screen(&read(sql)?, role_name, role)
    }

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
        let ok = |sql: &str| screen_sql(sql, "r", &clinician);
        for allowed in [
            "select 1",
            "(select 1) union (select 2)",
            "with x as (select 1) select * from x",
            "with d as (delete from t returning *) select * from d",
            "insert into t values (1); update t set a = 1; delete from t",
            "begin; set statement_timeout = 5; commit",
            "SET LOCAL work_mem = '4MB'",
            "set search_path = app, public; set schema 'app'; reset search_path",
            "select set_config('search_path', 'app', false)",
            "prepare p as select 1; execute p; deallocate p",
            "copy t to stdout",
            "declare c cursor for select 1; fetch 1 from c; close c",
            "reset all; discard all",
            "listen jobs; notify jobs, 'x'; unlisten *",
            "begin; lock table t in share mode; commit",
            "explain select 1",
            "select set_config('TimeZone', 'UTC', false), current_setting('server_version_num')",
            "select pg_catalog.current_setting('role'), current_setting('it''s', true)",
            "select ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)",
            "select pg_terminate_backend(pg_backend_pid())",
            "select current_setting('server'\n'_version')",
            "SELECT pg_catalog.pg_cancel_backend(pg_catalog.pg_backend_pid())",
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
            // a routine's body runs later, unseen, as a DO block's does
            (
                "create function f() returns text language sql as $$ select 1 $$",
                "create functions",
            ),
            (
                "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN END $$",
                "create functions",
            ),
            ("set role admin", "role"),
            ("SET SESSION AUTHORIZATION postgres", "authorization"),
            ("reset role", "role"),
            ("set phigate.role = 'admin'", "phigate"),
            ("reset phigate.user.clinic_id", "phigate"),
            ("show phigate.role", "phigate"),
            (
                "select set_config('phigate.role', 'admin', false)",
                "phigate.role",
            ),
            ("select \"set_config\"('role', 'x', false)", "setting role"),
            ("select set_config(name, 'x', false) from t", "literal"),
            (
                "select set_config('phi' 'gate.role', 'x', false)",
                "literal",
            ),
            ("select set_config(E'phigate.role', 'x', false)", "literal"),
            // one string, continued after a newline
            (
                "select set_config('ro'\n  'le', 'x', false)",
                "setting role",
            ),
            (
                "select current_setting('PHIGATE.emergency', true)",
                "phigate",
            ),
            ("select current_setting('phigate.' || 'role')", "literal"),
            (
                "select * from pg_settings where name like 'phi%'",
                "pg_settings",
            ),
            (
                "select * from pg_show_all_settings()",
                "pg_show_all_settings",
            ),
            ("show all", "phigate"),
            ("show \"PHIGATE.role\"", "phigate"),
            ("set \"phigate.role\" = 'admin'", "phigate"),
            ("set phigate . role to 'admin'", "phigate"),
            (
                "select count(*) from ts_stat('select to_tsvector(''simple'', x) from pati' || 'ents')",
                "ts_stat",
            ),
            (
                "select ts_rewrite('a'::tsquery, 'select ''a''::tsquery, ''b''::tsquery from t')",
                "ts_rewrite",
            ),
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
            ("WAT", "syntax error at or near \"WAT\""),
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
        for (sql, named) in [
            ("SET phigate.end_user = 'dr.smith'", Some("dr.smith")),
            (
                "set session phigate.end_user to 'dr.smith';",
                Some("dr.smith"),
            ),
            ("SET phigate.end_user = ''", None),
            ("SET phigate.end_user TO DEFAULT", None),
            ("RESET phigate.end_user", None),
        ] {
            let expected = Screened::EndUser(named.map(str::to_owned));
            assert_eq!(ok(sql), Ok(expected), "{sql}");
        }
        for sql in [
            "SET LOCAL phigate.end_user = 'x'",
            "SET phigate.end_user = x",
            "SET phigate.end_user = 'x'; SELECT 1",
            "SHOW phigate.end_user",
        ] {
            assert!(ok(sql).is_err(), "{sql}");
        }
        // a role with DDL but row policies creates tables, triggers, aggregates, not routines
        let ddl = role("statements = [\"ddl\", \"procedural\"]");
        for (sql, allowed) in [
            ("create table x (a int)", true),
            (
                "create trigger t before insert on x for each row execute function f()",
                true,
            ),
            ("create or replace view v as select 1", true),
            (
                "create function f() returns int language sql as 'select 1'",
                false,
            ),
            (
                "create or replace function f() returns int language sql as 'select 1'",
                false,
            ),
        ] {
            assert_eq!(screen_sql(sql, "r", &ddl).is_ok(), allowed, "{sql}");
        }
        let admin = role("bypass_row_policies = true\nstatements = [\"all\"]");
        assert!(screen_sql("create table x (a int); do $$ begin end $$", "r", &admin).is_ok());
        assert!(screen_sql("set role postgres", "r", &admin).is_err());
        for allowed in [
            "alter function f() set search_path = public",
            "alter table t alter column c set default 1",
            "alter table t set schema s",
            "alter role bob set work_mem = '8MB'",
            "create function f() returns bool begin atomic ;; return false;; end",
            "create function g() returns int begin atomic select 1; return 2; end",
        ] {
            assert_eq!(
                screen_sql(allowed, "r", &admin),
                Ok(Screened::Allowed),
                "{allowed}"
            );
        }
        for refused in [
            "alter role svc set phigate.role = 'admin'",
            "alter database ehr set \"PHIGATE.emergency\" = '2099-01-01'",
            "alter system set phigate.emergency = '2099-01-01'",
            "alter role svc set role = 'postgres'",
            "create function f() returns int language sql set phigate.emergency = '2099-01-01' as 'select 1'",
            "create function f() returns int language sql set phigate.role from current as 'select 1'",
        ] {
            let e = screen_sql(refused, "r", &admin).expect_err(refused);
            assert!(e.message.contains("setting"), "{refused}: {}", e.message);
        }
    }
}
