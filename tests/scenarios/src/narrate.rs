//! The scenarios' log lines as plain text, for a host that has no defmt logger: the Linux
//! user-space driver (linux/driver), whose lines go to its standard output and from there to
//! the kernel's console, where the `linux` scenario finds them. The same `say!` lines the
//! payloads log with defmt, rendered from the same format strings, so neither the lines nor
//! the scenarios exist twice.
//!
//! The format strings use the subset of defmt's syntax the scenarios use: `{=T}` and
//! `{=T:#x}` placeholders, filled in order, and `{{`/`}}` escapes.

use core::fmt::{self, Write};

/// Where finished pieces of a line go; set once by the program (no line is written before).
static SINK: spin::Once<fn(&str)> = spin::Once::new();

/// Sends every later line to `sink`, a piece at a time and each line ending with `"\n"`. The
/// first call wins: a program has one standard output.
pub fn set_sink(sink: fn(&str)) {
    SINK.call_once(|| sink);
}

/// A value a `say!` line shows.
pub trait Arg {
    /// Writes the value, in hexadecimal with `0x` when `hex`.
    fn put(&self, hex: bool, out: &mut dyn Write) -> fmt::Result;
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn put(&self, hex: bool, out: &mut dyn Write) -> fmt::Result {
                if hex { write!(out, "{self:#x}") } else { write!(out, "{self}") }
            }
        }
    )*};
}
int_args!(u8, u16, u32, u64, usize);

impl Arg for &str {
    fn put(&self, _hex: bool, out: &mut dyn Write) -> fmt::Result {
        out.write_str(self)
    }
}

/// Renders `fmt` with `args` into `out`. A placeholder without an argument left shows as
/// `{?}` and an argument without a placeholder is dropped: the format strings are the
/// scenarios' own, checked by defmt in the payloads' builds.
pub fn render(fmt: &str, args: &[&dyn Arg], out: &mut dyn Write) -> fmt::Result {
    let mut args = args.iter();
    let mut rest = fmt;
    while let Some(i) = rest.find(['{', '}']) {
        out.write_str(&rest[..i])?;
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.write_str(&tail[..1])?;
            rest = &tail[2..];
            continue;
        }
        let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
            // A lone `}`: shown as it is.
            out.write_str(&tail[..1])?;
            rest = &tail[1..];
            continue;
        };
        let hex = tail[..end].ends_with(":#x");
        match args.next() {
            Some(a) => a.put(hex, out)?,
            None => out.write_str("{?}")?,
        }
        rest = &tail[end + 1..];
    }
    out.write_str(rest)
}

/// A [`Write`] that hands each piece to a sink.
struct ToSink(fn(&str));

impl Write for ToSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.0)(s);
        Ok(())
    }
}

/// One `say!` line: rendered to the sink, if there is one.
pub fn line(fmt: &str, args: &[&dyn Arg]) {
    if let Some(&sink) = SINK.get() {
        let mut out = ToSink(sink);
        let _ = render(fmt, args, &mut out);
        sink("\n");
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    fn text(fmt: &str, args: &[&dyn Arg]) -> String {
        let mut s = String::new();
        render(fmt, args, &mut s).unwrap();
        s
    }

    #[test]
    fn placeholders_take_the_arguments_in_order() {
        assert_eq!(
            text(
                "story: {=str} RID {=u16:#x}, {=usize} granules at {=u64:#x}",
                &[&"edu", &0x18u16, &6usize, &0x4200_0000u64]
            ),
            "story: edu RID 0x18, 6 granules at 0x42000000"
        );
    }

    #[test]
    fn escapes_and_missing_or_extra_arguments() {
        assert_eq!(text("{{a}} {=u8}", &[&7u8]), "{a} 7");
        assert_eq!(text("x {=u32} y {=u32}", &[&1u32]), "x 1 y {?}");
        assert_eq!(text("no placeholder", &[&1u32]), "no placeholder");
        assert_eq!(text("lone } and {unclosed", &[]), "lone } and {unclosed");
    }
}
