//! `phigate synth`: the synthetic EHR data set, as SQL, CSV, or loaded through phigate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use phigate::server::ServiceSession;
use phigate::synth::{Format, Synth, Table};

/// What `phigate synth` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// a psql script of COPY ... FROM stdin blocks (run it through phigate)
    Sql,
    /// one CSV file per table, with a header line, in the --out directory
    Csv,
}

/// The options of `phigate synth`.
#[derive(clap::Args)]
pub struct Args {
    /// number of patients (clinics, encounters and the rest scale with it)
    #[arg(long, default_value_t = 1000)]
    patients: u64,
    /// the seed: the same seed and size give the same data set
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// sql or csv
    #[arg(long, value_enum, default_value_t = OutputFormat::Sql)]
    format: OutputFormat,
    /// a file (sql, schema) or a directory (csv); standard output when absent
    #[arg(long)]
    out: Option<PathBuf>,
    /// print the schema (the phigate_encrypted domain and the tables) instead of data: run
    /// it as the tables' owner directly against PostgreSQL
    #[arg(long, conflicts_with_all = ["through", "format"])]
    schema: bool,
    /// load the data through a running phigate at this URL
    /// (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=require), so protected columns land
    /// encrypted; the user's role must be allowed to insert into every table. Nothing is
    /// loaded when public.clinics already holds rows
    #[arg(long, conflicts_with = "out")]
    through: Option<String>,
}

/// Runs `phigate synth`.
pub fn run(args: Args) -> Result<()> {
    let synth = Synth::new(args.seed, args.patients);
    if args.schema {
        return write_out(args.out.as_deref(), phigate::synth::schema_sql().as_bytes());
    }
    if let Some(url) = &args.through {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(load(&synth, url, |line| eprintln!("{line}")));
    }
    match args.format {
        OutputFormat::Sql => {
            let mut out = Vec::new();
            writeln!(
                out,
                "-- phigate synth --seed {} --patients {}: load it through phigate",
                args.seed, args.patients
            )?;
            for t in Table::ALL {
                writeln!(out, "{};", t.copy_from_stdin(Format::Text))?;
                synth.write(t, Format::Text, &mut out)?;
                writeln!(out, "\\.")?;
            }
            write_out(args.out.as_deref(), &out)
        }
        OutputFormat::Csv => {
            let Some(dir) = args.out else {
                bail!("--format csv writes one file per table: give --out DIR");
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for t in Table::ALL {
                let file = dir.join(format!("{}.csv", t.name()));
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&file)
                        .with_context(|| format!("creating {}", file.display()))?,
                );
                writeln!(out, "{}", t.columns().join(","))?;
                let rows = synth.write(t, Format::Csv, &mut out)?;
                out.flush()?;
                eprintln!("{}: {rows} rows", file.display());
            }
            Ok(())
        }
    }
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(f) => std::fs::write(f, bytes).with_context(|| format!("writing {}", f.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            // a reader that goes away (`| head`) ends the command quietly
            if stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(0);
            }
            Ok(())
        }
    }
}

/// Loads every table of `synth` through the phigate (or PostgreSQL) at `url` with
/// multi-row INSERTs (PostgreSQL refuses COPY FROM into a table with row-level security)
/// in one transaction, reporting each table on `report`.
pub async fn load(synth: &Synth, url: &str, mut report: impl FnMut(String)) -> Result<()> {
    let started = Instant::now();
    let mut db = ServiceSession::open_url(url, "phigate-synth")
        .await
        .context("connecting for --through")?;
    let loaded = db.query("SELECT count(*) FROM public.clinics").await?;
    if loaded
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        != Some("0")
    {
        report("public.clinics already holds rows: the data set is loaded; nothing done".into());
        return Ok(());
    }
    db.query("BEGIN").await?;
    for t in Table::ALL {
        let sources = synth.sources(t);
        let mut rows = 0u64;
        let mut first = *sources.start();
        while first <= *sources.end() {
            let last = (first + 99).min(*sources.end());
            let mut sql = format!(
                "INSERT INTO public.{} ({}) VALUES ",
                t.name(),
                t.columns().join(", ")
            );
            synth.each_row(t, first..=last, |row| {
                if rows > 0 && !sql.ends_with(' ') {
                    sql.push(',');
                }
                rows += 1;
                push_values(&mut sql, row);
            });
            if sql.ends_with(')') {
                db.query(&sql)
                    .await
                    .with_context(|| format!("loading table {}", t.name()))?;
            }
            first = last + 1;
        }
        report(format!("  {:<13} {rows:>8} rows", t.name()));
    }
    db.query("COMMIT").await?;
    report(format!(
        "loaded {} patients in {:.1}s",
        synth.sources(Table::Patients).end(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `(v1, v2, ...)`: values as string literals, NULL as NULL.
fn push_values(sql: &mut String, row: &[Option<String>]) {
    sql.push('(');
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        match v {
            Some(v) => {
                sql.push('\'');
                sql.push_str(&v.replace('\'', "''"));
                sql.push('\'');
            }
            None => sql.push_str("NULL"),
        }
    }
    sql.push(')');
}
