//! The vCPU's alarm clock: [`machine::alarm::Alarm`] aimed at the vCPU
//! through the monitor's kicker, re-armed only when the PIT's deadline
//! really moved (the run loop asks before every entry).

use std::time::{Duration, Instant};

use crate::monitor::Kicker;

/// The longest guest code runs without an exit. Guest user code that
/// far-jumped to the host's 64-bit code segment and neither faults nor
/// returns is stopped at the next kick (security.md); a kick also lets the
/// run loop see Ctrl-A x. 100 kicks a second cost ~0.05% of the CPU.
pub const WATCHDOG: Duration = Duration::from_millis(10);

/// Kicks the vCPU out of guest code at the deadline it is armed with.
pub struct Alarm {
    alarm: machine::alarm::Alarm,
    /// The deadline last published, to skip re-arming an unchanged one.
    armed: Option<Instant>,
}

impl Alarm {
    /// Starts the alarm thread; it kicks through `kicker` at each deadline
    /// and at least every [`WATCHDOG`].
    pub fn start(kicker: Kicker) -> std::io::Result<Alarm> {
        let alarm = machine::alarm::Alarm::start("popek-bt-alarm", move || kicker.kick())?;
        alarm.set_watchdog(Some(WATCHDOG));
        Ok(Alarm { alarm, armed: None })
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
