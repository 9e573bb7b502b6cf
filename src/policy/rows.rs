//! Row policies (`[[policy]]` in a table policy file): which rows of a table each role may
//! read, update, delete and write, as SQL conditions over the table's columns with the
//! session user's attributes (`:user.NAME`).

use std::collections::BTreeMap;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// The commands a row policy applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commands(pub(super) u8);

impl Commands {
    /// SELECT (and every read of the table)
    pub const SELECT: u8 = 1;
    /// INSERT
    pub const INSERT: u8 = 2;
    /// UPDATE
    pub const UPDATE: u8 = 4;
    /// DELETE
    pub const DELETE: u8 = 8;
    /// every command
    pub const ALL: u8 = 15;

    /// True when the policy applies to `command` (one of the constants).
    pub fn has(self, command: u8) -> bool {
        self.0 & command != 0
    }

    /// The names of the commands, for reports and native policies.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::SELECT, "select"),
            (Self::INSERT, "insert"),
            (Self::UPDATE, "update"),
            (Self::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(c, _)| self.has(*c))
        .map(|(_, n)| n)
        .collect()
    }
}

/// A row policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPolicy {
    /// its name, unique within the table
    pub name: String,
    /// the roles it applies to
    pub roles: Vec<String>,
    /// the commands it applies to
    pub commands: Commands,
    /// the rows it lets the roles read, update and delete (all rows when absent)
    pub using: Option<PolicyExpr>,
    /// what rows inserted or updated must satisfy (all rows when absent)
    pub check: Option<PolicyExpr>,
}

/// A policy condition: SQL text in which `:user.NAME` stands for a user attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExpr {
    /// the text, split at the attribute references: text, attribute, text, ...
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Sql(String),
    Attribute(String),
}

/// How a user attribute is written into a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    /// a TOML integer: `bigint`
    Integer,
    /// a TOML float: `double precision`
    Float,
    /// a TOML boolean
    Boolean,
    /// a TOML string: `text`
    Text,
}

impl AttributeType {
    /// The type of a TOML value usable as an attribute.
    pub fn of(v: &toml::Value) -> Option<Self> {
        Some(match v {
            toml::Value::Integer(_) => Self::Integer,
            toml::Value::Float(f) if f.is_finite() => Self::Float,
            toml::Value::Boolean(_) => Self::Boolean,
            toml::Value::String(s) if !s.contains('\0') => Self::Text,
            _ => return None,
        })
    }

    fn cast(self) -> &'static str {
        match self {
            Self::Integer => "bigint",
            Self::Float => "double precision",
            Self::Boolean => "boolean",
            Self::Text => "text",
        }
    }
}

/// `v` as an SQL literal whatever `standard_conforming_strings` says (strings as `E'...'`).
pub fn literal(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}::double precision"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) if !s.contains('\0') => quote_text(s),
        _ => return None,
    })
}

/// `s` as a quoted SQL identifier (`"name"`, inner quotes doubled): it names exactly `s`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal whatever `standard_conforming_strings` says: `E'...'`.
pub fn quote_text(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `v` as the text of a setting (`phigate.user.NAME`) that the native policies cast back.
pub fn setting_text(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) if !s.contains('\0') => s.clone(),
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}"),
        toml::Value::Integer(_) | toml::Value::Boolean(_) => v.to_string(),
        _ => return None,
    })
}

fn attribute_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

impl PolicyExpr {
    /// Parses and validates a condition: one SQL expression, attribute references as
    /// `:user.NAME` (lower-case letters, digits, `_`), no comments or dollar quotes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut sql = String::new();
        let mut chars = text.char_indices().peekable();
        let mut quote: Option<char> = None;
        while let Some((i, c)) = chars.next() {
            match quote {
                Some(q) => {
                    sql.push(c);
                    if c == q {
                        quote = None;
                    }
                    continue;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == '$' => return Err("dollar quoting is not allowed here".into()),
                None if text[i..].starts_with("--") || text[i..].starts_with("/*") => {
                    return Err("comments are not allowed here".into());
                }
                None if text[i..].starts_with(":user.") => {
                    for _ in 0..5 {
                        chars.next();
                    }
                    let mut name = String::new();
                    while let Some((_, c)) = chars.next_if(|(_, c)| attribute_char(*c)) {
                        name.push(c);
                    }
                    if name.is_empty() {
                        return Err(
                            "`:user.` must be followed by an attribute name (a-z, 0-9, _)".into(),
                        );
                    }
                    parts.push(Part::Sql(std::mem::take(&mut sql)));
                    parts.push(Part::Attribute(name));
                    continue;
                }
                None => {}
            }
            sql.push(c);
        }
        if quote.is_some() {
            return Err("unterminated quoted string or identifier".into());
        }
        parts.push(Part::Sql(sql));
        let expr = Self { parts };
        let probe = expr.render(|_| "NULL".to_owned());
        let dialect = PostgreSqlDialect {};
        let mut parser = Parser::new(&dialect)
            .try_with_sql(&probe)
            .map_err(|e| format!("not a valid SQL condition: {e}"))?;
        parser
            .parse_expr()
            .map_err(|e| format!("not a valid SQL condition: {e}"))?;
        if parser.peek_token().token != Token::EOF {
            return Err("not one SQL condition (text follows the expression)".into());
        }
        Ok(expr)
    }

    /// The attributes the condition refers to.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Attribute(a) => Some(a.as_str()),
            Part::Sql(_) => None,
        })
    }

    fn render(&self, mut attribute: impl FnMut(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Sql(s) => out.push_str(s),
                Part::Attribute(a) => out.push_str(&attribute(a)),
            }
        }
        out
    }

    /// The condition for one user: each attribute as a quoted literal. `None` when the user
    /// lacks an attribute (the policy set validates that this never happens).
    pub(crate) fn for_user(&self, attributes: &BTreeMap<String, toml::Value>) -> Option<String> {
        let mut missing = false;
        let text = self.render(|a| match attributes.get(a).and_then(literal) {
            Some(l) => l,
            None => {
                missing = true;
                "NULL".to_owned()
            }
        });
        (!missing).then_some(text)
    }

    /// The condition as a native PostgreSQL policy reads it: each attribute from the
    /// session setting `phigate.user.NAME` that phigate sets, cast to its type.
    pub fn native(&self, types: &BTreeMap<String, AttributeType>) -> String {
        self.render(|a| {
            let ty = types.get(a).copied().unwrap_or(AttributeType::Text);
            format!(
                "(NULLIF({}, ''))::{}",
                super::native::setting(&format!("phigate.user.{a}")),
                ty.cast()
            )
        })
    }

    /// The condition as written, for reports.
    pub fn text(&self) -> String {
        self.render(|a| format!(":user.{a}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_quoted_literals_or_settings() {
        let e = PolicyExpr::parse("clinic_id = :user.clinic_id AND ward <> ':user.x'").unwrap();
        assert_eq!(e.attributes().collect::<Vec<_>>(), ["clinic_id"]);
        let mut attrs = BTreeMap::new();
        attrs.insert("clinic_id".to_owned(), toml::Value::Integer(3));
        assert_eq!(
            e.for_user(&attrs).unwrap(),
            "clinic_id = 3 AND ward <> ':user.x'"
        );
        attrs.insert(
            "clinic_id".to_owned(),
            toml::Value::String("O'Brien\\'; DROP TABLE x; --".into()),
        );
        let sql = e.for_user(&attrs).unwrap();
        assert_eq!(
            sql,
            "clinic_id = E'O''Brien\\\\''; DROP TABLE x; --' AND ward <> ':user.x'"
        );
        assert!(e.for_user(&BTreeMap::new()).is_none());
        let mut types = BTreeMap::new();
        types.insert("clinic_id".to_owned(), AttributeType::Integer);
        assert!(
            e.native(&types).contains(
                "(NULLIF((SELECT phigate.setting(E'phigate.user.clinic_id')), ''))::bigint"
            )
        );
        assert_eq!(
            e.text(),
            "clinic_id = :user.clinic_id AND ward <> ':user.x'"
        );
    }

    #[test]
    fn invalid_conditions_are_refused() {
        for bad in [
            "clinic_id = ",
            "clinic_id = 1; DROP TABLE patients",
            "clinic_id = :user.",
            "clinic_id = 1 -- comment",
            "x = $$a$$",
            "x = 'open",
        ] {
            assert!(PolicyExpr::parse(bad).is_err(), "{bad}");
        }
    }
}
