//! What a QEMU run's end means: QEMU's exit status mapped back to the image's verdict, and a
//! scenario's verdict against what it expects.

use std::fmt;

use crate::arch::Arch;
use crate::decode::{Line, Program};

/// How QEMU stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal that xtask did not send.
    Signalled,
    /// Ran past its timeout and was killed by xtask.
    TimedOut,
    /// Ended by xtask on request (the gdb session it served is over).
    Stopped,
}

/// The result of one run, as the image reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Hang,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Hang => "HANG",
        })
    }
}

/// Maps QEMU's end back to the image's verdict (docs/design.md, "Exit").
pub fn outcome(arch: Arch, ended: Ended) -> Outcome {
    match (arch, ended) {
        (_, Ended::TimedOut) => Outcome::Hang,
        (_, Ended::Signalled | Ended::Stopped) => Outcome::Fail,
        // Semihosting SYS_EXIT: QEMU exits with the program's status.
        (Arch::Aarch64, Ended::Exited(code)) => {
            if code == 0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            }
        }
        // isa-debug-exit gives (v << 1) | 1: 0x10 → 33, 0x11 → 35. Anything else did not come
        // from hal::exit: QEMU's own errors (1), or a triple fault, which with -no-reboot ends
        // QEMU with 0. None of those may pass.
        (Arch::X86_64, Ended::Exited(code)) => {
            if code == 33 {
                Outcome::Pass
            } else {
                Outcome::Fail
            }
        }
    }
}

/// QEMU turns SIGINT/SIGTERM/SIGHUP into an orderly shutdown with exit status 0, which on
/// aarch64 reads as the image's success: its "terminating on signal" note on stderr tells.
pub fn signalled_if_qemu_says_so(ended: Ended, stderr: &str) -> Ended {
    match ended {
        Ended::Exited(_) if stderr.contains("terminating on signal") => Ended::Signalled,
        other => other,
    }
}

/// Why QEMU's end maps to its outcome, for the log and the summary.
pub fn describe(arch: Arch, ended: Ended) -> String {
    match (arch, ended) {
        (_, Ended::TimedOut) => "killed after its timeout".into(),
        (_, Ended::Signalled) => "QEMU was killed by a signal".into(),
        (_, Ended::Stopped) => "stopped by xtask".into(),
        (Arch::Aarch64, Ended::Exited(0)) => "semihosting exit 0 (success)".into(),
        (Arch::Aarch64, Ended::Exited(code)) => format!("QEMU exit status {code} (failure)"),
        (Arch::X86_64, Ended::Exited(33)) => "isa-debug-exit 0x10 (success)".into(),
        (Arch::X86_64, Ended::Exited(35)) => "isa-debug-exit 0x11 (failure)".into(),
        (Arch::X86_64, Ended::Exited(0)) => {
            "QEMU exit status 0 without isa-debug-exit: reset or triple fault (failure)".into()
        }
        (Arch::X86_64, Ended::Exited(code)) => {
            format!("QEMU exit status {code}, not from isa-debug-exit (failure)")
        }
    }
}

/// A line some program must have logged for the scenario to count as passed.
#[derive(Clone, Copy, Debug)]
pub struct MustLog {
    /// `None`: on both arches.
    pub arch: Option<Arch>,
    pub program: Program,
    /// A word (or words) to find, ignoring case: register dumps differ in case between arches
    /// ("ESR_EL2", "rip 0x…").
    pub text: &'static str,
}

/// Judges a run against its scenario's expectation; the error says what did not match.
pub fn judge(
    arch: Arch,
    expected: Outcome,
    must_log: &[MustLog],
    got: Outcome,
    log: &[Line],
) -> Result<(), String> {
    if got != expected {
        return Err(format!("expected {expected}, got {got}"));
    }
    let missing: Vec<String> = must_log
        .iter()
        .filter(|m| m.arch.is_none_or(|a| a == arch))
        .filter(|m| {
            !log.iter()
                .any(|l| l.program == Some(m.program) && has_word(&l.message, m.text))
        })
        .map(|m| format!("{:?} line containing {:?}", m.program, m.text))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{got} as expected, but the log lacks: {}",
            missing.join(", ")
        ))
    }
}

/// Whether `needle` occurs in `haystack`, ignoring ASCII case, not inside a longer word
/// ("rip" is in "rip 0x20" and "RIP=", not in "script"). `_` separates words, so "ESR" is
/// found in "ESR_EL2".
fn has_word(haystack: &str, needle: &str) -> bool {
    let hay = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let is_word = |c: char| c.is_ascii_alphanumeric();
    hay.match_indices(&needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_exit_status_is_the_programs() {
        assert_eq!(outcome(Arch::Aarch64, Ended::Exited(0)), Outcome::Pass);
        assert_eq!(outcome(Arch::Aarch64, Ended::Exited(1)), Outcome::Fail);
        assert_eq!(outcome(Arch::Aarch64, Ended::Signalled), Outcome::Fail);
        assert_eq!(outcome(Arch::Aarch64, Ended::TimedOut), Outcome::Hang);
    }

    #[test]
    fn x86_only_the_debug_exit_success_value_passes() {
        assert_eq!(outcome(Arch::X86_64, Ended::Exited(33)), Outcome::Pass);
        assert_eq!(outcome(Arch::X86_64, Ended::Exited(35)), Outcome::Fail);
        // A triple fault with -no-reboot ends QEMU with 0: that must not read as success.
        assert_eq!(outcome(Arch::X86_64, Ended::Exited(0)), Outcome::Fail);
        assert_eq!(outcome(Arch::X86_64, Ended::Exited(1)), Outcome::Fail);
        assert_eq!(outcome(Arch::X86_64, Ended::TimedOut), Outcome::Hang);
        assert!(describe(Arch::X86_64, Ended::Exited(0)).contains("triple fault"));
    }

    #[test]
    fn a_qemu_stopped_by_a_signal_never_passes() {
        let stderr = "qemu-system-aarch64: terminating on signal 15 from pid 7279 (timeout)\n";
        let ended = signalled_if_qemu_says_so(Ended::Exited(0), stderr);
        assert_eq!(ended, Ended::Signalled);
        assert_eq!(outcome(Arch::Aarch64, ended), Outcome::Fail);
        assert_eq!(
            signalled_if_qemu_says_so(Ended::Exited(0), ""),
            Ended::Exited(0)
        );
        assert_eq!(
            signalled_if_qemu_says_so(Ended::TimedOut, stderr),
            Ended::TimedOut
        );
    }

    #[test]
    fn required_words_match_whole_words_in_any_case() {
        assert!(has_word(
            "TSM exception 14 #PF: error 0x0 rip 0x20687b",
            "RIP"
        ));
        assert!(has_word("ESR_EL2 0x96000045", "ESR"));
        assert!(has_word("scenario 0: PASS", "PASS"));
        assert!(!has_word("running the script", "RIP"));
        assert!(!has_word("PASSED", "PASS"));
        assert!(!has_word("", "ESR"));
    }

    fn line(program: Program, message: &str) -> Line {
        Line {
            program: Some(program),
            time: None,
            level: "ERROR",
            message: message.into(),
        }
    }

    const ESR: [MustLog; 2] = [
        MustLog {
            arch: Some(Arch::Aarch64),
            program: Program::Tsm,
            text: "ESR",
        },
        MustLog {
            arch: Some(Arch::X86_64),
            program: Program::Tsm,
            text: "RIP",
        },
    ];

    #[test]
    fn a_run_matches_when_outcome_and_required_lines_match() {
        let log = [line(
            Program::Tsm,
            "EL2 sync exception: ESR 0x96000045 FAR 0x0",
        )];
        assert_eq!(
            judge(Arch::Aarch64, Outcome::Fail, &ESR, Outcome::Fail, &log),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_outcome_is_a_mismatch_even_when_it_is_a_pass() {
        let err = judge(Arch::Aarch64, Outcome::Hang, &[], Outcome::Pass, &[]).unwrap_err();
        assert_eq!(err, "expected HANG, got PASS");
    }

    #[test]
    fn a_missing_line_is_a_mismatch_and_only_this_arch_counts() {
        // The x86 expectation ("RIP") does not apply on aarch64, and a host line does not
        // stand in for a TSM line.
        let log = [line(Program::Host, "ESR"), line(Program::Tsm, "RIP")];
        let err = judge(Arch::Aarch64, Outcome::Fail, &ESR, Outcome::Fail, &log).unwrap_err();
        assert!(err.contains("\"ESR\""), "{err}");
        assert!(!err.contains("RIP"), "{err}");
        assert_eq!(
            judge(Arch::X86_64, Outcome::Fail, &ESR, Outcome::Fail, &log),
            Ok(())
        );
    }
}
