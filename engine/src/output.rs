//! What the operator commands print. `println!` panics when standard output is a closed pipe
//! (`holdfast shards list | head`); [`outln!`](crate::outln) writes through a handle instead and
//! turns a closed pipe into [`Error::Closed`], on which `main` ends the command quietly.
//! Messages to standard error never fail a command.

use std::fmt;
use std::io::{self, Write as _};

/// Why a line could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reader closed standard output: the command stops, with nothing more to say.
    #[error("standard output closed")]
    Closed,
    #[error("writing to standard output: {0}")]
    Io(io::Error),
}

/// Writes one line to standard output.
pub fn stdout_line(line: fmt::Arguments<'_>) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Error::Closed,
            _ => Error::Io(e),
        })
}

/// Writes one line to standard error; a closed or failing standard error is ignored (there is
/// nowhere left to report it).
pub fn stderr_line(line: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// Whether `error` is the end of a command whose output was closed.
pub fn is_closed(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<Error>(), Some(Error::Closed)))
}

/// `error` and its causes joined by `: `, each cause once: a cause whose text the message
/// already ends with (sqlx and our own errors print their source too) is not repeated.
pub fn chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// `println!` that returns `Err(output::Error)` instead of panicking; use with `?`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stderr_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let closed = anyhow::Error::from(Error::Closed).context("listing shards");
        assert!(is_closed(&closed));
        let other = anyhow::Error::from(Error::Io(io::Error::other("disk full")));
        assert!(!is_closed(&other));
        // A broken pipe elsewhere (a socket to a node) is a real error.
        let socket = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_closed(&socket));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Echo(#[source] io::Error);

    #[test]
    fn a_chain_names_each_cause_once() {
        let echo = Echo(io::Error::other("database \"x\" does not exist"));
        let error = anyhow::Error::from(echo).context("connecting to postgres://db/x");
        assert_eq!(
            chain(&error),
            "connecting to postgres://db/x: error returned from database: database \"x\" does \
             not exist"
        );
        let plain = anyhow::anyhow!("disk full").context("writing");
        assert_eq!(chain(&plain), "writing: disk full");
    }
}
