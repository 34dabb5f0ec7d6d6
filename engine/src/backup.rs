//! `holdfast backup` and `holdfast restore`: a copy of the node's database in one file, and
//! that file put back for a stopped node, then checked.
//!
//! SQLite: `VACUUM INTO` is SQLite's consistent online copy (one read transaction, so a
//! serving node goes on writing meanwhile); restore copies the file into place next to the
//! database and renames it over, refusing while any process has the database open.
//! PostgreSQL: `pg_dump --format=custom` (one snapshot, online) and `pg_restore` as child
//! processes, with the URL of the server's own settings (its password handed over in
//! `PGPASSWORD`, never on a command line); restore refuses while other sessions use the
//! target database. Both refuse to overwrite what exists unless `--force`, print what they do
//! with sizes and times, and a restore ends with [`verify`]: the schema at this binary's
//! migrations, and the journal's and the orders' counts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use holdfast_persistence::Backend;
use holdfast_persistence::backup::Report;

use crate::config::Config;
use crate::errln;
use crate::node::redact;

/// How often long work reports how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

/// Writes a copy of the configured database to `out` (refused when `out` exists, unless
/// `force`).
pub async fn backup(config: &Config, out: &Path, force: bool) -> anyhow::Result<()> {
    let url = config.database_url();
    let backend = Backend::of_url(&url).map_err(anyhow::Error::msg)?;
    if out.exists() && !force {
        anyhow::bail!(
            "{} exists: name a new file, or pass --force to replace it",
            out.display()
        );
    }
    if out.is_dir() {
        anyhow::bail!("{} is a directory: name a file", out.display());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        anyhow::bail!(
            "{} does not exist: create the directory for {} first",
            dir.display(),
            out.display()
        );
    }
    let partial = partial_path(out);
    let _ = std::fs::remove_file(&partial);
    errln!("backing up {} to {}", redact(&url), out.display());
    let started = Instant::now();
    let made = match backend {
        Backend::Sqlite => {
            let Some(db) = crate::node::sqlite_path(&url) else {
                anyhow::bail!("an in-memory database has nothing to back up");
            };
            if !db.exists() {
                anyhow::bail!(
                    "no database at {}: name the server's data directory with HOLDFAST_DATA_DIR \
                     (or its database with HOLDFAST_DATABASE_URL)",
                    db.display()
                );
            }
            with_progress(&partial, "copied", sqlite_backup(&url, &partial)).await
        }
        Backend::Postgres => with_progress(&partial, "dumped", pg_dump(&url, &partial)).await,
    };
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    set_private(&partial)?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    errln!(
        "backed up {} in {:.1} s: {} ({})",
        redact(&url),
        started.elapsed().as_secs_f64(),
        out.display(),
        human_size(size)
    );
    Ok(())
}

/// Puts the backup `input` in place of the configured database (refused while the database
/// is in use, and when it holds data unless `force`), then [`verify`]s it.
pub async fn restore(config: &Config, input: &Path, force: bool) -> anyhow::Result<Report> {
    let url = config.database_url();
    let backend = Backend::of_url(&url).map_err(anyhow::Error::msg)?;
    let kind = backup_kind(input)?;
    if kind != backend {
        anyhow::bail!(
            "{} is a {} backup and the configured database {} is {}: restore it onto a database of \
             its kind",
            input.display(),
            backend_name(kind),
            redact(&url),
            backend_name(backend)
        );
    }
    let size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    errln!(
        "restoring {} ({}) onto {}",
        input.display(),
        human_size(size),
        redact(&url)
    );
    let started = Instant::now();
    match backend {
        Backend::Sqlite => {
            let Some(db) = crate::node::sqlite_path(&url) else {
                anyhow::bail!("cannot restore into an in-memory database");
            };
            sqlite_restore(input, &db, force).await?;
        }
        Backend::Postgres => pg_restore(&url, input, force).await?,
    }
    errln!(
        "restored in {:.1} s; checking the restored database",
        started.elapsed().as_secs_f64()
    );
    let report = verify(&url).await?;
    print_report(&report);
    Ok(report)
}

/// Checks the database at `url` (`holdfast_persistence::backup::check`).
pub async fn verify(url: &str) -> anyhow::Result<Report> {
    holdfast_persistence::backup::check(url)
        .await
        .with_context(|| format!("checking {}", redact(url)))
}

fn print_report(report: &Report) {
    errln!(
        "check passed: every migration of this binary applied ({}); journal: {} records of {} \
         events, {} snapshots; catalog: {} events; orders: {}{}",
        report.applied,
        report.journal_records,
        report.journaled_events,
        report.snapshots,
        report.events,
        report.orders,
        if report.orders_by_status.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                report
                    .orders_by_status
                    .iter()
                    .map(|(status, n)| format!("{status} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
}

// ---- SQLite ---------------------------------------------------------------------------------

async fn sqlite_backup(url: &str, out: &Path) -> anyhow::Result<()> {
    holdfast_persistence::backup::sqlite_vacuum_into(url, out)
        .await
        .with_context(|| format!("VACUUM INTO {}", out.display()))
}

async fn sqlite_restore(input: &Path, db: &Path, force: bool) -> anyhow::Result<()> {
    if let Some(pid) = open_by(db)? {
        anyhow::bail!(
            "{} is open by process {pid} (a running node?): stop it before restoring",
            db.display()
        );
    }
    let exists = std::fs::metadata(db).is_ok_and(|m| m.len() > 0);
    if exists && !force {
        anyhow::bail!(
            "{} exists: pass --force to replace it with the backup (keep a copy first: `holdfast \
             backup`)",
            db.display()
        );
    }
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = partial_path(db);
    let copy = {
        let (input, partial) = (input.to_owned(), partial.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::copy(&input, &partial)
                .with_context(|| format!("copying {} to {}", input.display(), partial.display()))?;
            std::fs::File::open(&partial)?.sync_all()?;
            Ok(())
        })
    };
    let copied = with_progress(&partial, "copied", async { copy.await? }).await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    set_private(&partial)?;
    // The old database's write-ahead log belongs to the old file: it must not replay onto
    // the restored one.
    for suffix in ["-wal", "-shm", "-journal"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    std::fs::rename(&partial, db)
        .with_context(|| format!("moving {} to {}", partial.display(), db.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A process that has `db` (or its write-ahead log) open, from `/proc/*/fd` (Linux; elsewhere
/// nothing is found and the operator's word that the node is stopped is taken).
fn open_by(db: &Path) -> anyhow::Result<Option<u32>> {
    let Ok(canonical_dir) = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
    else {
        return Ok(None);
    };
    let Some(name) = db.file_name() else {
        return Ok(None);
    };
    let target = canonical_dir.join(name);
    let wal = PathBuf::from(format!("{}-wal", target.display()));
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Ok(None);
    };
    let me = std::process::id();
    for proc in procs.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && (link == target || link == wal)
            {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

// ---- PostgreSQL -----------------------------------------------------------------------------

/// A libpq connection string without its password, and the password for `PGPASSWORD`.
fn libpq_url(url: &str) -> (String, Option<String>) {
    let (Some(scheme), Some(at)) = (url.find("://"), url.find('@')) else {
        return (url.to_owned(), None);
    };
    if at < scheme {
        return (url.to_owned(), None);
    }
    let userinfo = &url[scheme + 3..at];
    match userinfo.split_once(':') {
        Some((user, password)) => (
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..]),
            Some(percent_decode(password)),
        ),
        None => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a PostgreSQL client program against `url`; its output is shown only when it fails.
async fn pg_tool(program: &str, url: &str, args: &[String]) -> anyhow::Result<()> {
    let (conninfo, password) = libpq_url(url);
    let mut command = tokio::process::Command::new(program);
    command
        .arg(format!("--dbname={conninfo}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{program} is not installed: it comes with PostgreSQL's client programs (Debian: \
                 apt-get install postgresql-client)"
            )
        } else {
            anyhow::Error::new(e).context(format!("starting {program}"))
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::bail!("{program} failed ({}): {}", output.status, stderr.trim());
    }
    Ok(())
}

async fn pg_dump(url: &str, out: &Path) -> anyhow::Result<()> {
    pg_tool(
        "pg_dump",
        url,
        &[
            "--format=custom".to_owned(),
            "--no-owner".to_owned(),
            format!("--file={}", out.display()),
        ],
    )
    .await
}

async fn pg_restore(url: &str, input: &Path, force: bool) -> anyhow::Result<()> {
    let (others, tables) = holdfast_persistence::backup::postgres_use(url)
        .await
        .with_context(|| format!("looking at {}", redact(url)))?;
    if others > 0 {
        anyhow::bail!(
            "{} has {others} other connection(s) (a running node?): stop every node using it \
             before restoring",
            redact(url)
        );
    }
    if tables > 0 && !force {
        anyhow::bail!(
            "{} already has {tables} tables: restore onto a new, empty database (createdb), or pass \
             --force to replace its objects with the backup's",
            redact(url)
        );
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut args = vec![
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        "--exit-on-error".to_owned(),
        format!("--jobs={jobs}"),
    ];
    if tables > 0 {
        args.extend(["--clean".to_owned(), "--if-exists".to_owned()]);
    }
    args.push(input.display().to_string());
    let watch = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            errln!(
                "… pg_restore still working, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    tokio::select! {
        done = pg_tool("pg_restore", url, &args) => done,
        () = watch => unreachable!("the progress loop never ends"),
    }
}

// ---- shared ---------------------------------------------------------------------------------

/// Which backend's backup `path` holds, from its first bytes.
fn backup_kind(path: &Path) -> anyhow::Result<Backend> {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening the backup {}", path.display()))?;
    let n = file
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    if head[..n].starts_with(SQLITE_MAGIC) {
        Ok(Backend::Sqlite)
    } else if head[..n].starts_with(PG_DUMP_MAGIC) {
        Ok(Backend::Postgres)
    } else {
        anyhow::bail!(
            "{} is neither a SQLite database nor a pg_dump archive (custom format): not a \
             `holdfast backup`",
            path.display()
        )
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

/// Runs `work`, telling every few seconds how large `file` has grown.
async fn with_progress<T>(
    file: &Path,
    verb: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let watch = async {
        let started = Instant::now();
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            errln!(
                "… {verb} {} in {:.0} s",
                human_size(size),
                started.elapsed().as_secs_f64()
            );
        }
    };
    tokio::select! {
        done = work => done,
        () = watch => unreachable!("the progress loop never ends"),
    }
}

/// `name.partial` beside `path`: written first, renamed over `path` when complete.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    path.with_file_name(name)
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

fn human_size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a size shown to a person")]
    let b = bytes as f64;
    match bytes {
        0..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        let cases = [
            (
                "postgres://u:p%40ss@db:5432/h",
                ("postgres://u@db:5432/h", Some("p@ss")),
            ),
            ("postgres://u@db/h", ("postgres://u@db/h", None)),
            (
                "postgres://db/h?sslmode=require",
                ("postgres://db/h?sslmode=require", None),
            ),
        ];
        for (url, (conninfo, password)) in cases {
            let (c, p) = libpq_url(url);
            assert_eq!((c.as_str(), p.as_deref()), (conninfo, password), "{url}");
        }
    }

    #[test]
    fn sizes_read_as_a_person_reads_them() {
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(12_300_000), "12.3 MB");
        assert_eq!(human_size(2_500_000_000), "2.50 GB");
    }

    #[test]
    fn a_file_that_is_no_backup_is_refused() {
        let dir = tempfile_dir();
        let path = dir.join("notes.txt");
        std::fs::write(&path, b"hello").expect("write");
        let e = backup_kind(&path).expect_err("not a backup");
        assert!(e.to_string().contains("not a `holdfast backup`"), "{e}");
        std::fs::write(&path, b"SQLite format 3\0rest").expect("write");
        assert_eq!(backup_kind(&path).expect("sqlite"), Backend::Sqlite);
        std::fs::write(&path, b"PGDMP\x01\x0e").expect("write");
        assert_eq!(backup_kind(&path).expect("pg"), Backend::Postgres);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("holdfast-backup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
