//! An alarm clock for a vCPU: a thread that calls back when the deadline it
//! was armed with passes. Both engines use it to kick their vCPU out of
//! guest code when a virtual timer's next interrupt comes due (the PIT, the
//! HPET, the PM timer, the local APIC timer), so a guest
//! that computes without exiting still sees its timer.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Shared {
    deadline: Option<Instant>,
    /// Ring at least this often, deadline or not.
    watchdog: Option<Duration>,
    last_ring: Instant,
    quit: bool,
}

impl Shared {
    /// When the thread must ring next, if ever.
    fn due(&self) -> Option<Instant> {
        let watchdog = self.watchdog.map(|w| self.last_ring + w);
        match (self.deadline, watchdog) {
            (Some(d), Some(w)) => Some(d.min(w)),
            (d, w) => d.or(w),
        }
    }
}

/// A thread that runs a callback at the deadline it is armed with.
pub struct Alarm {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Alarm {
    /// Starts the thread `name`, which calls `ring` at each deadline. Returns
    /// once the thread runs, so that the caller may then restrict the
    /// process (the thread's start-up system calls are behind it).
    pub fn start(name: &str, ring: impl Fn() + Send + 'static) -> std::io::Result<Alarm> {
        let shared = Arc::new((
            Mutex::new(Shared {
                deadline: None,
                watchdog: None,
                last_ring: Instant::now(),
                quit: false,
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = ready_tx.send(());
                alarm_loop(&s, ring)
            })?;
        let _ = ready_rx.recv();
        Ok(Alarm {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a ring `after` from now (None: no ring).
    pub fn arm(&self, after: Option<Duration>) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap().deadline = after.map(|d| Instant::now() + d);
        cv.notify_one();
    }

    /// Also rings whenever `every` has passed since the last ring (None:
    /// only at deadlines), so that a vCPU that never exits on its own is
    /// still interrupted now and then.
    pub fn set_watchdog(&self, every: Option<Duration>) {
        let (m, cv) = &*self.shared;
        let mut s = m.lock().unwrap();
        s.watchdog = every;
        s.last_ring = Instant::now();
        cv.notify_one();
    }
}

fn alarm_loop(shared: &(Mutex<Shared>, Condvar), ring: impl Fn()) {
    let (m, cv) = shared;
    let mut s = m.lock().unwrap();
    loop {
        if s.quit {
            return;
        }
        match s.due() {
            None => s = cv.wait(s).unwrap(),
            Some(due) => {
                let now = Instant::now();
                if now >= due {
                    if s.deadline.is_some_and(|d| d <= now) {
                        s.deadline = None;
                    }
                    s.last_ring = now;
                    ring();
                } else {
                    s = cv.wait_timeout(s, due - now).unwrap().0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn rings_once_per_deadline_and_not_when_disarmed() {
        let rings = Arc::new(AtomicU32::new(0));
        let r = rings.clone();
        let alarm = Alarm::start("test-alarm", move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        alarm.arm(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rings.load(Ordering::SeqCst), 1);
        alarm.arm(Some(Duration::from_secs(60)));
        alarm.arm(None);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rings.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_watchdog_rings_without_a_deadline_until_it_is_cleared() {
        let rings = Arc::new(AtomicU32::new(0));
        let r = rings.clone();
        let alarm = Alarm::start("test-watchdog", move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        alarm.set_watchdog(Some(Duration::from_millis(5)));
        std::thread::sleep(Duration::from_millis(100));
        let rung = rings.load(Ordering::SeqCst);
        // 20 periods; a loaded host may delay some rings, never add any.
        assert!((3..=21).contains(&rung), "{rung} rings in 100 ms");
        alarm.set_watchdog(None);
        let after = rings.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert!(rings.load(Ordering::SeqCst) <= after + 1);
    }
}
