//! Statement texts that read the same whatever `standard_conforming_strings` says.
//!
//! PostgreSQL reads a plain string `'...'` (and `N'...'`) with backslash escapes when the
//! session's `standard_conforming_strings` is off, and takes backslashes as they are when
//! it is on. A text whose plain strings hold no backslash reads the same either way; any
//! other could hide a statement from phigate inside what it takes for a string
//! (`'a\' ; SELECT ... --'`), or give a value another meaning than phigate's. So phigate
//! analyses and forwards each text in a form that reads the same either way: every plain
//! string with a backslash becomes the `E'...'` string of the value the session's setting
//! gives it. What PostgreSQL runs is then what phigate analysed, even when the setting
//! changed on the way (a function can change it; the server reports that afterwards).

use super::lex::{Form, Kind, Lexer, ident_byte};

/// `sql` rewritten to read the same whatever `standard_conforming_strings` says, with the
/// meaning it has when the setting is off (`escaping`) or on; `None` when it reads the
/// same already.
pub(crate) fn conforming(sql: &str, escaping: bool) -> Option<String> {
    memchr::memchr(b'\\', sql.as_bytes())?;
    let lexer = if escaping {
        Lexer::escaping(sql)
    } else {
        Lexer::new(sql)
    };
    let mut out = String::new();
    let mut done = 0;
    for l in lexer {
        let raw = &sql[l.start..l.end];
        let quoted = match l.kind {
            Kind::Str(Form::Plain) => raw,
            Kind::Str(Form::Prefixed) if raw.starts_with(['n', 'N']) => &raw[1..],
            _ => continue,
        };
        if !quoted.contains('\\') {
            continue;
        }
        out.push_str(&sql[done..l.start]);
        if quoted.len() < raw.len() {
            // N'...' is the string typed NCHAR, which an E'...' string can be too
            out.push_str("NCHAR ");
        } else if sql.as_bytes()[..l.start]
            .last()
            .is_some_and(|&b| ident_byte(b))
        {
            // a word before a string is its type (`date '...'`): kept a word of its own
            out.push(' ');
        }
        out.push('E');
        if escaping {
            out.push_str(quoted);
        } else {
            out.push_str(&quoted.replace('\\', "\\\\"));
        }
        done = l.end;
    }
    (done > 0).then(|| {
        out.push_str(&sql[done..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::conforming;

    #[test]
    fn backslashes_in_plain_strings_are_written_as_escapes() {
        let on = |s| conforming(s, false);
        assert_eq!(
            on("SELECT 'C:\\dir'").as_deref(),
            Some("SELECT E'C:\\\\dir'")
        );
        assert_eq!(
            on("SELECT N'a\\b'").as_deref(),
            Some("SELECT NCHAR E'a\\\\b'")
        );
        assert_eq!(
            on("SELECT date'\\'").as_deref(),
            Some("SELECT date E'\\\\'")
        );
        // a word of any identifier bytes, not only alphanumeric ones
        assert_eq!(on("SELECT €'\\'").as_deref(), Some("SELECT € E'\\\\'"));
        // a string it continues in is one string
        assert_eq!(
            on("SELECT 'a'\n'\\'").as_deref(),
            Some("SELECT E'a'\n'\\\\'")
        );
        for same in [
            "SELECT 'it''s', E'\\n', $$\\$$, \"a\\b\", B'01', U&'\\0061'",
            "SELECT 1",
            "SELECT 'a' -- \\",
        ] {
            assert_eq!(on(same), None, "{same}");
        }
    }

    #[test]
    fn with_the_setting_off_a_backslash_escapes() {
        let off = |s| conforming(s, true);
        // PostgreSQL runs the second SELECT; phigate now sees it too
        assert_eq!(
            off("SELECT 'a\\' , ' ; SELECT pg_ls_dir('.') --'").as_deref(),
            Some("SELECT E'a\\' , ' ; SELECT pg_ls_dir('.') --'")
        );
        assert_eq!(off("SELECT N'\\''").as_deref(), Some("SELECT NCHAR E'\\''"));
        assert_eq!(off("SELECT 'a' || E'\\''"), None);
    }

    /// Whatever the text and the setting, the rewritten text lexes the same with the
    /// setting on and off.
    #[test]
    fn the_rewritten_text_reads_the_same_either_way() {
        use crate::sql::lex::Lexer;
        const PIECES: [&str; 12] = [
            "'", "\\", "E", "N", "\n", "-", " ", "a", ";", "U&", "/*", "*/",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize
        };
        for _ in 0..100_000 {
            let mut sql = String::new();
            for _ in 0..next() % 14 {
                sql.push_str(PIECES[next() % PIECES.len()]);
            }
            for escaping in [false, true] {
                let text = conforming(&sql, escaping).unwrap_or_else(|| sql.clone());
                let spans = |l: Lexer<'_>| l.map(|l| (l.kind, l.start, l.end)).collect::<Vec<_>>();
                assert_eq!(
                    spans(Lexer::new(&text)),
                    spans(Lexer::escaping(&text)),
                    "{sql:?} ({escaping}) as {text:?}"
                );
            }
        }
    }
}
