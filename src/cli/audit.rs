//! `phigate audit verify | search | export | report | tail`: what security teams and
//! compliance officers run against the log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use phigate::audit::{AccessReport, AuditKeys, Filter, PublicKey, Record, Subject};

/// Work with the tamper-evident audit log.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an audit directory: sequence, links, checkpoint digests and signatures, and
    /// (given the signing key) every record's MAC. Exits non-zero at the first problem.
    Verify {
        /// the audit directory
        dir: PathBuf,
        /// the instance's public key (`<signing key file>.pub`): checks checkpoints
        #[arg(long, conflicts_with = "key")]
        public_key: Option<PathBuf>,
        /// the instance's signing key file: also checks every record's MAC
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Find records: by user, role, table, column, decision, kind, time range, or a value
    /// (hashed with the instance's lookup key, so the log itself never holds it).
    Search {
        /// the audit directory
        dir: PathBuf,
        /// the user
        #[arg(long)]
        user: Option<String>,
        /// the role
        #[arg(long)]
        role: Option<String>,
        /// a protected table touched
        #[arg(long)]
        table: Option<String>,
        /// a PHI column touched
        #[arg(long)]
        column: Option<String>,
        /// allowed, denied or error
        #[arg(long)]
        decision: Option<String>,
        /// statement, statement_end, session_start, session_end, auth_failure, ...
        #[arg(long)]
        kind: Option<String>,
        /// from this time on (RFC 3339, or a prefix such as 2026-11-24)
        #[arg(long)]
        since: Option<String>,
        /// before this time
        #[arg(long)]
        until: Option<String>,
        /// statements that used this value (needs --key)
        #[arg(long, requires = "key")]
        value: Option<String>,
        /// the instance's signing key file (for --value)
        #[arg(long)]
        key: Option<PathBuf>,
        /// JSON Lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Export records for a SIEM or an archive, oldest first: `ocsf` (OCSF 1.1 JSON
    /// events), `cef` (ArcSight CEF) or `jsonl` (the lines as stored, MACs included).
    /// OCSF and CEF events carry each statement's outcome; checkpoints stay in the files.
    Export {
        /// the audit directory
        dir: PathBuf,
        /// ocsf, cef or jsonl
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// from this time on (RFC 3339, or a prefix such as 2026-11-24)
        #[arg(long)]
        since: Option<String>,
        /// before this time
        #[arg(long)]
        until: Option<String>,
    },
    /// An access report for compliance officers: who accessed one patient's data (by a
    /// value that identifies them, such as an SSN or MRN, hashed with the lookup key) or
    /// what one user did, over a period; a table, and with --html a self-contained page
    /// with a timeline.
    Report {
        /// the audit directory
        dir: PathBuf,
        /// the patient: statements that used this value (needs --key)
        #[arg(
            long,
            requires = "key",
            conflicts_with = "user",
            required_unless_present = "user"
        )]
        patient: Option<String>,
        /// how the report names the patient (default: the value's last four characters)
        #[arg(long, requires = "patient")]
        label: Option<String>,
        /// the user
        #[arg(long)]
        user: Option<String>,
        /// the instance's signing key file (for --patient)
        #[arg(long)]
        key: Option<PathBuf>,
        /// from this time on (RFC 3339, or a prefix such as 2026-11-01)
        #[arg(long)]
        since: Option<String>,
        /// before this time
        #[arg(long)]
        until: Option<String>,
        /// also write the report as an HTML page to this file
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Print the last records, and with -f the ones appended from now on.
    Tail {
        /// the audit directory
        dir: PathBuf,
        /// how many of the last records to print first
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// keep following the log
        #[arg(short, long)]
        follow: bool,
        /// JSON Lines instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Runs one audit subcommand.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        AuditCommand::Verify {
            dir,
            public_key,
            key,
        } => verify(&dir, public_key, key),
        AuditCommand::Search {
            dir,
            user,
            role,
            table,
            column,
            decision,
            kind,
            since,
            until,
            value,
            key,
            json,
        } => {
            let value_hash = match (value, key) {
                (Some(v), Some(k)) => Some(AuditKeys::load(&k)?.value_hash(v.as_bytes())),
                _ => None,
            };
            let filter = Filter {
                user,
                role,
                table,
                column,
                decision: parse_enum("decision", decision)?,
                kind: parse_enum("kind", kind)?,
                since,
                until,
                value_hash,
            };
            search(&dir, &filter, json)
        }
        AuditCommand::Export {
            dir,
            format,
            since,
            until,
        } => export(&dir, &format, (since, until)),
        AuditCommand::Report {
            dir,
            patient,
            label,
            user,
            key,
            since,
            until,
            html,
        } => {
            let subject = subject((patient, label), user, key)?;
            report(&dir, subject, (since, until), html)
        }
        AuditCommand::Tail {
            dir,
            n,
            follow,
            json,
        } => {
            if follow {
                phigate::audit::follow(&dir, n, |r| {
                    print_record(r, json);
                    true
                })?;
            } else {
                let all = phigate::audit::with_outcomes(phigate::audit::read_all(&dir)?);
                for r in &all[all.len().saturating_sub(n)..] {
                    print_record(r, json);
                }
            }
            Ok(())
        }
    }
}

fn verify(dir: &std::path::Path, public_key: Option<PathBuf>, key: Option<PathBuf>) -> Result<()> {
    let keys = key.as_deref().map(AuditKeys::load).transpose()?;
    let public = match (&keys, public_key) {
        (Some(k), _) => k.public(),
        (None, Some(p)) => PublicKey::load(&p)?,
        (None, None) => anyhow::bail!("give --public-key FILE or --key FILE"),
    };
    match phigate::audit::verify(dir, &public, keys.as_ref()) {
        Ok(r) => {
            println!(
                "ok: {} records, {} checkpoints, {} segments, last seq {}",
                r.records, r.checkpoints, r.segments, r.last_seq
            );
            if r.unsigned_tail > 0 {
                let how = if keys.is_some() {
                    "checked by their MACs"
                } else {
                    "not covered by a checkpoint yet: give --key to check their MACs"
                };
                println!(
                    "  {} record(s) after the last checkpoint: {how}",
                    r.unsigned_tail
                );
            }
            Ok(())
        }
        Err(p) => {
            println!("FAILED: {p}");
            std::process::exit(1);
        }
    }
}

/// `audit search`: the matching records, each statement with its outcome (unless the
/// search is for outcome records).
fn search(dir: &std::path::Path, filter: &Filter, json: bool) -> Result<()> {
    let mut all = phigate::audit::read_all(dir)?;
    if filter.kind != Some(phigate::audit::Kind::StatementEnd) {
        all = phigate::audit::with_outcomes(all);
    }
    for r in all.iter().filter(|r| filter.matches(r)) {
        print_record(r, json);
    }
    Ok(())
}

/// Whom `audit report` is about: a patient by value (and the label it shows), or a user.
fn subject(
    (patient, label): (Option<String>, Option<String>),
    user: Option<String>,
    key: Option<PathBuf>,
) -> Result<Subject> {
    Ok(match (patient, user, key) {
        (Some(value), _, Some(key)) => Subject::Patient {
            hash: AuditKeys::load(&key)?.value_hash(value.as_bytes()),
            label: label.unwrap_or_else(|| last_four(&value)),
        },
        (_, Some(user), _) => Subject::User(user),
        _ => anyhow::bail!("give --patient VALUE --key FILE, or --user USER"),
    })
}

/// `audit report`: the text on stdout, the page in `html`.
fn report(
    dir: &std::path::Path,
    subject: Subject,
    period: (Option<String>, Option<String>),
    html: Option<PathBuf>,
) -> Result<()> {
    let all = phigate::audit::with_outcomes(phigate::audit::read_all(dir)?);
    let report = AccessReport::new(subject, period, all);
    if let Some(path) = html {
        std::fs::write(&path, report.html())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report.text());
    Ok(())
}

/// A patient's label that does not repeat the value: `…` and its last four characters.
fn last_four(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// `audit export`: the records in [since, until) in `format`.
fn export(
    dir: &std::path::Path,
    format: &str,
    (since, until): (Option<String>, Option<String>),
) -> Result<()> {
    let range = Filter {
        since,
        until,
        ..Filter::default()
    };
    let lines: Vec<String> = match format {
        "jsonl" => phigate::audit::read_lines(dir)?
            .into_iter()
            .filter(|(_, r)| range.matches(r))
            .map(|(line, _)| line)
            .collect(),
        "ocsf" | "cef" => {
            let all = phigate::audit::with_outcomes(phigate::audit::read_all(dir)?);
            let events = all.iter().filter(|r| range.matches(r));
            match format {
                "ocsf" => events
                    .filter_map(phigate::audit::ocsf)
                    .map(|e| e.to_string())
                    .collect(),
                _ => events.filter_map(phigate::audit::cef).collect(),
            }
        }
        other => anyhow::bail!("unknown export format `{other}`: use ocsf, cef or jsonl"),
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        // A reader that goes away (`| head`) ends the command quietly.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: Option<String>) -> Result<Option<T>> {
    v.map(|s| {
        serde_json::from_str(&format!("\"{s}\"")).with_context(|| format!("unknown {what} `{s}`"))
    })
    .transpose()
}

fn print_record(r: &Record, json: bool) {
    use std::io::Write;
    let line = if json {
        serde_json::to_string(r).unwrap_or_default()
    } else {
        phigate::audit::table_row(r)
    };
    // A reader that goes away (`| head`) ends the command quietly.
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}
