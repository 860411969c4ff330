//! The GDT (ring-0 code and data: nothing runs in ring 3 under it, guests have their own) and
//! the TSS (the stack NMI, #DF and #MC switch to). One of each per CPU, in its block (`percpu`).

use core::arch::asm;

/// Ring-0 code.
pub const KERNEL_CS: u16 = 0x08;
/// Ring-0 data/stack.
pub const KERNEL_DS: u16 = 0x10;
/// The TSS descriptor (two slots).
const TSS_SEL: u16 = 0x18;

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

/// A GDT: null, kernel code/data, TSS (two slots).
pub type Gdt = [u64; 5];

const GDT_TEMPLATE: Gdt = [
    0,
    0x00AF_9A00_0000_FFFF, // ring-0 code, 64-bit
    0x00CF_9200_0000_FFFF, // ring-0 data
    0,                     // TSS, filled by load
    0,
];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills and loads a GDT and TSS (identity addresses). `critical_stack` is the IST stack for
/// NMI, #DF and #MC (so a TSM stack overflow still gets reported).
///
/// # Safety
/// `gdt` and `tss` must be writable, this CPU's own, and stay mapped while they are loaded; the
/// stack must be mapped and this CPU's own.
pub unsafe fn load(gdt: *mut Gdt, tss: *mut Tss, critical_stack: u64) {
    let tss_va = tss as u64;
    let limit = (TSS_SIZE - 1) as u64;
    let mut table = GDT_TEMPLATE;
    // A fresh descriptor (type 9, "available") each time: `ltr` refuses a busy one, and the
    // boot CPU loads its tables twice (before and after the TSM's page tables).
    table[3] = (limit & 0xFFFF)
        | ((tss_va & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((tss_va >> 24) & 0xFF) << 56);
    table[4] = tss_va >> 32;
    // SAFETY: the caller gives this CPU's own tables; nothing else reads them meanwhile.
    unsafe {
        tss.write(Tss {
            _reserved0: 0,
            rsp: [0; 3],
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
        base: gdt as u64,
    };
    // SAFETY: the new GDT has the same ring-0 code/data selectors as the one loaded before
    // (boot's, or this same table), so reloading CS (far return) and
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
