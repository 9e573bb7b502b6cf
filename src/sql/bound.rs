//! Settings named by a bound parameter: `current_setting($n)` and `set_config($n, ...)`.
//! The firewall cannot read the name in the text, so it lets such a statement through
//! only where `$n` is a parameter of the extended protocol, and the session checks the
//! value bound to it, at each Bind, by the rules a literal name meets.

use super::Refusal;

/// A parameter that names a setting a statement reads or sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundSetting {
    /// the parameter's number (`$1` is 1)
    pub param: usize,
    /// `set_config` (sets it) rather than `current_setting` (reads it)
    pub set: bool,
}

impl BoundSetting {
    /// The function that names the setting.
    pub(super) fn function(&self) -> &'static str {
        if self.set {
            "set_config"
        } else {
            "current_setting"
        }
    }

    /// Checks the value bound to the parameter (its bytes as sent, text or binary: both
    /// are the name's characters for a text parameter) by the rule a literal name meets
    /// (the firewall's `setting_named`), and refuses `search_path` to `set_config`:
    /// phigate follows the search path only as statements name it. `None` is SQL NULL,
    /// which names no setting.
    ///
    /// PostgreSQL compares setting names ignoring ASCII case. The bytes are read as UTF-8,
    /// anything else replaced by U+FFFD: in every client encoding PostgreSQL accepts,
    /// ASCII letters stand for themselves and no multi-byte character converts to one, so
    /// a value names one of these ASCII settings exactly when its bytes spell it.
    pub fn check(&self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(value) = value else { return Ok(()) };
        let name = String::from_utf8_lossy(value);
        // A parameter declared `char(n)` (or a domain over it) loses its trailing spaces on
        // the way to the function's `text`: `'role '` would name `role`.
        let name = name.trim_end_matches(|c: char| c.is_ascii_whitespace());
        super::firewall::setting_named(name, self.set)?;
        if self.set && name.eq_ignore_ascii_case("search_path") {
            return Err(Refusal::new(
                "0A000",
                "phigate follows search_path only when a statement names it: set it with SET"
                    .into(),
                "SET search_path = ...",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::firewall::{Screened, read, screen};
    use super::*;

    const READ: BoundSetting = BoundSetting {
        param: 1,
        set: false,
    };
    const SET: BoundSetting = BoundSetting {
        param: 1,
        set: true,
    };

    #[test]
    fn a_read_may_name_any_setting_but_phigates() {
        for ok in [
            "transaction_isolation",
            "TimeZone",
            "role",
            "search_path",
            "phigat",
        ] {
            assert_eq!(READ.check(Some(ok.as_bytes())), Ok(()), "{ok}");
        }
        assert_eq!(READ.check(None), Ok(()));
        for refused in ["phigate.role", "PHIGATE.emergency", "phigate"] {
            let e = READ.check(Some(refused.as_bytes())).expect_err(refused);
            assert_eq!(e.code, "42501");
            assert!(e.message.contains("reading phigate's session settings"));
        }
    }

    #[test]
    fn a_set_meets_the_rules_of_a_literal_name() {
        for ok in [
            "work_mem",
            "TimeZone",
            "transaction_isolation",
            "myapp.tenant",
        ] {
            assert_eq!(SET.check(Some(ok.as_bytes())), Ok(()), "{ok}");
        }
        for (refused, code) in [
            ("phigate.role", "42501"),
            ("Role", "42501"),
            ("session_authorization", "42501"),
            ("SEARCH_PATH", "0A000"),
            ("application_name", "0A000"),
        ] {
            let e = SET.check(Some(refused.as_bytes())).expect_err(refused);
            assert_eq!(e.code, code, "{refused}");
        }
    }

    #[test]
    fn trailing_spaces_do_not_hide_a_name() {
        for (refused, bound) in [("role  ", SET), ("phigate.role \t", READ), ("ROLE ", SET)] {
            assert!(
                bound.check(Some(refused.as_bytes())).is_err(),
                "{refused:?}"
            );
        }
        assert_eq!(SET.check(Some(b"work_mem ")), Ok(()));
    }

    #[test]
    fn a_name_cast_to_varchar_is_read_through_the_cast() {
        let role = crate::policy::Role::default();
        let ok = |sql: &str| screen(&read(sql)?, "r", &role);
        assert_eq!(
            ok("SELECT current_setting($1::VARCHAR) AS c"),
            Ok(Screened::Bound(vec![READ]))
        );
        assert_eq!(
            ok("select set_config(cast($1 as character varying), 'x', false)"),
            Ok(Screened::Bound(vec![SET]))
        );
        for allowed in [
            "select current_setting('default_table_access_method'::VARCHAR)",
            "select set_config(CAST('work_mem' AS char varying), '8MB', false)",
        ] {
            assert_eq!(ok(allowed), Ok(Screened::Allowed), "{allowed}");
        }
        for refused in [
            "select current_setting('phigate.role'::varchar)",
            "select set_config('role'::varchar, 'x', false)",
            "select set_config(cast('role' as varchar), 'x', false)",
            // a length cuts the value, and `text` or a quoted name may be a type of the path
            "select set_config('roles'::varchar(4), 'x', false)",
            "select current_setting($1::varchar(4))",
            "select current_setting($1::text)",
            "select current_setting('work_mem'::\"varchar\")",
            "select current_setting(cast($1 as text))",
        ] {
            assert!(ok(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_still_compared() {
        assert!(READ.check(Some(b"phigate.\xff")).is_err());
        assert_eq!(READ.check(Some(b"\xffphigate")), Ok(()));
    }

    #[test]
    fn a_setting_named_by_a_bind_parameter_is_checked_at_the_bind() {
        let role = crate::policy::Role::default();
        let ok = |sql: &str| screen(&read(sql)?, "r", &role);
        let read = |param| BoundSetting { param, set: false };
        let set = |param| BoundSetting { param, set: true };
        assert_eq!(
            ok("select current_setting($1), pg_catalog.current_setting($2, true)"),
            Ok(Screened::Bound(vec![read(1), read(2)]))
        );
        assert_eq!(
            ok("SELECT set_config($2, $1, false)"),
            Ok(Screened::Bound(vec![set(2)]))
        );
        assert_eq!(
            ok("with s as (select current_setting($1) v) select v from s;"),
            Ok(Screened::Bound(vec![read(1)]))
        );
        // where `$n` is not filled by a Bind, or the name is neither literal nor `$n`
        for refused in [
            "prepare p as select current_setting($1)",
            "prepare p as insert into t select set_config($1, 'x', false)",
            "create function f(text) returns text return current_setting($1)",
            "create function f(text) returns text begin atomic select current_setting($1); end",
            "select current_setting($1); select 1",
            "copy (select current_setting($1)) to stdout",
            "select current_setting($1 || '')",
            "select current_setting(($1))",
        ] {
            let e = ok(refused).expect_err(refused);
            assert!(
                e.message
                    .contains("only with a literal setting name or a parameter"),
                "{refused}: {}",
                e.message
            );
        }
    }
}
