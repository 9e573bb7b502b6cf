//! Statements that differ only in their literal values share one analysis.
//!
//! A client that interpolates its values into the text (psql, psycopg2, every ORM on the
//! simple protocol) sends a new text for each execution, so the cache by text never hits
//! and each statement on a protected table would be parsed and rewritten afresh. Its
//! *shape* is the text with its value literals written as parameters `$1..$n`: the very
//! statement a driver on the extended protocol would prepare. phigate analyses a shape as
//! it analyses any prepared statement, and for each execution fills the parameters back
//! in: a value the plan encrypts becomes a slot of its column (checked and made canonical
//! as the literal would have been), any other value its own literal text, unchanged.
//!
//! That is sound because a prepared statement's plan already holds for every value a
//! client may bind: it is what the extended protocol runs on. Only literals that mean the
//! same as a parameter in their place become one: plain `'...'` strings without
//! backslashes and unsigned decimal numbers, right after `=`, `<`, `>`, `(` (and a string
//! after `,`), in a single SELECT, INSERT, UPDATE, DELETE or WITH. A number after `BY` or
//! `,` may be a column position (`ORDER BY 2`), a literal after a word may be a typed one
//! (`DATE '...'`), after LIMIT a row count: those stay in the shape's text. The analyser
//! also checks each new shape on its first statement: the plan filled in must equal the
//! statement's own analysis, or the shape is never used.

use super::lex::{Form, Kind, Lexeme, Lexer, literal_value};
use super::text::{Literal, Sql};
use std::sync::Arc;

use super::{Analysis, ParamUse, Plan, Refusal};
use crate::protocol::value::Context;

/// A statement's shape: its text with value literals as parameters, and where they were.
#[derive(Debug)]
pub(super) struct Shape {
    /// the text with literal `i` written as `$i+1`
    pub(super) text: String,
    /// the literals, in order
    literals: Vec<Lexeme>,
}

/// What the analyser keeps of a shape.
#[derive(Debug, Clone)]
pub(super) enum Shaped {
    /// statements of the shape run this plan, filled with their literals
    Plan(Arc<Template>),
    /// statements of the shape pass unchanged
    Pass,
    /// statements of the shape are analysed one by one
    Unfit,
}

impl Shaped {
    /// The verdict on a new shape: `template` is the analysis of its text, `own` that of
    /// `sql`, the statement it was found in.
    pub(super) fn judge(
        template: Result<Option<Plan>, Refusal>,
        own: &Analysis,
        (sql, shape, ctx): (&str, &Shape, Context),
    ) -> Self {
        match (template, own) {
            (Ok(None), Analysis::Pass) => Self::Pass,
            (Ok(Some(t)), Analysis::Rewrite(own)) => Template::new(t)
                .filter(|t| fill(t, sql, shape, ctx).is_some_and(|f| same(&f, own)))
                .map_or(Self::Unfit, |t| Self::Plan(Arc::new(t))),
            _ => Self::Unfit,
        }
    }
}

/// A shape's plan, with where its parameters stand in its text: found once, when the
/// shape is judged, not at each statement.
#[derive(Debug)]
pub(super) struct Template {
    plan: Plan,
    /// each `$k` in the plan's text: where it starts and ends, and `k - 1`
    params: Vec<(usize, usize, usize)>,
}

impl Template {
    /// `plan` with its parameters found; `None` when one is not a `$k` with `k >= 1`.
    fn new(plan: Plan) -> Option<Self> {
        let text = plan.sql.text();
        let params = Lexer::new(text)
            .filter(|l| l.kind == Kind::Param)
            .map(|l| {
                let k = text[l.start + 1..l.end].parse::<usize>().ok()?;
                Some((l.start, l.end, k.checked_sub(1)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { plan, params })
    }
}

/// The words a statement may start with to be shaped: one data statement.
const SHAPED_FIRST_WORDS: [&str; 5] = ["select", "insert", "update", "delete", "with"];

/// The shape of `sql`, if it is one statement with at least one value literal and no
/// parameters of its own.
pub(super) fn of(sql: &str) -> Option<Shape> {
    let mut lexer = Lexer::new(sql);
    let mut prev: Option<Lexeme> = None;
    let mut shape = Shape {
        text: String::with_capacity(sql.len() + 8),
        literals: Vec::new(),
    };
    let mut from = 0;
    let mut ended = false;
    for l in lexer.by_ref() {
        match l.kind {
            _ if ended => return None,
            Kind::Param => return None,
            Kind::End => ended = true,
            Kind::Word if prev.is_none() => {
                let first = &sql[l.start..l.end];
                SHAPED_FIRST_WORDS
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(first))
                    .then_some(())?;
            }
            _ if prev.is_none() => return None,
            _ => {}
        }
        if prev.is_some_and(|p| takes_value(sql, &p, &l)) {
            shape.text.push_str(&sql[from..l.start]);
            shape.literals.push(l);
            shape.text.push('$');
            shape
                .text
                .push_str(itoa::Buffer::new().format(shape.literals.len()));
            from = l.end;
        }
        prev = Some(l);
    }
    if lexer.unterminated() || shape.literals.is_empty() {
        return None;
    }
    shape.text.push_str(&sql[from..]);
    Some(shape)
}

/// True when literal `l`, after `prev`, means the same as a parameter in its place.
fn takes_value(sql: &str, prev: &Lexeme, l: &Lexeme) -> bool {
    let text = &sql.as_bytes()[l.start..l.end];
    let after = |allowed: &[u8]| matches!(prev.kind, Kind::Punct(c) if allowed.contains(&c));
    match l.kind {
        Kind::Str(Form::Plain) => !text.contains(&b'\\') && after(b"=<>(,"),
        Kind::Number => {
            text.iter().all(|b| b.is_ascii_digit() || *b == b'.')
                && text.iter().filter(|b| **b == b'.').count() <= 1
                && after(b"=<>(")
        }
        _ => false,
    }
}

/// What a parameter of the shape becomes in one statement.
enum Fill<'a> {
    /// the statement's own literal text
    Text(&'a str),
    /// a slot: literal `usize` of the filled plan
    Slot(usize),
}

/// `template` (the plan of `shape`'s text) filled with the literals of `sql`, whose shape
/// it is. `None` when a value does not fit its encrypted column (the statement's own
/// analysis then says why) or the plan is not one a shape can fill.
pub(super) fn fill(template: &Template, sql: &str, shape: &Shape, ctx: Context) -> Option<Plan> {
    let Template {
        plan: template,
        params,
    } = template;
    if template.copy.is_some() || template.arity != shape.literals.len() {
        return None;
    }
    let mut literals: Vec<Literal> = template.sql.literals().to_vec();
    let mut fills = Vec::with_capacity(shape.literals.len());
    for (i, l) in shape.literals.iter().enumerate() {
        fills.push(match template.params.get(i).and_then(Option::as_ref) {
            None => Fill::Text(&sql[l.start..l.end]),
            Some(ParamUse::Scalar(col)) => {
                // read as the statement's own literal would be: under its casts
                let cast = template.param_casts.get(i).and_then(Option::as_ref);
                let value = literal_value(sql, l);
                let value = super::analyse::literal_canonical(col, cast, &value, ctx);
                literals.push(Literal {
                    column: col.clone(),
                    value: value.ok()?,
                });
                Fill::Slot(literals.len() - 1)
            }
            Some(ParamUse::Array(_)) => return None,
        });
    }
    let sql = placed((&template.sql, params), &fills, literals)?;
    Some(Plan {
        sql,
        tables: template.tables.clone(),
        columns: template.columns.clone(),
        policies: template.policies.clone(),
        outputs: template.outputs.clone(),
        counted: template.counted,
        subject: template.subject.clone(),
        ..Plan::default()
    })
}

/// The template's text with each `$k` (at `params`) replaced by fill `k-1`; its own slots
/// stay.
fn placed(
    (template, params): (&Sql, &[(usize, usize, usize)]),
    fills: &[Fill<'_>],
    literals: Vec<Literal>,
) -> Option<Sql> {
    let text = template.text();
    let mut out = String::with_capacity(text.len() + 16 * fills.len());
    let mut slots = Vec::with_capacity(template.slots().len() + fills.len());
    let mut own = template.slots().iter().peekable();
    let mut from = 0;
    for &(start, end, k) in params {
        while let Some(&(at, i)) = own.next_if(|s| s.0 <= start) {
            out.push_str(&text[from..at]);
            slots.push((out.len(), i));
            from = at;
        }
        out.push_str(&text[from..start]);
        match fills.get(k)? {
            Fill::Text(s) => out.push_str(s),
            Fill::Slot(i) => slots.push((out.len(), *i)),
        }
        from = end;
    }
    for &(at, i) in own {
        out.push_str(&text[from..at]);
        slots.push((out.len(), i));
        from = at;
    }
    out.push_str(&text[from..]);
    Some(Sql::from_parts(out, literals, slots))
}

/// True when `filled` (a shape's plan filled with a statement's literals) is the plan the
/// statement's own analysis gave: the check a shape passes once before it is used.
pub(super) fn same(filled: &Plan, own: &Plan) -> bool {
    let outputs = |p: &Plan| {
        (p.outputs.as_ref()).map(|o| {
            o.iter()
                .map(|c| c.as_ref().map(|c| c.identity.clone()))
                .collect::<Vec<_>>()
        })
    };
    filled.sql.same(&own.sql)
        && own.params.iter().all(Option::is_none)
        && own.param_casts.iter().all(Option::is_none)
        && own.copy.is_none()
        && filled.tables.len() == own.tables.len()
        && (filled.tables.iter().zip(&own.tables)).all(|(a, b)| a.name == b.name)
        && filled.columns == own.columns
        && filled.policies == own.policies
        && filled.counted == own.counted
        && outputs(filled) == outputs(own)
        && filled.subject == own.subject
}

#[cfg(test)]
mod tests;
