//! Which server settings a client may set, whichever way the setting arrives: the startup
//! packet (parameters and the `options` switches, parsed exactly as PostgreSQL parses
//! them), `SET`, `set_config()`, `ALTER ... SET`. One rule for all of them
//! ([`forbidden_setting`]), so no spelling gets around it.

use thiserror::Error;

/// A client setting phigate will not pass on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum SettingError {
    /// The setting is phigate's own, or changes the session's identity or search path.
    #[error("phigate does not allow a client to set {name}: {why}")]
    Forbidden {
        /// the setting, as PostgreSQL would look it up
        name: String,
        /// what it controls
        why: &'static str,
    },
    /// The `options` parameter holds something other than `-c name=value` / `--name=value`.
    #[error("phigate does not accept {0:?} in the options startup parameter")]
    Switch(String),
    /// A setting name PostgreSQL would read differently from how it is written.
    #[error("{0:?} is not a valid setting name")]
    Name(String),
}

impl SettingError {
    /// The SQLSTATE of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "42501",
            Self::Switch(_) | Self::Name(_) => "42601",
        }
    }

    /// What the client can do instead.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => {
                "phigate sets the role, the user's attributes and its own settings itself; leave them out"
            }
            Self::Switch(_) | Self::Name(_) => {
                "pass settings as -c name=value or --name=value in options, or as startup parameters"
            }
        }
    }
}

/// Why a client may not set the setting `name` (as PostgreSQL looks it up: case-insensitive),
/// or `None` when it may.
pub(crate) fn forbidden_setting(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("phigate") {
        return Some("phigate's own session settings steer its row policies");
    }
    match lower.as_str() {
        "role" | "session_authorization" => Some("it changes the session's role"),
        _ => None,
    }
}

fn check(name: String, value: String) -> Result<(String, String), SettingError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$') || b >= 0x80);
    if !valid {
        return Err(SettingError::Name(name));
    }
    match forbidden_setting(&name) {
        Some(why) => Err(SettingError::Forbidden { name, why }),
        None => Ok((name, value)),
    }
}

/// Splits an `options` string into arguments as PostgreSQL's `pg_split_opts` does:
/// whitespace separates, a backslash makes the next character literal.
pub(crate) fn split_options(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(|c| is_c_space(*c)).is_some() {}
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        let mut escaped = false;
        while let Some(&c) = chars.peek() {
            if is_c_space(c) && !escaped {
                break;
            }
            if !escaped && c == '\\' {
                escaped = true;
            } else {
                escaped = false;
                arg.push(c);
            }
            chars.next();
        }
        args.push(arg);
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `name=value` as PostgreSQL's `ParseLongOption` reads it (dashes in the name are
/// underscores); `None` without `=`.
fn long_option(arg: &str) -> Option<(String, String)> {
    let (name, value) = arg.split_once('=')?;
    Some((name.replace('-', "_"), value.to_owned()))
}

/// The settings an `options` string makes, in order: the `-c name=value`, `-cname=value`
/// and `--name=value` switches. Any other switch, or an argument that is not a switch, is
/// refused: phigate forwards only what it has understood.
pub(crate) fn parse_options(options: &str) -> Result<Vec<(String, String)>, SettingError> {
    let mut settings = Vec::new();
    let mut args = split_options(options).into_iter();
    while let Some(arg) = args.next() {
        let setting = if let Some(rest) = arg.strip_prefix("--") {
            long_option(rest)
        } else if arg == "-c" {
            args.next().as_deref().and_then(long_option)
        } else if let Some(rest) = arg.strip_prefix("-c") {
            long_option(rest)
        } else {
            None
        };
        let Some((name, value)) = setting else {
            return Err(SettingError::Switch(arg));
        };
        settings.push(check(name, value)?);
    }
    Ok(settings)
}

/// Every setting a client's startup parameters make, in the order PostgreSQL applies them
/// (the `options` switches first, then the other parameters). `params` excludes `user`,
/// `database`, `replication`, `application_name` and the protocol's `_pq_.` options.
pub(crate) fn startup_settings(
    params: &[(String, String)],
) -> Result<Vec<(String, String)>, SettingError> {
    let mut settings = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "options") {
        settings.extend(parse_options(v)?);
    }
    for (k, v) in params.iter().filter(|(k, _)| k != "options") {
        settings.push(check(k.clone(), v.clone())?);
    }
    Ok(settings)
}

/// `settings` as an `options` string PostgreSQL splits back into the same settings.
pub(crate) fn encode_options<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let escape = |v: &str, out: &mut String| {
        for c in v.chars() {
            if c == '\\' || is_c_space(c) {
                out.push('\\');
            }
            out.push(c);
        }
    };
    let mut out = String::new();
    for (name, value) in settings {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("-c ");
        escape(name, &mut out);
        out.push('=');
        escape(value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn options_split_like_postgres() {
        assert_eq!(
            split_options("  -c a=b\\ c\t--x\\\\y=1 \\"),
            ["-c", "a=b c", "--x\\y=1", ""]
        );
        assert_eq!(split_options(""), Vec::<String>::new());
    }

    #[test]
    fn every_spelling_of_a_phigate_setting_is_refused() {
        for options in [
            "-c phigate.emergency=2099-01-01",
            "-c ph\\igate.emergency=2099-01-01",
            "-c p\\h\\i\\g\\a\\t\\e.emergency=2099-01-01",
            "-c PH\\IGATE.EMERGENCY=2099-01-01",
            "-cphigate.role=admin",
            "--phigate.user.clinic_id=4",
            "--PhiGate.role=admin",
            "-c work_mem=4MB -c phigate.role=admin",
            "-c role=postgres",
            "--session-authorization=postgres",
        ] {
            let e = parse_options(options).expect_err(options);
            assert_eq!(e.code(), "42501", "{options}: {e}");
        }
    }

    #[test]
    fn unknown_switches_and_bare_arguments_are_refused() {
        for options in [
            "-d 5",
            "-e",
            "-F",
            "-S 1000",
            "ehr",
            "-c",
            "-c work_mem",
            "--work_mem",
            "--",
            "-c 'bad name'=1",
            "-c\\ phigate.role=admin",
        ] {
            let e = parse_options(options).expect_err(options);
            assert_eq!(e.code(), "42601", "{options}: {e}");
        }
    }

    #[test]
    fn ordinary_settings_pass_and_round_trip() {
        let got =
            parse_options("-c work_mem=4MB --statement-timeout=5s -cDateStyle=ISO,\\ MDY").unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("work_mem", "4MB"),
                ("statement_timeout", "5s"),
                ("DateStyle", "ISO, MDY")
            ])
        );
        let encoded = encode_options(got.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(parse_options(&encoded).unwrap(), got);
        assert_eq!(encode_options([("x.y", "a\\b c")]), "-c x.y=a\\\\b\\ c");
    }

    #[test]
    fn startup_parameters_follow_the_same_rule() {
        let params = pairs(&[("options", "-c work_mem=4MB"), ("TimeZone", "UTC")]);
        assert_eq!(
            startup_settings(&params).unwrap(),
            pairs(&[("work_mem", "4MB"), ("TimeZone", "UTC")])
        );
        for bad in [
            "PHIGATE.role",
            "phigate.emergency",
            "Role",
            "a b",
            "a=b",
            "x-y",
        ] {
            let params = pairs(&[(bad, "x")]);
            assert!(startup_settings(&params).is_err(), "{bad}");
        }
    }
}
