//! i8042 keyboard controller: enough for the reset line (command 0xFE).
//!
//! No keyboard or mouse is attached: the controller answers its own commands
//! (command byte, self tests, output port) and drops bytes meant for devices.
use crate::bus::BusDevice;
use crate::{StopHandle, StopReason};

/// Data port.
pub const DATA: u16 = 0x60;
/// Status (read) / command (write) port.
pub const COMMAND: u16 = 0x64;

/// Status: the output buffer holds a byte for the host.
pub const STATUS_OBF: u8 = 1 << 0;
/// Status: the input buffer is full (never: writes are consumed at once).
pub const STATUS_IBF: u8 = 1 << 1;
/// Status: the system flag, set once the controller passed its self test.
pub const STATUS_SYS: u8 = 1 << 2;
/// Status: the last write went to the command port rather than the data port.
pub const STATUS_CMD: u8 = 1 << 3;
/// Status: the keyboard is not inhibited by the keylock.
pub const STATUS_UNLOCKED: u8 = 1 << 4;

/// Command byte: keyboard interrupt enable.
pub const CTR_KBD_INT: u8 = 1 << 0;
/// Command byte: the system flag, mirrored into the status register.
pub const CTR_SYS: u8 = 1 << 2;
/// Command byte: keyboard interface disabled.
pub const CTR_KBD_DISABLE: u8 = 1 << 4;
/// Command byte: translate set 2 scan codes to set 1.
pub const CTR_XLATE: u8 = 1 << 6;

/// Command: read the command byte.
pub const CMD_READ_CTR: u8 = 0x20;
/// Command: write the command byte (next data byte).
pub const CMD_WRITE_CTR: u8 = 0x60;
/// Command: controller self test, answers [`SELF_TEST_OK`].
pub const CMD_SELF_TEST: u8 = 0xAA;
/// Command: keyboard interface test, answers 0 (no error).
pub const CMD_KBD_TEST: u8 = 0xAB;
/// Command: disable the keyboard interface.
pub const CMD_KBD_DISABLE: u8 = 0xAD;
/// Command: enable the keyboard interface.
pub const CMD_KBD_ENABLE: u8 = 0xAE;
/// Command: read the output port.
pub const CMD_READ_OUTPUT: u8 = 0xD0;
/// Command: write the output port (next data byte).
pub const CMD_WRITE_OUTPUT: u8 = 0xD1;
/// Command: pulse output port bit 0, the CPU reset line.
pub const CMD_RESET: u8 = 0xFE;
/// First of the 0xF0-0xFF "pulse output port" commands: bits 3:0 clear are pulsed.
const CMD_PULSE_FIRST: u8 = 0xF0;

/// Self-test answer: the controller works.
pub const SELF_TEST_OK: u8 = 0x55;
/// Interface-test answer: no error.
const KBD_TEST_OK: u8 = 0x00;

/// Output port bit 0: low holds the CPU in reset.
pub const OUTPUT_RESET: u8 = 1 << 0;
/// Output port bit 1: the A20 gate.
pub const OUTPUT_A20: u8 = 1 << 1;

/// The command byte a BIOS leaves behind: interrupts on, POST passed, translation.
const CTR_DEFAULT: u8 = CTR_KBD_INT | CTR_SYS | CTR_XLATE;
/// Output port at power-on: not in reset, A20 enabled.
const OUTPUT_DEFAULT: u8 = OUTPUT_RESET | OUTPUT_A20;

/// Which controller command is waiting for its data byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    WriteCtr,
    WriteOutput,
}

/// The keyboard controller.
pub struct I8042 {
    stop: StopHandle,
    ctr: u8,
    output_port: u8,
    out: Option<u8>,
    last_out: u8,
    pending: Option<Pending>,
    last_was_command: bool,
}

impl I8042 {
    /// A controller whose reset line stops the VM through `stop`.
    pub fn new(stop: StopHandle) -> Self {
        I8042 {
            stop,
            ctr: CTR_DEFAULT,
            output_port: OUTPUT_DEFAULT,
            out: None,
            last_out: 0,
            pending: None,
            last_was_command: false,
        }
    }

    /// The current command byte.
    pub fn command_byte(&self) -> u8 {
        self.ctr
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if self.out.is_some() {
            s |= STATUS_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }

    fn respond(&mut self, byte: u8) {
        self.out = Some(byte);
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => self.respond(self.ctr),
            CMD_WRITE_CTR => self.pending = Some(Pending::WriteCtr),
            CMD_SELF_TEST => {
                self.ctr |= CTR_SYS;
                self.respond(SELF_TEST_OK);
            }
            CMD_KBD_TEST => self.respond(KBD_TEST_OK),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_OUTPUT => self.respond(self.output_port),
            CMD_WRITE_OUTPUT => self.pending = Some(Pending::WriteOutput),
            CMD_PULSE_FIRST..=0xFF => {
                // A clear bit in the low nibble pulses that output line low;
                // 0xFE is the usual way to pulse just the reset line.
                if cmd & OUTPUT_RESET == 0 {
                    self.stop.request(StopReason::Reset);
                }
            }
            // Commands for an auxiliary port or vendor extensions: no such
            // hardware, so no answer, as on an AT-class controller.
            _ => tracing::debug!(cmd, "i8042: unhandled command"),
        }
    }

    fn data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(Pending::WriteCtr) => self.ctr = byte,
            Some(Pending::WriteOutput) => {
                self.output_port = byte;
                if byte & OUTPUT_RESET == 0 {
                    self.stop.request(StopReason::Reset);
                }
            }
            // A byte for the keyboard, which is not there.
            None => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let value = if super::port(base, offset) == COMMAND {
            self.status()
        } else if let Some(byte) = self.out.take() {
            self.last_out = byte;
            byte
        } else {
            // The output latch keeps driving the last byte.
            self.last_out
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let port = super::port(base, offset);
        let byte = data[0];
        self.last_was_command = port == COMMAND;
        if port == COMMAND {
            self.command(byte);
        } else {
            self.data(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(k: &mut I8042, port: u16) -> u8 {
        let mut b = [0u8; 1];
        k.read(port.into(), 0, &mut b);
        b[0]
    }

    fn controller() -> (I8042, StopHandle) {
        let stop = StopHandle::new();
        (I8042::new(stop.clone()), stop)
    }

    #[test]
    fn command_fe_requests_reset() {
        let (mut k, stop) = controller();
        k.write(COMMAND.into(), 0, &[CMD_RESET]);
        assert_eq!(stop.take(), Some(StopReason::Reset));
    }

    #[test]
    fn pulse_commands_without_bit0_clear_do_not_reset() {
        let (mut k, stop) = controller();
        k.write(COMMAND.into(), 0, &[0xFF]);
        k.write(COMMAND.into(), 0, &[0xFD]);
        assert!(!stop.is_requested());
    }

    #[test]
    fn self_test_answers_55_through_the_output_buffer() {
        let (mut k, _) = controller();
        assert_eq!(read(&mut k, COMMAND) & STATUS_OBF, 0);
        k.write(COMMAND.into(), 0, &[CMD_SELF_TEST]);
        let status = read(&mut k, COMMAND);
        assert_ne!(status & STATUS_OBF, 0);
        assert_ne!(status & STATUS_SYS, 0);
        assert_eq!(status & STATUS_IBF, 0);
        assert_eq!(read(&mut k, DATA), SELF_TEST_OK);
        assert_eq!(read(&mut k, COMMAND) & STATUS_OBF, 0);
    }

    #[test]
    fn interface_test_answers_zero() {
        let (mut k, _) = controller();
        k.write(COMMAND.into(), 0, &[CMD_KBD_TEST]);
        assert_eq!(read(&mut k, DATA), 0);
    }

    #[test]
    fn command_byte_round_trips() {
        let (mut k, _) = controller();
        k.write(COMMAND.into(), 0, &[CMD_WRITE_CTR]);
        k.write(DATA.into(), 0, &[0x65]);
        assert_eq!(k.command_byte(), 0x65);
        k.write(COMMAND.into(), 0, &[CMD_READ_CTR]);
        assert_eq!(read(&mut k, DATA), 0x65);
    }

    #[test]
    fn the_system_flag_follows_the_command_byte() {
        let (mut k, _) = controller();
        k.write(COMMAND.into(), 0, &[CMD_WRITE_CTR]);
        k.write(DATA.into(), 0, &[0]);
        assert_eq!(read(&mut k, COMMAND) & STATUS_SYS, 0);
    }

    #[test]
    fn keyboard_disable_and_enable_toggle_the_command_byte() {
        let (mut k, _) = controller();
        k.write(COMMAND.into(), 0, &[CMD_KBD_DISABLE]);
        assert_ne!(k.command_byte() & CTR_KBD_DISABLE, 0);
        k.write(COMMAND.into(), 0, &[CMD_KBD_ENABLE]);
        assert_eq!(k.command_byte() & CTR_KBD_DISABLE, 0);
    }

    #[test]
    fn writing_the_output_port_with_bit0_clear_resets() {
        let (mut k, stop) = controller();
        k.write(COMMAND.into(), 0, &[CMD_WRITE_OUTPUT]);
        k.write(DATA.into(), 0, &[OUTPUT_RESET | OUTPUT_A20]);
        assert!(!stop.is_requested());
        k.write(COMMAND.into(), 0, &[CMD_READ_OUTPUT]);
        assert_eq!(read(&mut k, DATA), OUTPUT_RESET | OUTPUT_A20);
        k.write(COMMAND.into(), 0, &[CMD_WRITE_OUTPUT]);
        k.write(DATA.into(), 0, &[OUTPUT_A20]);
        assert_eq!(stop.take(), Some(StopReason::Reset));
    }

    #[test]
    fn an_empty_data_port_reads_the_last_byte() {
        let (mut k, _) = controller();
        assert_eq!(read(&mut k, DATA), 0);
        k.write(COMMAND.into(), 0, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut k, DATA), SELF_TEST_OK);
        assert_eq!(read(&mut k, DATA), SELF_TEST_OK);
    }

    #[test]
    fn the_status_register_tracks_the_last_port_written() {
        let (mut k, _) = controller();
        k.write(COMMAND.into(), 0, &[CMD_KBD_ENABLE]);
        assert_ne!(read(&mut k, COMMAND) & STATUS_CMD, 0);
        k.write(DATA.into(), 0, &[0xF4]);
        assert_eq!(read(&mut k, COMMAND) & STATUS_CMD, 0);
    }
}
