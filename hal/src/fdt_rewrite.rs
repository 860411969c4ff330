//! The device tree a Linux host boots with, derived from the machine's (docs/design.md, "A Linux
//! host"): a streaming copy of a flattened device tree with the edits the TSM needs, into a
//! caller's buffer, without an allocator.
//!
//! - The root's children whose unit address names a device the TSM keeps (its UART, the SMMU)
//!   are left out, with every `/aliases` or `/chosen` string that points at one of them (a
//!   kernel must not look for its console there).
//! - `iommus`, `iommu-map` and `iommu-map-mask` go everywhere: the only IOMMU is the TSM's.
//! - `/chosen` gets the properties the caller sets (bootargs, initrd), replacing any of the
//!   same name; a tree without `/chosen` gets one.
//! - A `/reserved-memory` node with one `no-map` child per range the host must never map (the
//!   TSM's memory): without it Linux allocates from it and faults. A tree that already has a
//!   `/reserved-memory` is refused rather than merged.
//!
//! The input is the machine's own (trusted boot input, read before the host runs), but every
//! offset and length in it is still checked: a malformed tree is an error, never a panic.

/// FDT header magic.
const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Header bytes of version 17.
const HEADER: usize = 40;
/// The oldest format whose layout this code reads (16 and 17 share it).
const LAST_COMPATIBLE: u32 = 16;

/// Properties that name an IOMMU: dropped everywhere.
const IOMMU_PROPS: [&str; 3] = ["iommus", "iommu-map", "iommu-map-mask"];
/// Names the added nodes use, appended to the strings block when the input lacks them.
const ADDED_NAMES: [&str; 5] = ["#address-cells", "#size-cells", "ranges", "reg", "no-map"];
/// Most `/chosen` properties a caller sets.
pub const MAX_CHOSEN: usize = 4;

/// Why no tree was written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FdtError {
    /// No FDT magic, an unknown version or a header that does not fit the blob.
    BadHeader,
    /// A token, name or property runs past its block, or the nesting is wrong.
    Malformed,
    /// The tree already has a `/reserved-memory` node.
    HasReservedMemory,
    /// The output buffer is too small.
    TooBig,
    /// More than [`MAX_CHOSEN`] `/chosen` properties, or a value over 64 bits of cells.
    BadEdit,
}

/// A `/chosen` property's value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A NUL-terminated string (the terminator is added).
    Str(&'a str),
    /// A 64-bit number as two big-endian cells.
    U64(u64),
}

/// What to change.
#[derive(Clone, Copy, Debug)]
pub struct Edits<'a> {
    /// Unit addresses of the root's children to leave out.
    pub drop_units: &'a [u64],
    /// `(base, size)` ranges the host must never map.
    pub reserved: &'a [(u64, u64)],
    /// Properties `/chosen` gets.
    pub chosen: &'a [(&'a str, Value<'a>)],
}

/// Writes `input` with `edits` into `out`; the bytes written.
pub fn rewrite(input: &[u8], edits: &Edits<'_>, out: &mut [u8]) -> Result<usize, FdtError> {
    if edits.chosen.len() > MAX_CHOSEN {
        return Err(FdtError::BadEdit);
    }
    let tree = Tree::parse(input)?;
    let names = Names::new(tree.strings, edits);
    // First pass: only the structure block's size, which places the strings block.
    let mut count = Sink { buf: None, at: 0 };
    Walk::new(&tree, edits, &names).run(&mut count)?;
    let rsv_off = HEADER;
    let struct_off = rsv_off + tree.rsvmap.len();
    let strings_off = struct_off + count.at;
    let strings_len = names.total_len();
    let total = strings_off + strings_len;
    let buf = out.get_mut(..total).ok_or(FdtError::TooBig)?;
    let header: [u32; 10] = [
        MAGIC,
        total as u32,
        struct_off as u32,
        strings_off as u32,
        rsv_off as u32,
        17,
        LAST_COMPATIBLE,
        tree.boot_cpu,
        strings_len as u32,
        count.at as u32,
    ];
    for (i, w) in header.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    buf[rsv_off..struct_off].copy_from_slice(tree.rsvmap);
    let mut w = Sink {
        buf: Some(&mut buf[struct_off..strings_off]),
        at: 0,
    };
    Walk::new(&tree, edits, &names).run(&mut w)?;
    if w.at != count.at {
        return Err(FdtError::Malformed);
    }
    names.write(&mut buf[strings_off..])?;
    Ok(total)
}

/// The input's blocks.
struct Tree<'a> {
    rsvmap: &'a [u8],
    structure: &'a [u8],
    strings: &'a [u8],
    boot_cpu: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl<'a> Tree<'a> {
    fn parse(blob: &'a [u8]) -> Result<Self, FdtError> {
        let h = |i: usize| be32(blob, i * 4).ok_or(FdtError::BadHeader);
        if h(0)? != MAGIC || h(5)? < LAST_COMPATIBLE || h(6)? > 17 {
            return Err(FdtError::BadHeader);
        }
        let total = h(1)? as usize;
        let blob = blob.get(..total).ok_or(FdtError::BadHeader)?;
        let block = |off: u32, len: u32| {
            let off = off as usize;
            off.checked_add(len as usize)
                .and_then(|end| blob.get(off..end))
                .ok_or(FdtError::BadHeader)
        };
        let structure = block(h(2)?, h(9)?)?;
        let strings = block(h(3)?, h(8)?)?;
        // The reservation map: (address, size) pairs up to an all-zero one.
        let rsv_start = h(4)? as usize;
        let mut at = rsv_start;
        loop {
            let entry = blob.get(at..at + 16).ok_or(FdtError::BadHeader)?;
            at += 16;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
        }
        Ok(Tree {
            rsvmap: &blob[rsv_start..at],
            structure,
            strings,
            boot_cpu: h(7)?,
        })
    }

    /// The NUL-terminated string at `off` of the strings block.
    fn name(&self, off: u32) -> Result<&'a [u8], FdtError> {
        let s = self
            .strings
            .get(off as usize..)
            .ok_or(FdtError::Malformed)?;
        let end = s.iter().position(|&b| b == 0).ok_or(FdtError::Malformed)?;
        Ok(&s[..end])
    }
}

/// The output's strings block: the input's, then the names the edits need that it lacks.
struct Names<'a> {
    input: &'a [u8],
    /// The names appended, in order.
    added: [&'a str; ADDED_NAMES.len() + MAX_CHOSEN],
    n_added: usize,
}

impl<'a> Names<'a> {
    fn new(input: &'a [u8], edits: &Edits<'a>) -> Self {
        let mut names = Names {
            input,
            added: [""; ADDED_NAMES.len() + MAX_CHOSEN],
            n_added: 0,
        };
        let wanted = ADDED_NAMES
            .iter()
            .copied()
            .chain(edits.chosen.iter().map(|(n, _)| *n));
        for name in wanted {
            if names.offset(name).is_none() && names.n_added < names.added.len() {
                names.added[names.n_added] = name;
                names.n_added += 1;
            }
        }
        names
    }

    /// Where `name` is: any NUL-terminated match (a suffix of a longer name is one too).
    fn offset(&self, name: &str) -> Option<u32> {
        let n = name.as_bytes();
        let in_input = (0..self.input.len()).find(|&i| {
            self.input.get(i..i + n.len()) == Some(n) && self.input.get(i + n.len()) == Some(&0)
        });
        if let Some(i) = in_input {
            return u32::try_from(i).ok();
        }
        let mut at = self.input.len();
        for a in &self.added[..self.n_added] {
            if *a == name {
                return u32::try_from(at).ok();
            }
            at += a.len() + 1;
        }
        None
    }

    fn total_len(&self) -> usize {
        self.input.len()
            + self.added[..self.n_added]
                .iter()
                .map(|a| a.len() + 1)
                .sum::<usize>()
    }

    fn write(&self, out: &mut [u8]) -> Result<(), FdtError> {
        let mut w = Sink {
            buf: Some(out),
            at: 0,
        };
        w.put(self.input)?;
        for a in &self.added[..self.n_added] {
            w.put(a.as_bytes())?;
            w.put(&[0])?;
        }
        Ok(())
    }
}

/// Where a pass puts its bytes: the first pass only counts them (`buf` is `None`), the second
/// writes them. One type rather than a trait with a type per pass: LLVM specialised the walk
/// for each pass's (constant) vtable, two copies of 5 and 8 KiB in the aarch64 image.
struct Sink<'b> {
    buf: Option<&'b mut [u8]>,
    at: usize,
}

impl Sink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), FdtError> {
        let end = self.at.checked_add(bytes.len()).ok_or(FdtError::TooBig)?;
        if let Some(buf) = self.buf.as_deref_mut() {
            buf.get_mut(self.at..end)
                .ok_or(FdtError::TooBig)?
                .copy_from_slice(bytes);
        }
        self.at = end;
        Ok(())
    }
}

fn token(s: &mut Sink<'_>, t: u32) -> Result<(), FdtError> {
    s.put(&t.to_be_bytes())
}

/// Pads to the next 4-byte boundary after `len` bytes.
fn pad(s: &mut Sink<'_>, len: usize) -> Result<(), FdtError> {
    s.put(&[0; 3][..(4 - len % 4) % 4])
}

fn begin_node(s: &mut Sink<'_>, name: &[u8]) -> Result<(), FdtError> {
    token(s, BEGIN_NODE)?;
    s.put(name)?;
    s.put(&[0])?;
    pad(s, name.len() + 1)
}

/// A property whose value is the concatenation of `parts`.
fn prop(s: &mut Sink<'_>, name_off: u32, parts: &[&[u8]]) -> Result<(), FdtError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    token(s, PROP)?;
    s.put(&(len as u32).to_be_bytes())?;
    s.put(&name_off.to_be_bytes())?;
    for p in parts {
        s.put(p)?;
    }
    pad(s, len)
}

/// `v` as `cells` big-endian 32-bit cells (1 or 2), into `buf`.
fn cells(v: u64, n: u32, buf: &mut [u8; 8]) -> Result<&[u8], FdtError> {
    match n {
        1 => {
            let v = u32::try_from(v).map_err(|_| FdtError::BadEdit)?;
            buf[..4].copy_from_slice(&v.to_be_bytes());
            Ok(&buf[..4])
        }
        2 => {
            *buf = v.to_be_bytes();
            Ok(&buf[..])
        }
        _ => Err(FdtError::BadEdit),
    }
}

/// The unit address of a node name (`name@hex[,…]`), if it has one.
fn unit_address(name: &[u8]) -> Option<u64> {
    let at = name.iter().position(|&b| b == b'@')?;
    let hex = &name[at + 1..];
    let hex = &hex[..hex.iter().position(|&b| b == b',').unwrap_or(hex.len())];
    let s = core::str::from_utf8(hex).ok()?;
    u64::from_str_radix(s, 16).ok()
}

/// The walk over the input's structure block, emitting the edited one.
struct Walk<'t, 'a> {
    tree: &'t Tree<'a>,
    edits: &'t Edits<'a>,
    names: &'t Names<'a>,
    /// The root's `#address-cells` and `#size-cells` (2 and 1 when absent, as the spec says).
    root_cells: (u32, u32),
}

impl<'t, 'a> Walk<'t, 'a> {
    fn new(tree: &'t Tree<'a>, edits: &'t Edits<'a>, names: &'t Names<'a>) -> Self {
        Walk {
            tree,
            edits,
            names,
            root_cells: (2, 1),
        }
    }

    fn off(&self, name: &str) -> Result<u32, FdtError> {
        self.names.offset(name).ok_or(FdtError::TooBig)
    }

    /// Whether a string value is the path of a dropped node (`/name`, `/name:opts`, or below).
    fn names_dropped(&self, value: &[u8]) -> bool {
        let Some(path) = value.strip_prefix(b"/") else {
            return false;
        };
        let end = path
            .iter()
            .position(|&b| b == b'/' || b == b':' || b == 0)
            .unwrap_or(path.len());
        unit_address(&path[..end]).is_some_and(|u| self.edits.drop_units.contains(&u))
    }

    fn chosen_props(&self, s: &mut Sink<'_>) -> Result<(), FdtError> {
        for (name, value) in self.edits.chosen {
            let off = self.off(name)?;
            match value {
                Value::Str(v) => prop(s, off, &[v.as_bytes(), &[0]])?,
                Value::U64(v) => prop(s, off, &[&v.to_be_bytes()])?,
            }
        }
        Ok(())
    }

    fn reserved_memory(&self, s: &mut Sink<'_>) -> Result<(), FdtError> {
        let (ac, sc) = self.root_cells;
        begin_node(s, b"reserved-memory")?;
        prop(s, self.off("#address-cells")?, &[&ac.to_be_bytes()])?;
        prop(s, self.off("#size-cells")?, &[&sc.to_be_bytes()])?;
        prop(s, self.off("ranges")?, &[])?;
        for &(base, size) in self.edits.reserved {
            let mut name = [0u8; 20];
            name[..4].copy_from_slice(b"tsm@");
            let mut n = 4;
            let digits = (64 - base.leading_zeros()).div_ceil(4).max(1);
            for d in (0..digits).rev() {
                name[n] = b"0123456789abcdef"[((base >> (d * 4)) & 0xF) as usize];
                n += 1;
            }
            begin_node(s, &name[..n])?;
            let (mut a, mut b) = ([0; 8], [0; 8]);
            let (a, b) = (cells(base, ac, &mut a)?, cells(size, sc, &mut b)?);
            prop(s, self.off("reg")?, &[a, b])?;
            prop(s, self.off("no-map")?, &[])?;
            token(s, END_NODE)?;
        }
        token(s, END_NODE)
    }

    fn run(mut self, s: &mut Sink<'_>) -> Result<(), FdtError> {
        let st = self.tree.structure;
        let mut at = 0usize;
        // Open nodes; the root is depth 1.
        let mut depth = 0usize;
        // Depth below which a dropped node's subtree is skipped.
        let mut skip: Option<usize> = None;
        // The depth-2 node we are in, if it is one the edits touch.
        let (mut in_chosen, mut in_aliases) = (false, false);
        let (mut seen_chosen, mut chosen_done) = (false, false);
        loop {
            let t = be32(st, at).ok_or(FdtError::Malformed)?;
            at += 4;
            match t {
                BEGIN_NODE => {
                    let rest = st.get(at..).ok_or(FdtError::Malformed)?;
                    let len = rest
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(FdtError::Malformed)?;
                    let name = &rest[..len];
                    at += (len + 4) & !3;
                    depth += 1;
                    if skip.is_some() {
                        continue;
                    }
                    if in_chosen && !chosen_done {
                        self.chosen_props(s)?;
                        chosen_done = true;
                    }
                    if depth == 2 {
                        if unit_address(name).is_some_and(|u| self.edits.drop_units.contains(&u)) {
                            skip = Some(depth);
                            continue;
                        }
                        if name == b"reserved-memory" {
                            return Err(FdtError::HasReservedMemory);
                        }
                        in_chosen = name == b"chosen";
                        in_aliases = name == b"aliases";
                        seen_chosen |= in_chosen;
                    }
                    begin_node(s, name)?;
                }
                END_NODE => {
                    if depth == 0 {
                        return Err(FdtError::Malformed);
                    }
                    if let Some(d) = skip {
                        if d == depth {
                            skip = None;
                        }
                        depth -= 1;
                        continue;
                    }
                    if depth == 2 && in_chosen && !chosen_done {
                        self.chosen_props(s)?;
                        chosen_done = true;
                    }
                    if depth == 2 {
                        in_chosen = false;
                        in_aliases = false;
                    }
                    if depth == 1 {
                        if !seen_chosen {
                            begin_node(s, b"chosen")?;
                            self.chosen_props(s)?;
                            token(s, END_NODE)?;
                        }
                        self.reserved_memory(s)?;
                    }
                    depth -= 1;
                    token(s, END_NODE)?;
                }
                PROP => {
                    let len = be32(st, at).ok_or(FdtError::Malformed)? as usize;
                    let name_off = be32(st, at + 4).ok_or(FdtError::Malformed)?;
                    let value = st
                        .get(at + 8..(at + 8).checked_add(len).ok_or(FdtError::Malformed)?)
                        .ok_or(FdtError::Malformed)?;
                    at += 8 + ((len + 3) & !3);
                    if skip.is_some() {
                        continue;
                    }
                    if depth == 0 {
                        return Err(FdtError::Malformed);
                    }
                    let name = self.tree.name(name_off)?;
                    if IOMMU_PROPS.iter().any(|p| p.as_bytes() == name) {
                        continue;
                    }
                    let replaced = self.edits.chosen.iter().any(|(n, _)| n.as_bytes() == name);
                    if (in_chosen && replaced)
                        || ((in_chosen || in_aliases) && self.names_dropped(value))
                    {
                        continue;
                    }
                    if depth == 1 {
                        let v = be32(value, 0);
                        match (name, v) {
                            (b"#address-cells", Some(v)) => self.root_cells.0 = v,
                            (b"#size-cells", Some(v)) => self.root_cells.1 = v,
                            _ => {}
                        }
                    }
                    // The input's strings block starts the output's: its offsets stay.
                    prop(s, name_off, &[value])?;
                }
                NOP => {}
                END => {
                    if depth != 0 {
                        return Err(FdtError::Malformed);
                    }
                    return token(s, END);
                }
                _ => return Err(FdtError::Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests;
