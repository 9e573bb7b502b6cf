//! `phigate synth`: the synthetic EHR data set, as SQL, CSV, or loaded through phigate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use phigate::synth::{Format, Synth, Table};
use phigate::upstream::ServiceSession;

/// What `phigate synth` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// a psql script of multi-row INSERTs in one transaction (run it through phigate)
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
                "-- phigate synth --seed {} --patients {}: run it through phigate (INSERTs work \
                 where row-level security makes PostgreSQL refuse COPY FROM)\nBEGIN;",
                args.seed, args.patients
            )?;
            for t in Table::ALL {
                for_each_insert(&synth, t, |sql| writeln!(out, "{sql};"))?;
            }
            writeln!(out, "COMMIT;")?;
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
        let mut statements = Vec::new();
        let rows = for_each_insert(synth, t, |sql| {
            statements.push(sql);
            Ok(())
        })?;
        for sql in statements {
            db.query(&sql)
                .await
                .with_context(|| format!("loading table {}", t.name()))?;
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

/// Calls `f` with the multi-row INSERTs that write `table` (the rows of 100 patients
/// each); returns the number of rows.
fn for_each_insert(
    synth: &Synth,
    table: Table,
    mut f: impl FnMut(String) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let sources = synth.sources(table);
    let head = format!(
        "INSERT INTO public.{} ({}) VALUES ",
        table.name(),
        table.columns().join(", ")
    );
    let mut rows = 0;
    let mut first = *sources.start();
    while first <= *sources.end() {
        let last = (first + 99).min(*sources.end());
        let mut sql = head.clone();
        synth.each_row(table, first..=last, |row| {
            if sql.len() > head.len() {
                sql.push_str(", ");
            }
            rows += 1;
            push_values(&mut sql, row);
        });
        if sql.len() > head.len() {
            f(sql)?;
        }
        first = last + 1;
    }
    Ok(rows)
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
