//! Statement analysis and rewriting: which protected tables a statement touches, whether
//! phigate can run it correctly on ciphertext, and the rewritten text to send upstream.
//!
//! Pure: SQL text in, an [`Analysis`] out. The [`Analyzer`] keeps bounded caches so a
//! statement text is analysed once per role (a prepared statement pays at Parse only),
//! and so are statements that differ only in their values (`shape`).
//! Statements whose text cannot name a protected table (a byte scan) are not parsed at all.

mod analyse;
mod bound;
mod cache;
mod cap;
pub mod catalog;
pub use bound::BoundSetting;
mod comment;
mod conforming;
mod firewall;
mod functions;
pub(crate) mod lex;
mod refusal;
mod search_path;
mod shape;
mod text;

use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use cap::CAP_MESSAGE;
pub use catalog::{Catalog, Column};
pub(crate) use comment::decode as percent_decode;
pub use comment::tag as comment_tag;
pub(crate) use conforming::conforming;
pub use firewall::FORBIDDEN_WORDS;
pub use refusal::Refusal;
pub use search_path::{Change as SearchPathChange, SearchPath, parse_value as parse_search_path};
pub use text::{Literal, Sql};

use cache::{Bounded, CACHEABLE_LEN, CacheKey};
use shape::Shaped;

use std::collections::BTreeMap;

use crate::policy::{PolicySet, ReadOutcome, Role};
use crate::protocol::value::Context;

/// How a bound parameter must be transformed before it reaches PostgreSQL.
#[derive(Debug, Clone)]
pub enum ParamUse {
    /// one value of the column: encrypt it
    Scalar(Arc<Column>),
    /// an array of values of the column (`col = ANY($n)`): encrypt each element
    Array(Arc<Column>),
}

impl ParamUse {
    /// The column whose cipher applies.
    pub fn column(&self) -> &Arc<Column> {
        match self {
            Self::Scalar(c) | Self::Array(c) => c,
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Scalar(a), Self::Scalar(b)) | (Self::Array(a), Self::Array(b)) => {
                a.identity == b.identity && a.logical_type() == b.logical_type()
            }
            _ => false,
        }
    }
}

pub use crate::protocol::copy::CopyFormat;

/// A COPY to or from a protected table: which fields to encrypt or decrypt.
#[derive(Debug)]
pub struct CopyPlan {
    /// COPY ... FROM STDIN: the client sends the rows (else the server does)
    pub from_client: bool,
    /// per field of each row: the protected column it holds
    pub columns: Vec<Option<Arc<Column>>>,
    /// the data format
    pub format: CopyFormat,
}

/// A statement phigate rewrote.
#[derive(Debug, Default)]
pub struct Plan {
    /// the text to send upstream, with slots for the values the `encryption` module
    /// encrypts at each execution
    pub sql: Sql,
    /// per parameter ($1 is index 0): how to transform it, `None` to pass it unchanged
    pub params: Vec<Option<ParamUse>>,
    /// the number of parameters PostgreSQL counts in the client's statement (its highest
    /// `$n`); phigate numbers its own hidden parameters after them
    pub arity: usize,
    /// per parameter: the type a cast on it named, which PostgreSQL would have inferred
    /// for it (phigate removes such casts from encrypted parameters)
    pub param_casts: Vec<Option<crate::protocol::value::Cast>>,
    /// the protected tables the statement touches
    pub tables: Vec<Arc<catalog::Table>>,
    /// the protected columns it reads or writes (`schema.table.column`)
    pub columns: Vec<String>,
    /// the row policies the rewrite applied (`schema.table.policy`)
    pub policies: Vec<String>,
    /// the COPY the statement runs, when it copies a protected table
    pub copy: Option<CopyPlan>,
    /// the protected column behind each result column, when the text is one statement
    /// whose outputs phigate can list: used where PostgreSQL reports no origin (set
    /// operations, expressions over CTEs)
    pub outputs: Option<Vec<Option<Arc<Column>>>>,
    /// the rows it returns count against the user's hourly row budget: its reads of
    /// protected tables are capped (see `max_rows` in roles.toml), or it fetches from a
    /// cursor
    pub counted: bool,
    /// who it was analysed for (column outcomes in its results are theirs)
    pub subject: Option<Subject>,
}

/// What to do with a statement.
#[derive(Debug, Clone)]
pub enum Analysis {
    /// forward it unchanged: it touches no protected table
    Pass,
    /// forward it unchanged, and check at each Bind that the values bound to these
    /// parameters name settings the client may read or set; it touches no protected table
    Bound(Arc<[BoundSetting]>),
    /// forward the plan's text and transform its parameters
    Rewrite(Arc<Plan>),
    /// refuse it
    Refuse(Arc<Refusal>),
    /// `SET phigate.break_glass = '<reason>'` by a role that may declare an emergency
    Declare {
        /// the reason given
        reason: String,
    },
    /// `SET phigate.end_user = '<user>'` (`Some`) or `RESET phigate.end_user`: whether the
    /// session's user may name an end user is the session's to decide
    EndUser {
        /// the end user named
        name: Option<String>,
    },
}

/// Who a statement runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// the user (row policies read its attributes)
    pub user: Arc<str>,
    /// the user's role
    pub role: Arc<str>,
    /// an emergency is declared: row policies, masks and column denials are lifted
    pub emergency: bool,
}

/// What the walk over a statement enforces for its subject.
pub(crate) struct Access<'a> {
    /// who the statement runs for
    pub who: &'a Subject,
    /// the role's settings
    pub settings: &'a Role,
    /// the user's attributes
    pub attributes: &'a BTreeMap<String, toml::Value>,
}

impl Access<'_> {
    /// The role's name.
    pub fn role(&self) -> &str {
        &self.who.role
    }

    /// What the subject reads from `col`.
    pub fn outcome(&self, col: &Column) -> ReadOutcome {
        self.who.outcome(col)
    }

    /// The most rows one statement may return from protected tables, when the role has a
    /// cap and no emergency is declared.
    fn row_cap(&self) -> Option<u64> {
        (!self.who.emergency)
            .then(|| self.settings.row_cap())
            .flatten()
    }

    /// Row policies apply.
    fn filtered(&self) -> bool {
        !self.who.emergency && !self.settings.bypass_row_policies
    }
}

/// The protected table names the identifiers of a statement (not its strings or comments)
/// spell, read as PostgreSQL reads names ([`lex::name`]); refused when an identifier may or
/// may not spell one ([`unsure`]).
fn protected_names(catalog: &Catalog, tokens: &[lex::Token<'_>]) -> Result<Vec<String>, Refusal> {
    let mut names: Vec<String> = Vec::new();
    for t in tokens {
        let lex::Token::Word { text, quoted } = t else {
            continue;
        };
        let name = lex::name(text, *quoted);
        match catalog.needles().iter().find(|n| **n == name) {
            Some(n) if !names.contains(n) => names.push(n.clone()),
            Some(_) => {}
            None if !*quoted && !text.is_ascii() => unsure(catalog, text)?,
            None => {}
        }
    }
    Ok(names)
}

/// Refuses an unquoted identifier with non-ASCII letters that names no protected table as
/// PostgreSQL in UTF-8 (and [`lex::name`]) fold it, ASCII only, but may name one in a
/// database whose server encoding folds those letters too (single-byte ones, by the
/// server's locale).
fn unsure(catalog: &Catalog, text: &str) -> Result<(), Refusal> {
    let lower = text.to_lowercase();
    match catalog.needles().iter().find(|n| n.to_lowercase() == lower) {
        None => Ok(()),
        Some(table) => Err(Refusal::new(
            "0A000",
            format!(
                "phigate cannot tell whether {text} names the protected table {table}: databases fold non-ASCII letters by their encoding"
            ),
            // (a policy's table name holds no double quote)
            &format!("write the table's name as stored, in double quotes: \"{table}\""),
        )),
    }
}

/// Analyses a statement that may touch a protected table: it names one of `names`, or
/// may FETCH from a cursor.
fn analyse_touched(
    catalog: &Catalog,
    access: &Access<'_>,
    (ctx, path): (Context, &SearchPath),
    sql: &str,
    names: &[String],
) -> Result<Option<Plan>, Refusal> {
    if !access.who.emergency
        && let Some(t) = names
            .iter()
            .flat_map(|n| catalog.tables_named(n))
            .find(|t| !access.settings.may_use(&t.name))
    {
        return Err(Refusal::table_denied(access.role(), &t.name));
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| {
        Refusal::new(
            "0A000",
            format!(
                "phigate cannot parse a statement that names a protected table ({})",
                parse_position(&e)
            ),
            "phigate refuses what it cannot analyse; rewrite the statement in a simpler form",
        )
    })?;
    if !names.is_empty() {
        for stmt in &statements {
            functions::allowed_functions(stmt, access)?;
        }
    }
    let mut walker = analyse::Walker::new(catalog, access, ctx, path);
    for stmt in &mut statements {
        walker.statement(stmt)?;
    }
    if walker.unqualified {
        return Err(Refusal::unqualified());
    }
    let counted = cap_rows(&mut statements, access, catalog)?;
    if walker.tables.is_empty()
        && walker.params.iter().all(Option::is_none)
        && walker.copy.is_none()
        && !walker.fetch
    {
        return Ok(None);
    }
    let outputs = if statements.len() == 1 {
        walker.outputs.take()
    } else {
        None
    };
    let rendered = statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let text = sql;
    let sql = Sql::split(&rendered, std::mem::take(&mut walker.literals)).ok_or_else(|| {
        Refusal::new(
            "0A000",
            "phigate cannot rewrite a statement holding a NUL character".into(),
            "PostgreSQL does not accept NUL in text either; remove it",
        )
    })?;
    Ok(Some(Plan {
        arity: lex::arity(text),
        sql,
        params: walker.params,
        param_casts: walker.param_casts,
        columns: walker.columns.take(),
        policies: walker.applied.take(),
        tables: walker.tables,
        copy: walker.copy,
        outputs,
        counted,
        subject: Some(access.who.clone()),
    }))
}

/// The analysis an [`analyse_touched`] result stands for.
fn outcome(result: Result<Option<Plan>, Refusal>) -> Analysis {
    match result {
        Ok(None) => Analysis::Pass,
        Ok(Some(plan)) => Analysis::Rewrite(Arc::new(plan)),
        Err(r) => Analysis::Refuse(Arc::new(r)),
    }
}

/// Caps the rows the statements return when the role has a row cap; true when the rows
/// of any count against the user's hourly budget.
fn cap_rows(
    statements: &mut [sqlparser::ast::Statement],
    access: &Access<'_>,
    catalog: &Catalog,
) -> Result<bool, Refusal> {
    let Some(cap) = access.row_cap() else {
        return Ok(false);
    };
    let mut counted = false;
    for stmt in statements {
        counted |= cap::apply(stmt, cap, catalog)? == cap::Capped::Yes;
    }
    Ok(counted)
}

impl Plan {
    /// A plan that only replaces the statement's text.
    pub fn text(sql: String) -> Self {
        Self {
            sql: Sql::plain(sql),
            ..Self::default()
        }
    }
}

/// The application_name a lone `SET [SESSION] application_name` sets (not SET LOCAL).
pub fn application_name_set(sql: &str) -> Option<String> {
    let tokens = firewall::read(sql).ok()?;
    match firewall::screen(&tokens, "", &Role::default()) {
        Ok(firewall::Screened::ApplicationName {
            value,
            local: false,
        }) => Some(value),
        _ => None,
    }
}

/// `SET application_name` as phigate sends it upstream: `phigate:<user>/<name>`, so the
/// database's own logs and `pg_stat_activity` keep the user.
fn application_name(user: &str, value: &str, local: bool) -> String {
    let name = if value.is_empty() {
        format!("phigate:{user}")
    } else {
        format!("phigate:{user}/{value}")
    };
    format!(
        "SET {}application_name = {}",
        if local { "LOCAL " } else { "" },
        crate::policy::quote_text(&name)
    )
}

/// The reason in `SET phigate.break_glass = '<reason>'` (or `TO`), if any.
fn declared_reason(sql: &str) -> Option<String> {
    let string = lex::Lexer::new(sql).find(|l| matches!(l.kind, lex::Kind::Str(_)))?;
    let value = lex::literal_value(sql, &string);
    let reason = String::from_utf8_lossy(&value).trim().to_owned();
    (!reason.is_empty()).then_some(reason)
}

/// The key of `sql` sent by `role` among the texts that passed: the role's length, the
/// role, the text (one string, so a lookup borrows it).
///
/// Whether a text passes depends on nothing else: the firewall screens it for the role,
/// and it passes when it names no protected table, which is a matter of its words. A text
/// is kept only without literals: one with values (a statement interpolated by the
/// client) is rarely sent again, and would crowd out the texts that are (an unnamed
/// statement prepared again for each execution, `BEGIN`, `COMMIT`).
fn passed_key<'k>(key: &'k mut String, role: &str, sql: &str) -> &'k str {
    key.clear();
    key.reserve(role.len() + sql.len() + 8);
    key.push_str(itoa::Buffer::new().format(role.len()));
    key.push(':');
    key.push_str(role);
    key.push_str(sql);
    key
}

/// True when the text of `tokens` holds a string or number literal (a dollar-quoted
/// string has neither quote nor digit).
fn has_literal(tokens: &[lex::Token<'_>]) -> bool {
    (tokens.iter()).any(|t| matches!(t, lex::Token::Str(_) | lex::Token::Punct(b'0')))
}

/// True when `sql` may FETCH from a cursor: its rows may come from a protected table, so
/// the result is inspected even though the text names none.
fn mentions_fetch(sql: &str) -> bool {
    lex::contains_ignore_case(sql.as_bytes(), b"fetch")
}

/// Where the parser stopped, without the tokens it found there (they may be values).
fn parse_position(e: &sqlparser::parser::ParserError) -> String {
    let text = e.to_string();
    match text.rfind(" at Line: ") {
        Some(i) => text[i + 1..].to_owned(),
        None => "syntax not understood".to_owned(),
    }
}

impl Subject {
    /// What the subject reads from `col`.
    pub fn outcome(&self, col: &Column) -> ReadOutcome {
        if self.emergency {
            ReadOutcome::Plaintext
        } else {
            col.outcome(&self.role)
        }
    }
}

/// The firewall and the analysis, for one policy set, with caches keyed by user,
/// emergency, session context and text, or shape.
#[derive(Debug)]
pub struct Analyzer {
    catalog: Arc<Catalog>,
    policies: Arc<PolicySet>,
    /// analyses by text
    cache: Bounded<CacheKey, Analysis>,
    /// plans by shape (see [`shape`])
    shapes: Bounded<CacheKey, Shaped>,
    /// texts without literals that passed unchanged, by role (see [`passed_key`])
    passed: Bounded<Box<str>, ()>,
}

impl Analyzer {
    /// An analyser enforcing `policies` over `catalog`.
    pub fn new(catalog: Arc<Catalog>, policies: Arc<PolicySet>) -> Self {
        Self {
            catalog,
            policies,
            cache: Bounded::new(),
            shapes: Bounded::new(),
            passed: Bounded::new(),
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The policy set.
    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.policies
    }

    /// Screens and analyses `sql` for `who` on the default search path, from the cache
    /// when it was seen before.
    pub fn analyse(&self, who: &Subject, ctx: Context, sql: &str) -> Analysis {
        self.analyse_on(who, ctx, &SearchPath::Default, sql)
    }

    /// The firewall's tokens of `sql` and the protected tables they name; refused when it
    /// cannot be read, or when a name in it may or may not be a protected table's.
    fn read<'a>(&self, sql: &'a str) -> Result<(Vec<lex::Token<'a>>, Vec<String>), Refusal> {
        let tokens = firewall::read(sql)?;
        let names = protected_names(&self.catalog, &tokens)?;
        Ok((tokens, names))
    }

    /// [`Analyzer::analyse`] on the session's search path `path`.
    pub fn analyse_on(
        &self,
        who: &Subject,
        ctx: Context,
        path: &SearchPath,
        sql: &str,
    ) -> Analysis {
        let (Some(settings), Some(user)) =
            (self.policies.role(&who.role), self.policies.user(&who.user))
        else {
            return Analysis::Refuse(Arc::new(Refusal::new(
                "42501",
                format!(
                    "user {} or role {} is no longer declared in the policies",
                    who.user, who.role
                ),
                "reconnect; an administrator changed the policies",
            )));
        };
        if self.passed_before(&who.role, sql) {
            return Analysis::Pass;
        }
        let (tokens, names) = match self.read(sql) {
            Ok(read) => read,
            Err(r) => return Analysis::Refuse(Arc::new(r)),
        };
        match firewall::screen(&tokens, &who.role, settings) {
            Err(r) => return Analysis::Refuse(Arc::new(r)),
            Ok(firewall::Screened::Declare) => {
                return match declared_reason(sql) {
                    _ if !settings.break_glass => Analysis::Refuse(Arc::new(Refusal::new(
                        "42501",
                        format!("role {} may not declare an emergency", who.role),
                        "roles.toml lists the roles that may (break_glass)",
                    ))),
                    None => Analysis::Refuse(Arc::new(Refusal::new(
                        "22023",
                        "an emergency declaration needs a reason".into(),
                        "SET phigate.break_glass = '<reason>'",
                    ))),
                    Some(reason) => Analysis::Declare { reason },
                };
            }
            Ok(firewall::Screened::EndUser(name)) => return Analysis::EndUser { name },
            Ok(firewall::Screened::ApplicationName { value, local }) => {
                return Analysis::Rewrite(Arc::new(Plan::text(application_name(
                    &who.user, &value, local,
                ))));
            }
            Ok(firewall::Screened::Allowed) => {}
            Ok(firewall::Screened::Bound(bound)) => {
                if names.is_empty() && !mentions_fetch(sql) {
                    return Analysis::Bound(bound.into());
                }
                return Analysis::Refuse(Arc::new(Refusal::new(
                    "0A000",
                    "phigate takes a setting's name from a parameter only in statements that name no protected table".into(),
                    "write the setting's name as a plain string literal, or read it in a statement of its own",
                )));
            }
        }
        if self.catalog.needles().is_empty() || (names.is_empty() && !mentions_fetch(sql)) {
            if sql.len() <= CACHEABLE_LEN
                && lex::literal_free(sql.as_bytes())
                && !has_literal(&tokens)
            {
                let key = passed_key(&mut String::new(), &who.role, sql).into();
                self.passed.keep(key, sql.len(), ());
            }
            return Analysis::Pass;
        }
        let access = Access {
            who,
            settings,
            attributes: &user.attributes,
        };
        self.analyse_cached(&access, (ctx, path), sql, &names)
    }

    /// The analysis of a statement that names protected tables (`names`): from the cache
    /// by shape (looked up first: a statement whose shape fits is never kept by text), or
    /// by text, or made and kept.
    fn analyse_cached(
        &self,
        access: &Access<'_>,
        (ctx, path): (Context, &SearchPath),
        sql: &str,
        names: &[String],
    ) -> Analysis {
        let who = (access.who.user.clone(), access.who.emergency);
        let session = (
            ctx.zone,
            ctx.encoding.ascii_safe(),
            ctx.date_style.order,
            path.clone(),
        );
        let shape = (sql.len() <= CACHEABLE_LEN)
            .then(|| shape::of(sql))
            .flatten();
        let shape_key = (shape.as_ref()).map(|s| {
            (
                who.0.clone(),
                who.1,
                session.clone(),
                s.text.as_str().into(),
            )
        });
        let shaped = shape_key.as_ref().and_then(|k| self.shapes.get(k));
        match (&shaped, &shape) {
            (Some(Shaped::Plan(template)), Some(shape)) => {
                if let Some(plan) = shape::fill(template, sql, shape, ctx) {
                    return Analysis::Rewrite(Arc::new(plan));
                }
            }
            (Some(Shaped::Pass), _) => return Analysis::Pass,
            _ => {}
        }
        let key = (who.0, who.1, session, Box::<str>::from(sql));
        if let Some(hit) = self.cache.get(&key) {
            return hit;
        }
        let analysis = outcome(analyse_touched(
            &self.catalog,
            access,
            (ctx, path),
            sql,
            names,
        ));
        if let (None, Some(k), Some(shape)) = (shaped, shape_key, &shape) {
            let template = analyse_touched(&self.catalog, access, (ctx, path), &shape.text, names);
            let verdict = Shaped::judge(template, &analysis, (sql, shape, ctx));
            let fits = !matches!(verdict, Shaped::Unfit);
            let len = k.3.len();
            self.shapes.keep(k, len, verdict);
            if fits {
                return analysis;
            }
        }
        if sql.len() <= CACHEABLE_LEN {
            self.cache.keep(key, sql.len(), analysis.clone());
        }
        analysis
    }

    /// True when `sql` sent by `role` passed unchanged before (see [`passed_key`]). The
    /// key is written into a buffer kept per thread: a statement not found costs no
    /// allocation.
    fn passed_before(&self, role: &str, sql: &str) -> bool {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        if !lex::literal_free(sql.as_bytes()) {
            return false;
        }
        KEY.with_borrow_mut(|key| {
            let found = self.passed.get(passed_key(key, role, sql)).is_some();
            if key.capacity() > 4096 {
                *key = String::new();
            }
            found
        })
    }

    /// The protected tables (`schema.table`) and columns (`schema.table.column`) the
    /// identifiers of `sql` name: what the audit record of a statement phigate refused
    /// says it referred to (a refusal stops analysis before it has listed them). Empty
    /// when the text cannot be read.
    pub(crate) fn referred(&self, sql: &str) -> (Vec<String>, Vec<String>) {
        let Ok(tokens) = firewall::read(sql) else {
            return (Vec::new(), Vec::new());
        };
        let names = protected_names(&self.catalog, &tokens).unwrap_or_default();
        let tables: Vec<&Arc<catalog::Table>> = (names.iter())
            .flat_map(|n| self.catalog.tables_named(n))
            .collect();
        let named = |column: &str| {
            tokens.iter().any(|t| {
                matches!(t, lex::Token::Word { text, quoted } if lex::name(text, *quoted) == column)
            })
        };
        let mut columns: Vec<String> = (tables.iter())
            .flat_map(|t| {
                t.protected
                    .keys()
                    .filter(|c| named(c))
                    .map(move |c| format!("{}.{c}", t.name))
            })
            .collect();
        columns.sort();
        (tables.iter().map(|t| t.name.to_string()).collect(), columns)
    }
}

#[cfg(test)]
pub(crate) mod tests;
