//! The session's search_path, as far as phigate can follow it: PostgreSQL does not report
//! it to clients, so phigate reads the statements that set it. Only the plain forms, run
//! outside a transaction block (where a rollback could undo them), are followed; anything
//! else makes the path unknown, and an unknown path refuses unqualified protected names.

use std::sync::Arc;

use super::lex::{self, Token, is_keyword as is, is_name};

/// The session's search path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum SearchPath {
    /// the server's default (`"$user", public`): names resolve as the catalog assumes
    #[default]
    Default,
    /// these schemas, in order
    Known(Arc<[String]>),
    /// changed in a way phigate does not follow
    Unknown,
}

/// What a statement text does to the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// sets it to these schemas
    Set(Vec<String>),
    /// restores the session's start-up value (RESET, DEFAULT, RESET ALL, DISCARD ALL)
    Reset,
    /// restores the start-up value among other statements: exact only when the path is
    /// the start-up value already
    ResetAmongOthers,
    /// changes it in a way phigate does not follow
    Unknown,
}

/// A search_path value (`app, "Tenant 1", public`) as schema names; `None` for one phigate
/// cannot resolve (`"$user"`, or not a list of names).
pub fn parse_value(value: &str) -> Option<Vec<String>> {
    let tokens = lex::tokens(value)?;
    names(&tokens)
}

/// Schema names separated by commas: words (folded to lower case), quoted names, strings.
fn names(tokens: &[Token<'_>]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    if tokens.is_empty() {
        return Some(out);
    }
    for item in tokens.split(|t| *t == Token::Punct(b',')) {
        let name = match item {
            [Token::Word { text, quoted }] => lex::name(text, *quoted).into_owned(),
            [Token::Str(Some(s))] if !s.contains(',') => s.trim().to_owned(),
            _ => return None,
        };
        if name.starts_with('$') || name.is_empty() {
            return None;
        }
        out.push(name);
    }
    Some(out)
}

impl Change {
    /// What `sql` (a simple query's text, or a prepared one) does to the search path;
    /// `None` when it leaves it. The one place that recognises search path changes.
    pub fn of(sql: &str) -> Option<Self> {
        let b = sql.as_bytes();
        let mentions = |n: &[u8]| lex::contains_ignore_case(b, n);
        let names_path = mentions(b"search_path") || mentions(b"schema");
        if !names_path && !mentions(b"all") {
            return None;
        }
        let Some(tokens) = lex::tokens(sql) else {
            // the firewall refuses what it cannot read; the path is unknown if it was named
            return names_path.then_some(Self::Unknown);
        };
        let statements: Vec<&[Token<'_>]> = tokens
            .split(|t| *t == Token::End)
            .filter(|s| !s.is_empty())
            .collect();
        let mut found = None;
        for stmt in &statements {
            if let Some(c) = statement_change(stmt) {
                if statements.len() > 1 {
                    if c != Self::Reset {
                        return Some(Self::Unknown);
                    }
                    found = Some(Self::ResetAmongOthers);
                    continue;
                }
                found = Some(c);
            }
        }
        found
    }
}

fn statement_change(stmt: &[Token<'_>]) -> Option<Change> {
    if (is(stmt.first(), "reset") || is(stmt.first(), "discard")) && is(stmt.get(1), "all") {
        return Some(Change::Reset);
    }
    if is(stmt.first(), "reset") && is_name(stmt.get(1), "search_path") {
        return Some(Change::Reset);
    }
    if is(stmt.first(), "set") {
        let rest = if is(stmt.get(1), "session") {
            &stmt[2..]
        } else {
            &stmt[1..]
        };
        if is(rest.first(), "local") || is(stmt.get(1), "local") {
            return Some(Change::Unknown);
        }
        if is(rest.first(), "schema") {
            return Some(match rest.get(1..) {
                Some([Token::Str(Some(s))]) => Change::Set(vec![s.to_string()]),
                _ => Change::Unknown,
            });
        }
        if !is_name(rest.first(), "search_path") {
            return None;
        }
        let value = match rest.get(1) {
            Some(Token::Punct(b'=')) => &rest[2..],
            t if is(t, "to") => &rest[2..],
            _ => return Some(Change::Unknown),
        };
        if let [t] = value
            && is(Some(t), "default")
        {
            return Some(Change::Reset);
        }
        return Some(names(value).map_or(Change::Unknown, Change::Set));
    }
    // SELECT [pg_catalog.]set_config('search_path', '<list>', false)
    let call = stmt
        .windows(7)
        .find(|w| is_name(Some(&w[0]), "set_config") && w[1] == Token::Punct(b'('));
    let w = call?;
    match (&w[2], &w[3], &w[4], &w[5], &w[6]) {
        (
            Token::Str(Some(name)),
            Token::Punct(b','),
            Token::Str(Some(value)),
            Token::Punct(b','),
            local,
        ) if name.eq_ignore_ascii_case("search_path") && is(Some(local), "false") => {
            Some(parse_value(value).map_or(Change::Unknown, Change::Set))
        }
        _ if matches!(&w[2], Token::Str(Some(n)) if n.eq_ignore_ascii_case("search_path")) => {
            Some(Change::Unknown)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Option<Change> {
        Some(Change::Set(names.iter().map(|s| (*s).to_owned()).collect()))
    }

    #[test]
    fn the_plain_forms_are_followed() {
        assert_eq!(
            Change::of("SET search_path TO app, public"),
            set(&["app", "public"])
        );
        assert_eq!(
            Change::of("set session search_path = \"Tenant 1\", public;"),
            set(&["Tenant 1", "public"])
        );
        assert_eq!(Change::of("SET search_path = 'app'"), set(&["app"]));
        assert_eq!(Change::of("SET SCHEMA 'app'"), set(&["app"]));
        assert_eq!(
            Change::of("SELECT pg_catalog.set_config('search_path', '', false)"),
            set(&[])
        );
        assert_eq!(
            Change::of("select set_config('search_path', 'app, public', false)"),
            set(&["app", "public"])
        );
        for reset in [
            "RESET search_path",
            "set search_path to default",
            "DISCARD ALL",
            "reset all",
        ] {
            assert_eq!(Change::of(reset), Some(Change::Reset), "{reset}");
        }
        assert_eq!(
            Change::of("select * from patients union all select * from x"),
            None
        );
        assert_eq!(Change::of("select 1"), None);
        assert_eq!(
            Change::of("RESET ALL; SELECT id FROM patients"),
            Some(Change::ResetAmongOthers)
        );
    }

    #[test]
    fn everything_else_is_unknown() {
        for sql in [
            "SET LOCAL search_path = app",
            "set local SEARCH_PATH to app",
            "select 1; select set_config('search_path', 'app', false)",
            "SET search_path = \"$user\", public",
            "SET search_path = app; select 1",
            "select set_config('search_path', 'app', true)",
            "select set_config('search_path', x, false) from t",
            "SET search_path = app.x",
        ] {
            assert_eq!(Change::of(sql), Some(Change::Unknown), "{sql}");
        }
        assert_eq!(
            parse_value("app, \"B\""),
            Some(vec!["app".into(), "B".into()])
        );
        assert_eq!(parse_value("\"$user\", public"), None);
    }
}
