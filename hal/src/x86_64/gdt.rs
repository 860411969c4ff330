//! The GDT (kernel and user segments in the order `syscall`/`sysret` need) and the TSS (the
//! ring-0 stacks a trap from ring 3, NMI, #DF and #MC switch to; no I/O permission bitmap, so
//! with IOPL 0 every port is closed to ring 3).

use core::arch::asm;
use core::cell::UnsafeCell;

/// Ring-0 code.
pub const KERNEL_CS: u16 = 0x08;
/// Ring-0 data/stack.
pub const KERNEL_DS: u16 = 0x10;
/// Ring-3 data/stack (RPL 3). `STAR[63:48] + 8`.
pub const USER_DS: u16 = 0x18 | 3;
/// Ring-3 64-bit code (RPL 3). `STAR[63:48] + 16`.
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS descriptor (two slots).
const TSS_SEL: u16 = 0x28;
/// The value of `STAR[63:48]` that yields [`USER_DS`] / [`USER_CS`].
pub const STAR_USER_BASE: u16 = 0x10;

/// IST slot (1-based) used by NMI, #DF and #MC.
pub const IST_CRITICAL: u8 = 1;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

const TSS_SIZE: usize = core::mem::size_of::<Tss>();

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 7],
    tss: Tss,
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: written only by `init` on the boot CPU before anything else runs; afterwards the CPU
// alone touches it (the busy bit of the TSS descriptor).
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    gdt: [
        0,
        0x00AF_9A00_0000_FFFF, // ring-0 code, 64-bit
        0x00CF_9200_0000_FFFF, // ring-0 data
        0x00CF_F200_0000_FFFF, // ring-3 data
        0x00AF_FA00_0000_FFFF, // ring-3 code, 64-bit
        0,                     // TSS, filled by init
        0,
    ],
    tss: Tss {
        _reserved0: 0,
        rsp: [0; 3],
        _reserved1: 0,
        ist: [0; 7],
        _reserved2: 0,
        _reserved3: 0,
        // Past the TSS limit: no I/O permission bitmap.
        iomap_base: TSS_SIZE as u16,
    },
}));

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT and TSS. `ring0_stack` is where traps from ring 3 land; `critical_stack` the
/// IST stack for NMI, #DF and #MC (so a TSM stack overflow still gets reported).
pub fn init(ring0_stack: u64, critical_stack: u64) {
    let tables = TABLES.0.get();
    // SAFETY: boot runs on one CPU before any trap can use these tables, so nothing else
    // reads or writes them while we fill them.
    unsafe {
        (*tables).tss.rsp[0] = ring0_stack;
        (*tables).tss.ist[usize::from(IST_CRITICAL - 1)] = critical_stack;
        let base = core::ptr::addr_of!((*tables).tss) as u64;
        let limit = (TSS_SIZE - 1) as u64;
        (*tables).gdt[5] = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40) // present, 64-bit available TSS
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        (*tables).gdt[6] = base >> 32;
    }
    let ptr = DescriptorPointer {
        limit: (core::mem::size_of::<[u64; 7]>() - 1) as u16,
        // SAFETY: only the address is taken.
        base: unsafe { core::ptr::addr_of!((*tables).gdt) } as u64,
    };
    // SAFETY: the new GDT has the same ring-0 code/data selectors the boot GDT had, so
    // reloading CS (far return) and the data segments keeps the running code valid; the TSS
    // descriptor was just written.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, {ds}",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:e}",
            "mov gs, {tmp:e}",
            "mov {tmp:e}, {tss}",
            "ltr {tmp:x}",
            ptr = in(reg) &ptr,
            cs = const KERNEL_CS as u64,
            ds = const KERNEL_DS as u32,
            tss = const TSS_SEL as u32,
            tmp = out(reg) _,
        )
    };
}
