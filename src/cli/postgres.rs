//! A private PostgreSQL server run from the machine's binaries in a directory of its own
//! (for `phigate demo`): initdb, start, stop. As root, the server runs as `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const INSTALL_HINT: &str = "install them (Debian/Ubuntu: apt-get install postgresql; \
Fedora/RHEL: dnf install postgresql-server; macOS: brew install postgresql@15) or set \
PG_BINDIR to the directory holding initdb and postgres";

/// The directory of PostgreSQL's server binaries: `PG_BINDIR`, `pg_config --bindir`, the
/// newest /usr/lib/postgresql/*/bin, or the directory of `initdb` on the PATH.
pub fn bindir() -> Result<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        let d = PathBuf::from(d);
        if has(&d) {
            return Ok(d);
        }
        bail!(
            "PG_BINDIR={} holds no initdb and postgres; {INSTALL_HINT}",
            d.display()
        );
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return Ok(d);
        }
    }
    let mut found: Vec<PathBuf> = [
        "/usr/lib/postgresql",
        "/usr/local/pgsql",
        "/opt/homebrew/opt",
    ]
    .iter()
    .flat_map(|root| std::fs::read_dir(root).into_iter().flatten().flatten())
    .map(|e| e.path().join("bin"))
    .filter(|d| has(d))
    .collect();
    found.sort_by_key(|d| {
        // newest major version last: /usr/lib/postgresql/9.6 < 15 < 16
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or(0)
    });
    if let Some(d) = found.pop() {
        return Ok(d);
    }
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has(&d) {
            return Ok(d);
        }
    }
    bail!("PostgreSQL's server binaries (initdb, postgres) were not found; {INSTALL_HINT}")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run as `postgres` when phigate runs as root (PostgreSQL refuses root).
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` to the postgres user when phigate runs as root.
fn hand_over(path: &Path) -> Result<()> {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .context("running chown")?;
        if !st.success() {
            bail!(
                "cannot give {} to the postgres user (does it exist?)",
                path.display()
            );
        }
    }
    Ok(())
}

/// A running private server; dropping it stops the server (fast shutdown).
pub struct Cluster {
    /// the TCP port on 127.0.0.1
    pub port: u16,
    /// the data directory
    pub data: PathBuf,
    child: Option<Child>,
}

impl Cluster {
    /// initdb in `dir/pg` (superuser `postgres` with `superuser_password`, SCRAM for every
    /// login over TCP) and start it on `port`, listening on 127.0.0.1 only.
    pub fn start(dir: &Path, port: u16, superuser_password: &str) -> Result<Self> {
        let bin = bindir()?;
        let data = dir.join("pg");
        let run = dir.join("run");
        let pwfile = dir.join("pg.pw");
        std::fs::create_dir_all(&run)?;
        std::fs::write(&pwfile, superuser_password)?;
        hand_over(&run)?;
        hand_over(&pwfile)?;
        std::fs::create_dir_all(&data)?;
        hand_over(&data)?;
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        std::fs::remove_file(&pwfile).ok();
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let conf = format!(
            "\n# phigate demo\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 100\nshared_buffers = 32MB\n",
            run.display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf"))
            .context("reading postgresql.conf")?;
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text)?;
        let log = std::fs::File::create(dir.join("postgres.log"))?;
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let mut cluster = Self {
            port,
            data,
            child: Some(child),
        };
        cluster.wait_ready(dir)?;
        Ok(cluster)
    }

    fn wait_ready(&mut self, dir: &Path) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                bail!("postgres exited ({status}): {}", log.trim());
            }
            // ready once the server writes "ready" to its pid file's status line
            let pid = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
            if pid.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "postgres did not become ready within 30s; see {}",
            dir.join("postgres.log").display()
        )
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill only sends a signal to our own child process.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
