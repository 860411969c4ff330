//! The GDT (kernel and user segments in the order `syscall`/`sysret` need) and the TSS (the
//! ring-0 stacks a trap from ring 3, NMI, #DF and #MC switch to; no I/O permission bitmap, so
//! with IOPL 0 every port is closed to ring 3). One of each per CPU, in its block (`percpu`).

use core::arch::asm;

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

/// A 64-bit TSS.
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

const TSS_SIZE: usize = core::mem::size_of::<Tss>();

/// A GDT: null, kernel code/data, user data/code, TSS (two slots).
pub type Gdt = [u64; 7];

const GDT_TEMPLATE: Gdt = [
    0,
    0x00AF_9A00_0000_FFFF, // ring-0 code, 64-bit
    0x00CF_9200_0000_FFFF, // ring-0 data
    0x00CF_F200_0000_FFFF, // ring-3 data
    0x00AF_FA00_0000_FFFF, // ring-3 code, 64-bit
    0,                     // TSS, filled by load
    0,
];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills and loads a GDT and TSS. `gdt`/`tss` are where this code writes them, `gdt_va`/`tss_va`
/// where the CPU finds them (identity or alias addresses of the same memory). `ring0_stack` is
/// where traps from ring 3 land; `critical_stack` the IST stack for NMI, #DF and #MC (so a TSM
/// stack overflow still gets reported).
///
/// # Safety
/// `gdt` and `tss` must be writable, this CPU's own, and mapped at `gdt_va`/`tss_va` for as
/// long as they stay loaded; both stacks must be mapped and this CPU's own.
pub unsafe fn load(
    gdt: *mut Gdt,
    gdt_va: u64,
    tss: *mut Tss,
    tss_va: u64,
    ring0_stack: u64,
    critical_stack: u64,
) {
    let limit = (TSS_SIZE - 1) as u64;
    let mut table = GDT_TEMPLATE;
    // A fresh descriptor (type 9, "available") each time: `ltr` refuses a busy one, and a
    // reload of the same TSS through another address would find it busy.
    table[5] = (limit & 0xFFFF)
        | ((tss_va & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((tss_va >> 24) & 0xFF) << 56);
    table[6] = tss_va >> 32;
    // SAFETY: the caller gives this CPU's own tables; nothing else reads them meanwhile.
    unsafe {
        tss.write(Tss {
            _reserved0: 0,
            rsp: [ring0_stack, 0, 0],
            _reserved1: 0,
            ist: [critical_stack, 0, 0, 0, 0, 0, 0],
            _reserved2: 0,
            _reserved3: 0,
            // Past the TSS limit: no I/O permission bitmap.
            iomap_base: TSS_SIZE as u16,
        });
        gdt.write(table);
    }
    let ptr = DescriptorPointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: gdt_va,
    };
    // SAFETY: the new GDT has the same ring-0 code/data selectors as the one loaded before
    // (boot's, or this same table through the other address), so reloading CS (far return) and
    // the data segments keeps the running code valid; the TSS descriptor was just written.
    // GS is loaded with the null selector *before* the caller writes GS_BASE.
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
