//! The vCPU's alarm clock: a thread that kicks the vCPU out of guest code
//! when the virtual PIT's next interrupt comes due, so a guest computing in
//! chained translations or in user mode still sees its timer.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::monitor::Kicker;

#[derive(Default)]
struct Shared {
    deadline: Option<Instant>,
    quit: bool,
}

/// A thread that kicks the vCPU at the deadline it is armed with.
pub struct Alarm {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// The deadline last published, to skip re-arming an unchanged one.
    armed: Option<Instant>,
}

impl Alarm {
    /// Starts the thread; it kicks through `kicker`.
    pub fn start(kicker: Kicker) -> std::io::Result<Alarm> {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let s = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("popek-bt-alarm".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                alarm_loop(&s, kicker)
            })?;
        // The thread has made its start-up system calls (naming, signal
        // stack, rseq) once it runs our code: only then may the process be
        // confined.
        let _ = ready_rx.recv();
        Ok(Alarm {
            shared,
            thread: Some(thread),
            armed: None,
        })
    }

    /// Asks for a kick `after` from now (None: no kick).
    pub fn arm(&mut self, after: Option<Duration>) {
        let deadline = after.map(|d| Instant::now() + d);
        // A deadline within 50 µs of the armed one is the same timer edge
        // seen again: leave the thread asleep.
        let same = match (self.armed, deadline) {
            (None, None) => true,
            (Some(a), Some(d)) => a.max(d) - a.min(d) < Duration::from_micros(50),
            _ => false,
        };
        if same {
            return;
        }
        self.armed = deadline;
        let (m, cv) = &*self.shared;
        m.lock().unwrap().deadline = deadline;
        cv.notify_one();
    }
}

fn alarm_loop(shared: &(Mutex<Shared>, Condvar), kicker: Kicker) {
    let (m, cv) = shared;
    let mut s = m.lock().unwrap();
    loop {
        if s.quit {
            return;
        }
        match s.deadline {
            None => s = cv.wait(s).unwrap(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    s.deadline = None;
                    kicker.kick();
                } else {
                    s = cv.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.shared;
            m.lock().unwrap().quit = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
