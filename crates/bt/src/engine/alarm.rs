//! The vCPU's alarm clock: [`machine::alarm::Alarm`] aimed at the vCPU
//! through the monitor's kicker, re-armed only when the PIT's deadline
//! really moved (the run loop asks before every entry).

use std::time::{Duration, Instant};

use crate::monitor::Kicker;

/// Kicks the vCPU out of guest code at the deadline it is armed with.
pub struct Alarm {
    alarm: machine::alarm::Alarm,
    /// The deadline last published, to skip re-arming an unchanged one.
    armed: Option<Instant>,
}

impl Alarm {
    /// Starts the alarm thread; it kicks through `kicker`.
    pub fn start(kicker: Kicker) -> std::io::Result<Alarm> {
        Ok(Alarm {
            alarm: machine::alarm::Alarm::start("popek-bt-alarm", move || kicker.kick())?,
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
        if !same {
            self.armed = deadline;
            self.alarm.arm(after);
        }
    }
}
