//! COPY of a protected table: which fields are protected, the row filter (COPY TO of a
//! filtered table becomes COPY of a query), and the options as a [`CopyFormat`].

#[allow(clippy::wildcard_imports)]
use super::*;
use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget};

/// The COPY format phigate can transform, from the statement's options; `None` for
/// binary format or options it does not handle.
pub(super) fn copy_format(
    options: &[sqlparser::ast::CopyOption],
    legacy: &[sqlparser::ast::CopyLegacyOption],
) -> Option<CopyFormat> {
    use sqlparser::ast::{CopyLegacyCsvOption as L, CopyLegacyOption as LO, CopyOption as O};
    let byte = |c: char| u8::try_from(c).ok().filter(u8::is_ascii);
    let mut f = CopyFormat::text();
    let mut delimiter = None;
    let mut null = None;
    let mut escape = None;
    for o in options {
        match o {
            O::Format(name) => match name.value.to_lowercase().as_str() {
                "text" => f.csv = false,
                "csv" => f.csv = true,
                "binary" => f.binary = true,
                _ => return None,
            },
            O::Delimiter(c) => delimiter = Some(byte(*c)?),
            O::Null(s) => null = Some(s.clone()),
            O::Header(h) => f.header = *h,
            O::Quote(c) => f.quote = byte(*c)?,
            O::Escape(c) => escape = Some(byte(*c)?),
            O::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {
            }
            O::Freeze(_) => {}
            _ => return None,
        }
    }
    for o in legacy {
        match o {
            LO::Csv(csv) => {
                f.csv = true;
                for c in csv {
                    match c {
                        L::Header => f.header = true,
                        L::Quote(q) => f.quote = byte(*q)?,
                        L::Escape(e) => escape = Some(byte(*e)?),
                        _ => return None,
                    }
                }
            }
            LO::Delimiter(c) => delimiter = Some(byte(*c)?),
            LO::Null(s) => null = Some(s.clone()),
            LO::Header => f.header = true,
            LO::Binary => f.binary = true,
            _ => return None,
        }
    }
    if f.binary {
        // PostgreSQL refuses the text options in binary mode
        return (!f.csv && delimiter.is_none() && null.is_none() && escape.is_none() && !f.header)
            .then(CopyFormat::binary);
    }
    if f.csv {
        f.delimiter = b',';
        f.null = String::new();
        f.escape = escape.unwrap_or(f.quote);
    }
    f.delimiter = delimiter.unwrap_or(f.delimiter);
    f.null = null.unwrap_or(f.null);
    Some(f)
}

pub(super) fn literal_text(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s)
        | Value::Number(s, _) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        Value::Boolean(b) => Some(if *b { "true" } else { "false" }.to_owned()),
        _ => None,
    }
}

impl Walker<'_> {
    /// COPY to or from STDIN/STDOUT: the plan names each field's protected column.
    pub(super) fn copy(
        &mut self,
        source: &mut CopySource,
        (to, target): (bool, &CopyTarget),
        (options, legacy): (&[CopyOption], &[CopyLegacyOption]),
        payload: bool,
    ) -> Res {
        let (columns, filtered) = match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let Some(t) = self.protected_table(table_name) else {
                    return Ok(());
                };
                self.copy_table(&t, columns, to)?
            }
            CopySource::Query(q) if to => match self.copy_query(q)? {
                Some(columns) => (columns, None),
                None => return Ok(()),
            },
            CopySource::Query(_) => {
                return Err(Refusal::syntax("COPY (query) FROM is not valid"));
            }
        };
        let stdio = matches!(
            (to, target),
            (true, CopyTarget::Stdout) | (false, CopyTarget::Stdin)
        );
        if !stdio || payload || self.copy.is_some() {
            return Err(Refusal::unsupported(
                "COPY to or from a file or program (only STDIN and STDOUT)",
                self.first(),
            ));
        }
        let format = copy_format(options, legacy).ok_or_else(|| {
            Refusal::unsupported("these COPY options (text, CSV with DELIMITER, NULL, HEADER, QUOTE, ESCAPE, or binary)", self.first())
        })?;
        if !format.binary && !self.ctx.encoding.ascii_safe() {
            return Err(Refusal::new(
                "0A000",
                format!(
                    "phigate cannot split text COPY data of protected table {} in a client encoding whose characters may hold ASCII bytes",
                    self.first()
                ),
                "use COPY (FORMAT binary), or the UTF8 client encoding",
            ));
        }
        for c in columns.iter().flatten() {
            self.note(c);
        }
        if let Some(q) = filtered {
            *source = CopySource::Query(q);
        }
        self.copy = Some(CopyPlan {
            from_client: !to,
            columns,
            format,
        });
        Ok(())
    }

    /// The fields of a COPY of table `t`, and the query a COPY TO reads instead when its
    /// rows are filtered or capped (`sql::cap` wraps it).
    #[allow(clippy::type_complexity)]
    fn copy_table(
        &mut self,
        t: &Arc<Table>,
        columns: &[Ident],
        to: bool,
    ) -> Res<(Vec<Option<Arc<Column>>>, Option<Box<Query>>)> {
        if !to && !t.policies.is_empty() && self.access.filtered() {
            return Err(Refusal::new(
                "0A000",
                format!(
                    "COPY FROM into table {} is not supported: it has row policies",
                    t.name
                ),
                "use INSERT (its rows are checked against the policies)",
            ));
        }
        let filter = match to {
            true => self.row_filter(t, crate::policy::Commands::SELECT)?,
            false => None,
        };
        let as_query = to && (filter.is_some() || self.access.row_cap().is_some());
        let filtered = match as_query {
            true => Some(filtered_copy(t, columns, filter.as_deref())?),
            false => None,
        };
        let names: Vec<String> = if columns.is_empty() {
            t.columns.clone()
        } else {
            columns.iter().map(fold).collect()
        };
        let cols: Vec<Option<Arc<Column>>> =
            names.iter().map(|n| t.protected.get(n).cloned()).collect();
        if to {
            for c in cols.iter().flatten() {
                self.copied_out(c)?;
            }
        }
        Ok((cols, filtered))
    }

    /// The fields of `COPY (query) TO`; `None` when none is protected.
    fn copy_query(&mut self, q: &mut Query) -> Res<Option<Vec<Option<Arc<Column>>>>> {
        let (named, complete) = self.query(q, Output::Origin)?;
        if named.iter().all(|(_, c)| c.is_none()) {
            return Ok(None);
        }
        if !complete {
            return Err(Refusal::unsupported(
                "COPY of a query whose columns phigate cannot list",
                self.first(),
            ));
        }
        for c in named.iter().filter_map(|(_, c)| c.as_ref()) {
            self.copied_out(c)?;
        }
        Ok(Some(named.into_iter().map(|(_, c)| c).collect()))
    }
}

/// The query a COPY TO of table `t` runs instead: its rows, under `filter` if any.
fn filtered_copy(t: &Table, columns: &[Ident], filter: Option<&str>) -> Res<Box<Query>> {
    let list = if columns.is_empty() {
        "*".to_owned()
    } else {
        columns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let filter = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    let sql = format!(
        "SELECT {list} FROM {}.{}{filter}",
        Ident::with_quote('"', &t.name.schema),
        Ident::with_quote('"', &t.name.table),
    );
    let parsed =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql);
    match parsed.ok().and_then(|mut v| v.pop()) {
        Some(Statement::Query(q)) => Ok(q),
        _ => Err(Refusal::unsupported(
            "a row policy that does not parse",
            &t.name,
        )),
    }
}
