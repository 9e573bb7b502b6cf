//! Tags in a statement's leading or trailing comment, where web frameworks say who asked:
//! sqlcommenter (`/*db_user='dr.smith',route='%2Fchart'*/`: keys and values URL-encoded,
//! values quoted) and Rails marginalia (`/*db_user:dr.smith,controller:charts*/`).
//!
//! Only comments outside the statement count (before its first lexeme or after its last,
//! statement ends aside), found by the one lexer, so a comment-like string inside a
//! literal never does.

use super::lex::{Kind, Lexer};

/// The value of tag `key` in the comments around `sql`; `None` when no such comment holds
/// it, or the text cannot be read.
pub fn tag(sql: &str, key: &str) -> Option<String> {
    let mut lexer = Lexer::new(sql);
    let lexemes: Vec<_> = lexer.by_ref().collect();
    if lexer.unterminated() {
        return None;
    }
    let first = lexemes.first().map_or(sql.len(), |l| l.start);
    let last = (lexemes.iter().rev())
        .find(|l| l.kind != Kind::End)
        .map_or(first, |l| l.end);
    [&sql[..first], &sql[last..]]
        .into_iter()
        .flat_map(block_comments)
        .find_map(|c| value_of(c, key))
}

/// The insides of the outermost `/* ... */` comments in `region` (which holds nothing
/// else but spaces, line comments and `;`).
fn block_comments(region: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = region;
    while let Some(start) = rest.find("/*") {
        let after = &rest[start + 2..];
        let mut depth = 1usize;
        let mut i = 0;
        let b = after.as_bytes();
        while i + 1 < b.len() && depth > 0 {
            match (b[i], b[i + 1]) {
                (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                _ => i += 1,
            }
        }
        if depth > 0 {
            break;
        }
        found.push(&after[..i - 2]);
        rest = &after[i..];
    }
    found
}

/// `key`'s value among the comma-separated `k='v'` or `k:v` items of `comment`.
fn value_of(comment: &str, key: &str) -> Option<String> {
    items(comment.trim()).into_iter().find_map(|item| {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) if v.starts_with('\'') => (k, unquote(v)?),
            _ => {
                let (k, v) = item.split_once(':')?;
                (k, v.trim().to_owned())
            }
        };
        (decode(k.trim())? == key).then(|| decode(&v)).flatten()
    })
}

/// The items of a tag list: split at commas outside quoted values.
fn items(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out
}

/// A sqlcommenter value: `'...'` with `\'` escapes.
fn unquote(v: &str) -> Option<String> {
    let inner = v.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("\\'", "'"))
}

/// URL decoding (`%XX`); `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::tag;

    #[test]
    fn sqlcommenter_and_marginalia_tags_around_the_statement() {
        let k = "db_user";
        for (sql, expected) in [
            (
                "SELECT 1 /*db_user='dr.smith',route='%2Fchart'*/",
                Some("dr.smith"),
            ),
            (
                "SELECT 1 /*route='a,b',db_user='dr%20who'*/;",
                Some("dr who"),
            ),
            ("/*db_user='o\\'hara'*/ SELECT 1", Some("o'hara")),
            (
                "SELECT 1; /* x */ /*application:Ehr,db_user:nurse.joy*/",
                Some("nurse.joy"),
            ),
            ("/* a */ /*db_user='a'*/ SELECT 1", Some("a")),
            // inside the statement, inside a string, or another key: not a tag
            ("SELECT /*db_user='x'*/ 1", None),
            ("SELECT '/*db_user=''x''*/'", None),
            ("SELECT 1 /*user='x'*/", None),
            ("SELECT 1 /*db_user='%zz'*/", None),
            ("SELECT 1 /*db_user='x'", None),
        ] {
            assert_eq!(tag(sql, k).as_deref(), expected, "{sql}");
        }
    }
}
