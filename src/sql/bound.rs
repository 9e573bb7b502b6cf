//! Settings named by a bound parameter: `current_setting($n)` and `set_config($n, ...)`.
//! The firewall cannot read the name in the text, so it lets such a statement through
//! only where `$n` is a parameter of the extended protocol, and the session checks the
//! value bound to it, at each Bind, by the rules a literal name meets.

use super::Refusal;
use crate::policy::settings::forbidden_setting;

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
    /// are the name's characters for a text parameter); `None` is SQL NULL, which names
    /// no setting.
    ///
    /// PostgreSQL compares setting names ignoring ASCII case. A name is compared byte for
    /// byte here: in every client encoding PostgreSQL accepts, ASCII letters stand for
    /// themselves and no multi-byte character converts to one, so a value names one of
    /// these ASCII settings exactly when its bytes spell it.
    pub fn check(&self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(value) = value else { return Ok(()) };
        if !self.set {
            return match value.get(..7) {
                Some(p) if p.eq_ignore_ascii_case(b"phigate") => {
                    Err(refuse("reading phigate's session settings"))
                }
                _ => Ok(()),
            };
        }
        let name = String::from_utf8_lossy(value);
        if let Some(why) = forbidden_setting(&name) {
            return Err(refuse(&format!("setting {name} ({why})")));
        }
        if name.eq_ignore_ascii_case("search_path") || name.eq_ignore_ascii_case("application_name")
        {
            return Err(Refusal::new(
                "0A000",
                format!("phigate follows {name} only when a statement names it: set it with SET"),
                &format!("SET {} = ...", name.to_ascii_lowercase()),
            ));
        }
        Ok(())
    }
}

fn refuse(what: &str) -> Refusal {
    Refusal::new(
        "42501",
        format!("phigate does not allow {what}"),
        "this is not available through phigate to any role; an administrator can do it over a direct connection",
    )
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
