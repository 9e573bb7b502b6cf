//! `phigate encrypt-existing`: encrypt the plaintext already in declared columns, in
//! resumable batches, then convert each column to `phigate_encrypted` (or, with --rekey,
//! re-encrypt under the active key).

use std::path::PathBuf;

use anyhow::Result;
use phigate::config::Config;

/// Encrypt the existing plaintext of a column a table policy declares, in batches
/// (resumable: run it again after an interruption), then convert the column to
/// `phigate_encrypted`. With --rekey, re-encrypt an encrypted column's values under
/// the active key (after `phigate keys rotate`).
#[derive(clap::Args)]
pub struct Args {
    /// the table (`schema.table`, or `table` in public)
    #[arg(long)]
    table: String,
    /// a column (repeat for more); default: every protected column the table's
    /// policy declares
    #[arg(long = "column")]
    columns: Vec<String>,
    /// re-encrypt values not under the active key
    #[arg(long)]
    rekey: bool,
    /// rows per transaction
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// the configuration file
    #[arg(long, short, default_value = "phigate.toml")]
    config: PathBuf,
}

/// Converts each column in turn, reporting progress on standard error.
pub fn run(args: Args) -> Result<()> {
    let Args {
        table,
        columns,
        rekey,
        batch,
        config,
    } = args;
    let config = Config::load(&config)?;
    let columns = match columns {
        c if c.is_empty() => phigate::migrate::declared_columns(&config, &table)?,
        c => c,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for column in &columns {
        let summary = runtime.block_on(phigate::migrate::encrypt_existing(
            &config,
            &table,
            column,
            rekey,
            batch,
            |rows| eprintln!("{table}.{column}: {rows} row(s) done"),
        ))?;
        let verb = if rekey { "re-encrypted" } else { "encrypted" };
        println!("{table}.{column}: {} row(s) {verb}", summary.rows);
        if summary.swapped {
            println!("{table}.{column} is now phigate_encrypted");
        }
    }
    Ok(())
}
