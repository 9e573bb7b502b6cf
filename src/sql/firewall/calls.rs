//! Calls whose danger depends on their arguments: which setting `set_config` and
//! `current_setting` name (in the text, or in a parameter a Bind fills), whose backend
//! `pg_terminate_backend` ends, what `ts_rewrite` reads.

use super::{Screened, forbidden, forbidden_to_set, is_phigate, refuse};
use crate::policy::settings::forbidden_setting;
use crate::sql::lex::{Token, is_keyword};
use crate::sql::{BoundSetting, Refusal};

/// The arguments of the call whose `(` is at `tokens[0]`, split at top-level commas.
fn arguments<'t, 'a>(tokens: &'t [Token<'a>]) -> Vec<&'t [Token<'a>]> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = 1;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Punct(b'(') | Token::Punct(b'[') => depth += 1,
            Token::Punct(b')') | Token::Punct(b']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if i > start {
                        args.push(&tokens[start..i]);
                    }
                    return args;
                }
            }
            Token::Punct(b',') if depth == 1 => {
                args.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args
}

/// `arg` without a cast to `varchar` around it (`x::varchar`, `CAST(x AS varchar)`, as ORMs
/// write a setting's name): the value stays as written. Only the keywords count, which
/// always mean `pg_catalog.varchar`; `text`, a quoted name or a length could mean a type of
/// the schema path or cut the value.
fn without_varchar_cast<'t, 'a>(arg: &'t [Token<'a>]) -> &'t [Token<'a>] {
    let varchar = |ty: &[Token<'_>]| match ty {
        [t] => is_keyword(Some(t), "varchar"),
        [a, b] => {
            (is_keyword(Some(a), "character") || is_keyword(Some(a), "char"))
                && is_keyword(Some(b), "varying")
        }
        _ => false,
    };
    match arg {
        [x, Token::Punct(b':'), Token::Punct(b':'), ty @ ..] if varchar(ty) => {
            std::slice::from_ref(x)
        }
        [
            cast,
            Token::Punct(b'('),
            x,
            r#as,
            ty @ ..,
            Token::Punct(b')'),
        ] if is_keyword(Some(cast), "cast") && is_keyword(Some(r#as), "as") && varchar(ty) => {
            std::slice::from_ref(x)
        }
        _ => arg,
    }
}

/// `pg_backend_pid()` or `pg_catalog.pg_backend_pid()`.
fn own_pid(arg: &[Token<'_>]) -> bool {
    let call = match arg {
        [Token::Word { text, .. }, Token::Punct(b'.'), rest @ ..]
            if text.eq_ignore_ascii_case("pg_catalog") =>
        {
            rest
        }
        _ => arg,
    };
    matches!(call, [Token::Word { text, .. }, Token::Punct(b'('), Token::Punct(b')')] if text.eq_ignore_ascii_case("pg_backend_pid"))
}

/// Calls whose danger depends on their arguments: `set_config` and `current_setting` only
/// with a literal setting name the rule allows (`current_setting` may read anything but
/// phigate's settings) or a parameter, returned for its value to be checked at each Bind
/// (either may be cast to `varchar`);
/// `ts_rewrite` not with a query held in a string; `pg_terminate_backend` and
/// `pg_cancel_backend` only of the session's own backend.
pub(super) fn calls(stmt: &[Token<'_>]) -> Result<Vec<BoundSetting>, Refusal> {
    let mut bound = Vec::new();
    for (i, t) in stmt.iter().enumerate() {
        let Token::Word { text, .. } = t else {
            continue;
        };
        let function = text.to_ascii_lowercase();
        if !matches!(
            function.as_str(),
            "set_config"
                | "current_setting"
                | "ts_rewrite"
                | "pg_terminate_backend"
                | "pg_cancel_backend"
        ) {
            continue;
        }
        let args = match stmt.get(i + 1) {
            Some(Token::Punct(b'(')) => arguments(&stmt[i + 1..]),
            _ => Vec::new(),
        };
        if function.starts_with("pg_") {
            if !args.first().is_some_and(|a| own_pid(a)) {
                return Err(forbidden(&format!(
                    "{function} of another session (only of the session's own: {function}(pg_backend_pid()))"
                )));
            }
            continue;
        }
        if function == "ts_rewrite" {
            if args.len() == 2 {
                return Err(forbidden(
                    "ts_rewrite with a query held in a string (phigate cannot see the tables it reads)",
                ));
            }
            continue;
        }
        let set = function == "set_config";
        match args.first().map(|a| without_varchar_cast(a)) {
            Some([Token::Str(Some(name))]) => setting_named(name, set)?,
            Some([Token::Param(param)]) => bound.push(BoundSetting { param: *param, set }),
            _ => return Err(literal_name_refusal(&function)),
        }
    }
    Ok(bound)
}

/// The rule a setting's name meets in `set_config` (`set`) or `current_setting`, whether
/// the text holds it or a Bind does (see [`BoundSetting::check`]).
pub(in crate::sql) fn setting_named(name: &str, set: bool) -> Result<(), Refusal> {
    if set && forbidden_setting(name).is_some() {
        return Err(forbidden_to_set(name));
    }
    if set && name.eq_ignore_ascii_case("application_name") {
        return Err(Refusal::new(
            "0A000",
            "phigate keeps the user in application_name: set it with SET application_name".into(),
            "SET application_name = 'my app'",
        ));
    }
    if !set && is_phigate(name) {
        return Err(forbidden("reading phigate's session settings"));
    }
    Ok(())
}

/// What a text with settings named by parameters (`bound`) screens as: a text of several
/// statements is no Parse (PostgreSQL prepares one), or holds a function body
/// (`BEGIN ATOMIC ...; END`) whose `$n` are the function's arguments.
pub(super) fn screened_bound(bound: Vec<BoundSetting>, single: bool) -> Result<Screened, Refusal> {
    match bound.first() {
        None => Ok(Screened::Allowed),
        Some(b) if !single => Err(literal_name_refusal(b.function())),
        Some(_) => Ok(Screened::Bound(bound)),
    }
}

/// True when the `$n` in `stmt` are parameters a Bind fills: a query or data change,
/// not a `PREPARE` (whose `EXECUTE` passes its values in the text) or a function's body.
pub(super) fn binds_parameters(stmt: &[Token<'_>]) -> bool {
    let head = stmt.iter().find(|t| !matches!(t, Token::Punct(b'(')));
    [
        "select", "values", "table", "with", "insert", "update", "delete", "merge", "explain",
        "declare",
    ]
    .iter()
    .any(|w| is_keyword(head, w))
}

/// The refusal of `function` (`set_config` or `current_setting`) naming a setting phigate
/// cannot read: neither a literal nor a parameter a Bind fills.
pub(super) fn literal_name_refusal(function: &str) -> Refusal {
    refuse(
        format!("phigate allows {function} only with a literal setting name or a parameter"),
        "write the setting's name as a plain string literal, or bind it as a parameter",
    )
}
