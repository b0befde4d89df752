//! Runs one benchmark process (popek, QEMU or a native program) with a
//! time limit, and timestamps each line it prints as it arrives: boot
//! times are measured by the host's clock at the line, the same way for
//! every engine.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished (or stopped) process left.
#[derive(Debug, Default)]
pub struct Output {
    /// Standard output, line by line, with the time since the start at
    /// which each line arrived; carriage returns removed.
    pub lines: Vec<(Duration, String)>,
    /// Standard error, whole.
    pub stderr: String,
    /// The exit status (`None` if a signal ended it).
    pub status: Option<i32>,
    /// Wall time from the start to the exit.
    pub elapsed: Duration,
    /// The time limit ran out and the process was killed.
    pub timed_out: bool,
}

impl Output {
    /// The first line starting with `prefix`, and when it came.
    pub fn line(&self, prefix: &str) -> Option<(Duration, &str)> {
        self.lines
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, l)| (*t, l.as_str()))
    }

    /// Every line starting with `prefix`.
    pub fn lines_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .map(|(_, l)| l.as_str())
            .filter(move |l| l.starts_with(prefix))
    }

    /// A short account of why the run failed, for error messages: the
    /// status and the last lines of stderr and stdout.
    pub fn failure(&self) -> String {
        let how = if self.timed_out {
            format!("stopped after {:.0} s", self.elapsed.as_secs_f64())
        } else {
            match self.status {
                Some(s) => format!("exit status {s}"),
                None => "killed by a signal".into(),
            }
        };
        let tail = |text: Vec<&str>| -> String {
            let n = text.len().saturating_sub(3);
            text[n..].join(" | ")
        };
        let err = tail(self.stderr.lines().collect());
        let out = tail(self.lines.iter().map(|(_, l)| l.as_str()).collect());
        format!("{how}; stderr: {err}; stdout: {out}")
    }
}

/// Runs `cmd` with stdin closed, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let at = start.elapsed();
            let text = String::from_utf8_lossy(&buf);
            lines.push((at, text.trim_end_matches(['\n', '\r']).replace('\r', "")));
            buf.clear();
        }
        lines
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(start.elapsed());
        status
    });
    let (elapsed, timed_out) = match rx.recv_timeout(limit) {
        Ok(t) => (t, false),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            (start.elapsed(), true)
        }
    };
    let status = waiter.join().expect("the waiter thread")?;
    Ok(Output {
        lines: out_reader.join().expect("the stdout reader"),
        stderr: err_reader.join().expect("the stderr reader"),
        status: status.code(),
        elapsed,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_status_and_stderr_are_captured() {
        let out = run(
            Command::new("sh").args(["-c", "echo one; printf 'two\\r\\n'; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        let lines: Vec<_> = out.lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status, Some(3));
        assert!(!out.timed_out);
        assert_eq!(out.line("tw").map(|(_, l)| l), Some("two"));
    }

    #[test]
    fn a_process_past_its_limit_is_killed() {
        let out = run(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.status, None);
        assert!(out.elapsed < Duration::from_secs(10));
        assert!(
            out.failure().starts_with("stopped after"),
            "{}",
            out.failure()
        );
    }
}
