//! Which functions a statement that names a protected table may call: phigate's built-in
//! list (aggregates, window functions, scalar functions over the values given to them)
//! and the role's `functions`; never one over a whole row.

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr};

use super::{Access, Refusal};

/// Functions any role may call in a statement that names a protected table: aggregates,
/// window functions and scalar functions that compute over the values given to them and
/// nothing else (no whole rows, no SQL in strings, no side channels such as sleeping).
const BUILTIN_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "string_agg",
    "array_agg",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "lower",
    "upper",
    "initcap",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "substr",
    "substring",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "concat",
    "concat_ws",
    "replace",
    "left",
    "right",
    "position",
    "strpos",
    "split_part",
    "starts_with",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "mod",
    "power",
    "sqrt",
    "sign",
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "make_date",
    "make_interval",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "unnest",
    "generate_series",
    "format",
    "md5",
    "encode",
    "decode",
    "array_length",
    "cardinality",
    "jsonb_build_object",
    "json_build_object",
];

/// Every function a statement naming a protected table calls must be built in or
/// allowed to the role (`functions` in roles.toml).
pub(super) fn allowed_functions(
    stmt: &sqlparser::ast::Statement,
    access: &Access<'_>,
) -> Result<(), Refusal> {
    use sqlparser::ast::{Visit, Visitor};
    struct Calls<'a, 'b>(&'a Access<'b>);
    impl Visitor for Calls<'_, '_> {
        type Break = String;
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<String> {
            if let Expr::Function(f) = e {
                // Whole rows as arguments (`array_agg(p.*)`) carry every column.
                if let sqlparser::ast::FunctionArguments::List(l) = &f.args
                    && l.args.iter().any(|a| {
                        matches!(
                            a,
                            FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_))
                                | FunctionArg::Named {
                                    arg: FunctionArgExpr::QualifiedWildcard(_),
                                    ..
                                }
                        )
                    })
                {
                    return std::ops::ControlFlow::Break(format!("{} over a whole row", f.name));
                }
                let name = match f.name.0.last() {
                    Some(sqlparser::ast::ObjectNamePart::Identifier(i)) => {
                        super::lex::name(&i.value, i.quote_style.is_some()).into_owned()
                    }
                    _ => String::new(),
                };
                if !BUILTIN_FUNCTIONS.contains(&name.as_str())
                    && !self.0.settings.functions.contains(&name)
                {
                    return std::ops::ControlFlow::Break(name);
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut Calls(access)) {
        std::ops::ControlFlow::Break(name) => Err(Refusal::new(
            "42501",
            format!(
                "role {} may not call function {name} in a statement on a protected table",
                access.role()
            ),
            "the role's `functions` in roles.toml lists functions allowed besides phigate's built-in list",
        )),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}
