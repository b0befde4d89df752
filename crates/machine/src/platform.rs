//! The machine as the callout emulator (`x86::emulate`) sees it: guest
//! memory through a [`GuestLinear`] that sends what is past RAM to the MMIO
//! bus, and a [`MachinePlatform`] for the rest: the port bus, the CPU
//! model, the MSRs, the TSC and the local APIC's base register. Both engines reach the devices from an
//! emulated instruction through this one adapter ([`Machine::emulation`]).

use std::sync::Mutex;
use x86::cpuid::CpuidModel;
use x86::emulate::Platform;

use x86::msr::{apic_base, MsrFile};
use x86::CpuState;

use crate::bus::Buses;
use crate::irq::IrqChip;
use crate::machine::Machine;
use crate::memory::GuestLinear;

/// The virtual CPU's surroundings that live outside [`CpuState`].
pub struct CpuExtras {
    /// The CPU model the guest sees.
    pub cpuid: CpuidModel,
    /// MSRs not held in CpuState.
    pub msrs: MsrFile,
    /// Value added to the host's TSC: what WRMSR to IA32_TSC set, 0 until
    /// then.
    tsc_offset: u64,
}

impl CpuExtras {
    /// A CPU fresh from firmware.
    pub fn new() -> CpuExtras {
        CpuExtras {
            cpuid: CpuidModel::default(),
            msrs: MsrFile::after_firmware(),
            tsc_offset: 0,
        }
    }

    /// The guest's TSC is the host's plus an offset: guest user code runs
    /// RDTSC on the host CPU directly, and the kernel calibrates the TSC
    /// against the virtual PIT, which runs on host time, so one rate for
    /// both is the only consistent choice (it also lets translated code run
    /// RDTSC natively while the offset is 0).
    fn host_tsc() -> u64 {
        crate::clock::host_tsc()
    }

    /// What the guest's TSC reads minus what the host's does (0 until the
    /// guest writes IA32_TSC).
    pub fn tsc_offset(&self) -> u64 {
        self.tsc_offset
    }
}

impl Default for CpuExtras {
    fn default() -> Self {
        Self::new()
    }
}

/// The emulator's [`Platform`] over the machine's buses and the CPU's
/// extras, for one emulated instruction.
pub struct MachinePlatform<'a> {
    bus: &'a Buses,
    irq: &'a Mutex<IrqChip>,
    extras: &'a mut CpuExtras,
}

impl Platform for MachinePlatform<'_> {
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let mut b = [0u8; 4];
        self.bus
            .pio
            .read(u64::from(port), &mut b[..usize::from(size)]);
        u32::from_le_bytes(b)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.bus
            .pio
            .write(u64::from(port), &value.to_le_bytes()[..usize::from(size)]);
    }

    fn tsc(&mut self) -> u64 {
        CpuExtras::host_tsc().wrapping_add(self.extras.tsc_offset)
    }

    fn set_tsc(&mut self, value: u64) {
        self.extras.tsc_offset = value.wrapping_sub(CpuExtras::host_tsc());
    }

    fn cpuid(&self) -> &CpuidModel {
        &self.extras.cpuid
    }

    fn msrs(&mut self) -> &mut MsrFile {
        &mut self.extras.msrs
    }

    fn apic_base(&mut self) -> u64 {
        self.irq.lock().unwrap().lapic.base()
    }

    fn set_apic_base(&mut self, value: u64) {
        self.irq.lock().unwrap().lapic.set_base(value);
        // CPUID.APIC reports the global enable (SDM vol. 3 10.4.3).
        self.extras.cpuid.apic = value & apic_base::EN != 0;
    }
}

impl Machine {
    /// What the emulator needs to carry out one instruction of `cpu`: guest
    /// memory as `cpu` sees it (paging, CPL; MMIO past RAM) and the rest of
    /// the machine, borrowed side by side.
    pub fn emulation<'a>(
        &'a mut self,
        cpu: &CpuState,
        extras: &'a mut CpuExtras,
    ) -> (GuestLinear<'a>, MachinePlatform<'a>) {
        let mem = GuestLinear::new(&mut self.memory, cpu).with_mmio(&self.bus.mmio);
        let plat = MachinePlatform {
            bus: &self.bus,
            irq: &self.irq,
            extras,
        };
        (mem, plat)
    }
}

#[cfg(test)]
mod tests {
    use x86::emulate;
    use x86::interrupt::LinearMemory;
    use x86::state::{cr0, Segment};

    use super::*;
    use crate::devices::{scratch, uart};
    use crate::machine::MachineBuilder;

    /// Flat 32-bit protected mode at CPL 0, paging off, EIP at `eip`.
    fn flat(eip: u32) -> CpuState {
        let data = Segment::flat_data32(0x10);
        CpuState {
            eip,
            cr0: cr0::PE | cr0::ET,
            cs: Segment::flat_code32(0x08),
            ss: data,
            ds: data,
            es: data,
            ..CpuState::default()
        }
    }

    fn machine(code: &[u8]) -> Machine {
        MachineBuilder::new()
            .memory_mib(1)
            .raw_image(0x1000, code.to_vec(), flat(0x1000))
            .console(Box::new(std::io::sink()))
            .build()
            .unwrap()
    }

    #[test]
    fn an_emulated_out_reaches_the_port_bus() {
        // out dx, al
        let mut m = machine(&[0xEE]);
        let mut cpu = m.entry.clone();
        cpu.edx = u32::from(uart::COM1 + 7);
        cpu.eax = 0x5A;
        let mut extras = CpuExtras::new();
        let (mut mem, mut plat) = m.emulation(&cpu, &mut extras);
        let insn = emulate::fetch(&cpu, &mut mem).unwrap();
        emulate::execute(&mut cpu, &mut mem, &mut plat, &insn).unwrap();
        assert_eq!(cpu.eip, 0x1001);
        let mut b = [0u8; 1];
        m.io_in(uart::COM1 + 7, &mut b);
        assert_eq!(b[0], 0x5A, "the UART's scratch register took the byte");
    }

    #[test]
    fn emulated_memory_past_ram_is_the_mmio_bus() {
        let mut m = machine(&[]);
        let cpu = m.entry.clone();
        let mut extras = CpuExtras::new();
        let (mut mem, _plat) = m.emulation(&cpu, &mut extras);
        let mut b = [0u8; 4];
        mem.read((scratch::BASE + scratch::ID) as u32, &mut b)
            .unwrap();
        assert_eq!(&b, b"popk");
    }

    #[test]
    fn an_emulated_wrmsr_moves_the_local_apic_and_cpuid_follows() {
        // wrmsr; cpuid
        let mut m = machine(&[0x0F, 0x30, 0x0F, 0xA2]);
        let mut cpu = m.entry.clone();
        let mut extras = CpuExtras::new();
        (cpu.ecx, cpu.edx, cpu.eax) = (x86::msr::IA32_APIC_BASE, 0, 0xFEF0_0800);
        let (mut mem, mut plat) = m.emulation(&cpu, &mut extras);
        let insn = emulate::fetch(&cpu, &mut mem).unwrap();
        emulate::execute(&mut cpu, &mut mem, &mut plat, &insn).unwrap();
        assert_eq!(m.apic_base(), 0xFEF0_0900, "moved, still the BSP");
        let mut b = [0u8; 4];
        m.mmio_read(0xFEF0_0030, &mut b);
        assert_eq!(
            u32::from_le_bytes(b),
            0x0005_0014,
            "the version register, moved"
        );
        m.mmio_read(0xFEE0_0030, &mut b);
        assert_eq!(b, [0xFF; 4], "nothing left at the old base");
        // Disabled: CPUID no longer shows an APIC.
        (cpu.ecx, cpu.edx, cpu.eax) = (x86::msr::IA32_APIC_BASE, 0, 0xFEE0_0000);
        cpu.eip = 0x1000;
        let (mut mem, mut plat) = m.emulation(&cpu, &mut extras);
        let insn = emulate::fetch(&cpu, &mut mem).unwrap();
        emulate::execute(&mut cpu, &mut mem, &mut plat, &insn).unwrap();
        cpu.eax = 1;
        let insn = emulate::fetch(&cpu, &mut mem).unwrap();
        emulate::execute(&mut cpu, &mut mem, &mut plat, &insn).unwrap();
        assert_eq!(cpu.edx & x86::cpuid::leaf1_edx::APIC, 0);
        m.mmio_read(0xFEE0_0030, &mut b);
        assert_eq!(b, [0xFF; 4]);
    }

    #[test]
    fn the_tsc_runs_from_what_the_guest_set() {
        let mut m = machine(&[]);
        let cpu = m.entry.clone();
        let mut extras = CpuExtras::new();
        let (_, mut plat) = m.emulation(&cpu, &mut extras);
        plat.set_tsc(1 << 40);
        let t = plat.tsc();
        assert!((1 << 40..(1 << 40) + 1_000_000_000).contains(&t), "{t:#x}");
        assert!(plat.tsc() >= t, "monotonic");
    }
}
