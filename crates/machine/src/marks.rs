//! Console line marks: lines the guest prints that start with a prefix the
//! user chose (`popek run --mark-lines PREFIX`) end a statistics phase, the
//! way POST codes on port 0x80 do for guests of ours. They let a benchmark
//! split the counters of one run of an unmodified guest (Debian's Linux
//! running several workloads in one boot) by what the guest printed,
//! without a port the guest's user programs could not reach.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest mark name kept; a longer line is cut, so that a guest
/// printing an endless line after the prefix cannot grow the log.
pub const MAX_NAME: usize = 64;

/// The most marks kept unread; the oldest go first. An engine reads them
/// after every exit that may have written the console.
pub const HISTORY: usize = 64;

/// The marks seen so far, shared by the console writer and the machine.
#[derive(Debug, Default)]
pub struct MarkLog {
    /// Marks since power-on.
    count: u64,
    /// The latest names, oldest first, at most [`HISTORY`].
    recent: std::collections::VecDeque<String>,
    /// Bumped at every mark, for a reader that checks for news without
    /// taking the log's lock ([`MarkLog::counting_into`]).
    counter: Option<Arc<AtomicU64>>,
}

impl MarkLog {
    /// An empty log that bumps `counter` at every mark.
    pub fn counting_into(counter: Arc<AtomicU64>) -> Self {
        MarkLog {
            counter: Some(counter),
            ..MarkLog::default()
        }
    }

    fn push(&mut self, name: String) {
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(name);
        self.count += 1;
        if let Some(c) = &self.counter {
            c.fetch_add(1, Ordering::Release);
        }
    }

    /// The marks after the first `seen` (at most the latest [`HISTORY`]),
    /// oldest first, and how many there were in all.
    pub fn since(&self, seen: u64) -> (Vec<String>, u64) {
        let new = self
            .count
            .saturating_sub(seen)
            .min(self.recent.len() as u64) as usize;
        let names = self
            .recent
            .range(self.recent.len() - new..)
            .cloned()
            .collect();
        (names, self.count)
    }
}

/// Passes console output through and logs the lines that start with the
/// prefix. The UART flushes at every newline, so a mark is logged while
/// the guest's OUT that ended the line is being handled.
pub struct MarkingWriter {
    inner: Box<dyn Write + Send>,
    prefix: Vec<u8>,
    /// The current line, up to the prefix plus [`MAX_NAME`] bytes.
    line: Vec<u8>,
    log: Arc<Mutex<MarkLog>>,
}

impl MarkingWriter {
    /// Wraps `inner`; marks go to `log`.
    pub fn new(inner: Box<dyn Write + Send>, prefix: &str, log: Arc<Mutex<MarkLog>>) -> Self {
        MarkingWriter {
            inner,
            prefix: prefix.as_bytes().to_vec(),
            line: Vec::new(),
            log,
        }
    }

    fn end_line(&mut self) {
        if self.line.starts_with(&self.prefix) {
            let name = String::from_utf8_lossy(&self.line[self.prefix.len()..])
                .trim()
                .to_string();
            self.log.lock().unwrap().push(name);
        }
        self.line.clear();
    }
}

impl Write for MarkingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &b in &buf[..n] {
            match b {
                b'\n' => self.end_line(),
                // A serial console line ends in CR LF.
                b'\r' => {}
                _ if self.line.len() < self.prefix.len() + MAX_NAME => self.line.push(b),
                _ => {}
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (MarkingWriter, Arc<Mutex<MarkLog>>) {
        let log = Arc::new(Mutex::new(MarkLog::default()));
        let w = MarkingWriter::new(Box::new(io::sink()), "mark: ", log.clone());
        (w, log)
    }

    #[test]
    fn lines_with_the_prefix_become_marks_in_order() {
        let (mut w, log) = writer();
        w.write_all(b"boot\r\nmark: one\r\nnot mark: x\nmark: two  \n")
            .unwrap();
        assert_eq!(
            log.lock().unwrap().since(0),
            (vec!["one".into(), "two".into()], 2)
        );
        assert_eq!(log.lock().unwrap().since(1), (vec!["two".into()], 2));
        assert_eq!(log.lock().unwrap().since(2), (vec![], 2));
    }

    #[test]
    fn a_counting_log_bumps_its_counter_at_every_mark_only() {
        let counter = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(MarkLog::counting_into(counter.clone())));
        let mut w = MarkingWriter::new(Box::new(io::sink()), "mark: ", log.clone());
        w.write_all(b"plain line\nmark: one\nmark: two\n").unwrap();
        assert_eq!(counter.load(Ordering::Acquire), 2);
        assert_eq!(log.lock().unwrap().since(0).1, 2);
    }

    #[test]
    fn a_mark_split_across_writes_is_one_mark() {
        let (mut w, log) = writer();
        w.write_all(b"ma").unwrap();
        w.write_all(b"rk: split").unwrap();
        assert_eq!(log.lock().unwrap().since(0).1, 0, "no newline yet");
        w.write_all(b"\n").unwrap();
        assert_eq!(log.lock().unwrap().since(0).0, vec!["split".to_string()]);
    }

    #[test]
    fn long_names_are_cut_and_the_log_is_bounded() {
        let (mut w, log) = writer();
        let long = format!("mark: {}\n", "x".repeat(10 * MAX_NAME));
        w.write_all(long.as_bytes()).unwrap();
        assert_eq!(log.lock().unwrap().since(0).0[0].len(), MAX_NAME);
        for i in 0..2 * HISTORY {
            w.write_all(format!("mark: {i}\n").as_bytes()).unwrap();
        }
        let (names, count) = log.lock().unwrap().since(0);
        assert_eq!(count, 1 + 2 * HISTORY as u64);
        assert_eq!(names.len(), HISTORY);
        assert_eq!(names.last().unwrap(), &(2 * HISTORY - 1).to_string());
    }
}
