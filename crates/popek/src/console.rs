//! The serial console as the user's terminal: raw mode while the guest
//! runs (restored on every exit path), Ctrl-A x to quit, and a reader thread
//! feeding keystrokes to the guest's UART.

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use machine::machine::ConsoleInput;
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// The escape key: Ctrl-A, as in QEMU's and screen's consoles.
const ESCAPE: u8 = 0x01;

/// The terminal settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Restores the terminal if raw mode was entered. Safe to call repeatedly.
pub fn restore_terminal() {
    if let Some(t) = SAVED.lock().map(|mut s| s.take()).unwrap_or(None) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
    }
}

/// Keeps the terminal raw while alive.
pub struct RawGuard;

impl Drop for RawGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Puts stdin in raw mode when it is a terminal. Output post-processing
/// stays on so the guest's "\n" still returns the carriage.
pub fn enter_raw_mode() -> Option<RawGuard> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let orig = termios::tcgetattr(stdin.as_fd()).ok()?;
    let mut raw = orig.clone();
    termios::cfmakeraw(&mut raw);
    raw.output_flags = orig.output_flags;
    raw.local_flags.remove(LocalFlags::ISIG);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
    // A call the sandbox refuses ends the process from a signal handler,
    // which can take no lock: it puts back this copy.
    sandbox::keep_terminal_modes(orig.clone().into());
    *SAVED.lock().unwrap() = Some(orig);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    Some(RawGuard)
}

/// Interprets the escape sequence in a stream of keystrokes.
#[derive(Default)]
pub struct EscapeFilter {
    after_escape: bool,
}

impl EscapeFilter {
    /// Filters `input`: returns the bytes for the guest, and whether the
    /// user asked to quit (Ctrl-A x). Ctrl-A Ctrl-A sends one Ctrl-A.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.after_escape {
                self.after_escape = false;
                match b {
                    b'x' | b'X' => return (out, true),
                    ESCAPE => out.push(ESCAPE),
                    _ => {}
                }
            } else if b == ESCAPE {
                self.after_escape = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Starts the stdin reader. With a terminal, Ctrl-A x quits; from a pipe or
/// file the bytes go to the guest as they are. Returns once the thread
/// runs: the engine confines the process later, and a thread still
/// starting then would meet the sandbox with every signal blocked (glibc's
/// rseq registration, std's affinity query) and die without a word.
pub fn spawn_input() -> Receiver<ConsoleInput> {
    let (tx, rx) = channel();
    let (ready_tx, ready_rx) = channel();
    let interactive = std::io::stdin().is_terminal();
    let started = std::thread::Builder::new()
        .name("popek-stdin".into())
        .spawn(move || {
            let _ = ready_tx.send(());
            read_stdin(&tx, interactive)
        });
    if started.is_ok() {
        let _ = ready_rx.recv();
    }
    rx
}

fn read_stdin(tx: &Sender<ConsoleInput>, interactive: bool) {
    let mut filter = EscapeFilter::default();
    let mut buf = [0u8; 256];
    let mut stdin = std::io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (bytes, quit) = if interactive {
            filter.feed(&buf[..n])
        } else {
            (buf[..n].to_vec(), false)
        };
        if !bytes.is_empty() && tx.send(ConsoleInput::Bytes(bytes)).is_err() {
            return;
        }
        if quit {
            let _ = tx.send(ConsoleInput::Quit);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_keeps_what_came_before() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"ls\r\x01x rest"), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn escape_split_across_reads_and_doubled_escape() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"a\x01"), (b"a".to_vec(), false));
        assert_eq!(f.feed(b"\x01b"), (b"\x01b".to_vec(), false));
        assert_eq!(f.feed(b"\x01"), (vec![], false));
        assert_eq!(f.feed(b"X"), (vec![], true));
    }
}
