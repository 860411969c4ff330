//! The two machines the TSM runs on, and the QEMU line that boots each (docs/design.md).

use std::ffi::OsString;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    Aarch64,
    X86_64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::X86_64];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The target the TSM image itself is built for. aarch64's soft-float target: the TSM's
    /// code then never touches the FP/SIMD registers, so they stay the host's while the TSM
    /// runs and no call saves or restores them (hal/src/aarch64/fp.rs: only a vCPU's run swaps
    /// them); the host payload keeps the hard-float target (the guest payload: `guest_triple`).
    /// x86_64-unknown-none is soft-float already.
    pub fn tsm_triple(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The target the guest payload is built for: the soft-float one, as a guest kernel is
    /// (Linux builds its kernel with `-mgeneral-regs-only`; x86_64-unknown-none has no SSE
    /// either). Its calls then leave the FP/SIMD registers alone, so a run switches them only
    /// for a guest that uses them (hal/src/aarch64/guest.rs `LazyFp`); the `vcpu-smoke`
    /// scenario's hand-written guest does, and checks both sides kept their own.
    pub fn guest_triple(self) -> &'static str {
        self.tsm_triple()
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::X86_64 => "qemu-system-x86_64",
        }
    }

    /// The host boot-parameters page, whose first word selects the host's scenario.
    pub fn host_params_page(self) -> u64 {
        match self {
            Arch::Aarch64 => 0x40FF_F000,
            Arch::X86_64 => 0x00FF_F000,
        }
    }

    /// gdb's name for the architecture the TSM runs in once it is up.
    pub fn gdb_architecture(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "i386:x86-64",
        }
    }

    /// QEMU's arguments for one run on `cpus` CPUs: the TSM as the kernel, the host payload
    /// loaded at its link address, the scenario number written into the host-parameters page
    /// and, unless 0, `param` into the word after it.
    pub fn qemu_args(
        self,
        tsm: &Path,
        host: &Path,
        scenario_id: u32,
        cpus: u32,
        param: u32,
    ) -> Vec<OsString> {
        let cpus = cpus.to_string();
        let machine: Vec<&str> = match self {
            // `-nographic` alone would multiplex the monitor onto stdio; stdout must carry only
            // UART bytes, so the serial port gets stdio to itself and the monitor is off.
            // The SMMUv3 (QEMU 10: stage 2 and nesting) in front of the PCIe root bus, ECAM
            // below 4 GiB (`highmem=off`: the host's stage 2 covers 39 bits), and the `edu`
            // device the scenarios drive, with a DMA mask that reaches DRAM at 1 GiB (docs/
            // design.md "The platform IOMMU"). `-nodefaults`: no default NIC on the bus (the
            // edu device is the only one), no display (whose module probe prints noise).
            Arch::Aarch64 => vec![
                "-M",
                "virt,virtualization=on,iommu=smmuv3,highmem=off",
                "-nodefaults",
                "-device",
                "edu,dma_mask=0xffffffffffffffff",
                "-cpu",
                "max",
                "-m",
                "512M",
                "-smp",
                &cpus,
                "-nographic",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-semihosting",
            ],
            // `-nodefaults` as on aarch64: no default NIC or VGA, so bus 0 holds the chipset and
            // `edu`, and the host gets no BARs it has no use for.
            Arch::X86_64 => vec![
                "-M",
                "q35",
                "-nodefaults",
                "-cpu",
                "max",
                "-m",
                "512M",
                "-smp",
                &cpus,
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
                // VT-d, which the TSM owns; 48-bit (4-level) second-level tables, which QEMU
                // 7.2 offers only with aw-bits=48. It must come before the devices behind it.
                "-device",
                "intel-iommu,aw-bits=48",
                // A DMA-capable device the host drives; the default 28-bit DMA mask would cut
                // its addresses.
                "-device",
                "edu,dma_mask=0xffffffffffffffff",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
        };
        let mut args: Vec<OsString> = machine.iter().map(OsString::from).collect();
        args.push("-kernel".into());
        args.push(tsm.into());
        let mut loader = OsString::from("loader,file=");
        loader.push(host);
        args.push("-device".into());
        args.push(loader);
        args.push("-device".into());
        args.push(
            format!(
                "loader,addr={:#X},data={scenario_id},data-len=4",
                self.host_params_page()
            )
            .replace("0X", "0x")
            .into(),
        );
        if param != 0 {
            args.push("-device".into());
            args.push(
                format!(
                    "loader,addr={:#X},data={param},data-len=4",
                    self.host_params_page() + 4
                )
                .replace("0X", "0x")
                .into(),
            );
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(arch: Arch) -> String {
        let args = arch.qemu_args(Path::new("tsm"), Path::new("tsm-host"), 2, 2, 0);
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn aarch64_line_is_the_documented_one() {
        assert_eq!(
            line(Arch::Aarch64),
            "-M virt,virtualization=on,iommu=smmuv3,highmem=off -nodefaults \
             -device edu,dma_mask=0xffffffffffffffff -cpu max -m 512M -smp 2 -nographic \
             -serial stdio -monitor none -semihosting -kernel tsm -device loader,file=tsm-host \
             -device loader,addr=0x40FFF000,data=2,data-len=4"
        );
    }

    #[test]
    fn cpus_and_param_reach_the_line() {
        let args = Arch::X86_64.qemu_args(Path::new("tsm"), Path::new("tsm-host"), 27, 4, 100_000);
        let line = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains(" -smp 4 "), "{line}");
        assert!(
            line.ends_with("-device loader,addr=0xFFF000,data=27,data-len=4 -device loader,addr=0xFFF004,data=100000,data-len=4"),
            "{line}"
        );
    }

    #[test]
    fn x86_64_line_is_the_documented_one() {
        assert_eq!(
            line(Arch::X86_64),
            "-M q35 -nodefaults -cpu max -m 512M -smp 2 -display none -serial stdio -no-reboot \
             -device intel-iommu,aw-bits=48 -device edu,dma_mask=0xffffffffffffffff \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel tsm \
             -device loader,file=tsm-host -device loader,addr=0xFFF000,data=2,data-len=4"
        );
    }
}
