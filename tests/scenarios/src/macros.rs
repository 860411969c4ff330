//! Logging that goes to defmt in the payloads and nowhere on the build machine, and the check
//! macros every scenario uses.

/// Logs a line at info level (defmt syntax); as text with the `narrate` feature (the Linux
/// driver, `crate::narrate`); compiled out without either.
macro_rules! say {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($fmt $(, $arg)*);
        #[cfg(all(feature = "narrate", not(feature = "defmt")))]
        $crate::narrate::line($fmt, &[$(&$arg as &dyn $crate::narrate::Arg),*]);
        #[cfg(not(any(feature = "defmt", feature = "narrate")))]
        {
            $( let _ = &$arg; )*
        }
    }};
}

/// Fails the scenario with `$what` unless `$cond`; `$got` (optional) is logged with it.
macro_rules! ensure {
    ($cond:expr, $what:literal) => {
        ensure!($cond, $what, 0u64)
    };
    ($cond:expr, $what:literal, $got:expr) => {
        if !$cond {
            return Err($crate::Fail {
                what: $what,
                line: line!(),
                got: $got as u64,
            });
        }
    };
}

/// Unwraps an ABI call that must succeed; otherwise fails with the status word it returned.
macro_rules! must {
    ($call:expr, $what:literal) => {
        match $call {
            Ok(v) => v,
            Err(e) => {
                return Err($crate::Fail {
                    what: $what,
                    line: line!(),
                    got: $crate::driver::raw_error(e),
                });
            }
        }
    };
}

/// Checks that an ABI call was refused with exactly `$status`.
macro_rules! refused {
    ($call:expr, $status:expr, $what:literal) => {{
        let want: tsm_abi::Status = $status;
        match $call {
            Err(tsm_abi::api::Error::Tsm(s)) if s == want => {}
            Err(e) => {
                return Err($crate::Fail {
                    what: $what,
                    line: line!(),
                    got: $crate::driver::raw_error(e),
                });
            }
            Ok(_) => {
                return Err($crate::Fail {
                    what: $what,
                    line: line!(),
                    got: 0,
                });
            }
        }
    }};
}
