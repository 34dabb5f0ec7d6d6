//! A real SMTP server for tests of this and other crates: aiosmtpd (PyPI), run as a child
//! process on a free port with its `Mailbox` handler, which writes every message it accepts
//! into a maildir. [`SmtpServer::messages`] reads them back, parsed by Python's `email`
//! package, so a test checks what a mail client would see.
//!
//! The Python comes from `HOLDFAST_TEST_PYTHON`, or else `target/py-venv/bin/python` in the
//! workspace; `tests/run` creates that venv and installs aiosmtpd into it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::{Attachment, MailerSettings};

/// The variable naming the Python interpreter that has aiosmtpd.
pub const PYTHON_ENV: &str = "HOLDFAST_TEST_PYTHON";
/// The aiosmtpd version `tests/run` installs.
pub const AIOSMTPD_VERSION: &str = "1.4.6";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The interpreter to run aiosmtpd with: `$HOLDFAST_TEST_PYTHON`, else the workspace's
/// `target/py-venv/bin/python`. Panics, saying how to install it, when neither exists.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python with aiosmtpd for the e-mail tests: {PYTHON_ENV} is unset and {} does not \
         exist. Run tests/run, which installs it, or: python3 -m venv target/py-venv && \
         target/py-venv/bin/pip install aiosmtpd=={AIOSMTPD_VERSION} (from the workspace root)",
        venv.display()
    )
}

/// A running aiosmtpd, killed on drop; its maildir is removed with it.
#[derive(Debug)]
pub struct SmtpServer {
    child: Child,
    addr: SocketAddr,
    python: PathBuf,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

/// A message as the SMTP server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEmail {
    /// `MAIL FROM` and `RCPT TO` of the SMTP conversation.
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    /// Headers, decoded.
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: String,
    /// The `text/plain` and `text/html` bodies, decoded.
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct RawEmail {
    envelope_from: String,
    envelope_to: Vec<String>,
    from: String,
    to: String,
    subject: String,
    message_id: String,
    text_body: Option<String>,
    html_body: Option<String>,
    attachments: Vec<RawAttachment>,
}

#[derive(Deserialize)]
struct RawAttachment {
    filename: String,
    content_type: String,
    base64: String,
}

/// Prints the maildir's messages, oldest first, as a JSON array.
const READ_MAILDIR: &str = r#"
import base64, json, os, sys
from email import policy
from email.parser import BytesParser

root = sys.argv[1]
paths = [os.path.join(root, sub, name) for sub in ("new", "cur")
         for name in os.listdir(os.path.join(root, sub))]
paths.sort(key=lambda p: (os.stat(p).st_mtime_ns, p))
out = []
for path in paths:
    with open(path, "rb") as f:
        msg = BytesParser(policy=policy.default).parse(f)
    def body(kind):
        part = msg.get_body(preferencelist=(kind,))
        return None if part is None else part.get_content()
    out.append({
        "envelope_from": str(msg["X-MailFrom"]),
        "envelope_to": [r.strip() for r in str(msg["X-RcptTo"]).split(",")],
        "from": str(msg["From"]),
        "to": str(msg["To"]),
        "subject": str(msg["Subject"]),
        "message_id": str(msg["Message-ID"]),
        "text_body": body("plain"),
        "html_body": body("html"),
        "attachments": [{
            "filename": a.get_filename(),
            "content_type": a.get_content_type(),
            "base64": base64.b64encode(a.get_payload(decode=True)).decode(),
        } for a in msg.iter_attachments()],
    })
json.dump(out, sys.stdout)
"#;

impl SmtpServer {
    /// Starts aiosmtpd on a free port of 127.0.0.1 and waits until it accepts connections.
    pub async fn start() -> Self {
        // The port is free now; aiosmtpd binds it a moment later (a race other tests could
        // lose only by binding this exact port in between).
        Self::start_on(Self::free_addr()).await
    }

    /// A loopback address nothing listens on now: where a server can be started later (a
    /// provider that is down, then back).
    pub fn free_addr() -> SocketAddr {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    /// Starts aiosmtpd on `addr` and waits until it accepts connections.
    pub async fn start_on(addr: SocketAddr) -> Self {
        let python = python();
        let dir = tempfile::tempdir().expect("a temporary directory for the maildir");
        let maildir = dir.path().join("maildir");
        let log = std::fs::File::create(dir.path().join("aiosmtpd.log")).expect("the log file");
        let mut child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} for aiosmtpd: {e}; set {PYTHON_ENV} or run tests/run",
                    python.display()
                )
            });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("the aiosmtpd process status") {
                let log =
                    std::fs::read_to_string(dir.path().join("aiosmtpd.log")).unwrap_or_default();
                panic!(
                    "aiosmtpd exited ({status}) before listening on {addr}; is aiosmtpd \
                     installed for {}? (pip install aiosmtpd=={AIOSMTPD_VERSION}; tests/run \
                     does it)\n{log}",
                    python.display()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {addr} within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            python,
            maildir,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Mailer settings for this server: plain SMTP, no authentication.
    pub fn settings(&self, from: &str) -> MailerSettings {
        MailerSettings::plain(self.addr.ip().to_string(), self.addr.port(), from)
    }

    /// The process id, for tests that stop the server.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every message accepted so far, oldest first. The server writes a message before it
    /// answers the data with 250, so a message whose send returned `Ok` is here.
    pub async fn messages(&self) -> Vec<ReceivedEmail> {
        if !self.maildir.join("new").exists() {
            return Vec::new();
        }
        let output = Command::new(&self.python)
            .args(["-c", READ_MAILDIR])
            .arg(&self.maildir)
            .output()
            .await
            .expect("running Python to read the maildir");
        assert!(
            output.status.success(),
            "reading the maildir failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let raw: Vec<RawEmail> =
            serde_json::from_slice(&output.stdout).expect("the maildir as JSON");
        raw.into_iter()
            .map(|m| ReceivedEmail {
                envelope_from: m.envelope_from,
                envelope_to: m.envelope_to,
                from: m.from,
                to: m.to,
                subject: m.subject,
                message_id: m.message_id,
                text_body: m.text_body,
                html_body: m.html_body,
                attachments: m
                    .attachments
                    .into_iter()
                    .map(|a| Attachment {
                        filename: a.filename,
                        content_type: a.content_type,
                        bytes: base64::engine::general_purpose::STANDARD
                            .decode(a.base64)
                            .expect("base64 from Python"),
                    })
                    .collect(),
            })
            .collect()
    }
}
