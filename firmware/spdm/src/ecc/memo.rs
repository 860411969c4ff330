//! Without feature `crypto-memo`, every P-384 result is computed; with it (the dispatcher
//! fuzzer's builds, never a firmware image), results are remembered per process, keyed by the
//! operation and every input byte ([`super::key::encode`]). Bounded: when full it starts again
//! empty (a fuzzer may present any number of keys). Shared with the device model's responder,
//! whose `spdm/ecc.rs` includes this file by path.

#[cfg(not(feature = "crypto-memo"))]
pub fn cached<const N: usize>(
    _op: u8,
    _inputs: impl Fn(&mut dyn FnMut(&[u8])),
    compute: impl FnOnce() -> [u8; N],
) -> [u8; N] {
    compute()
}

#[cfg(feature = "crypto-memo")]
pub use remembered::cached;

#[cfg(feature = "crypto-memo")]
mod remembered {
    extern crate std;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::vec::Vec;

    const MAX_ENTRIES: usize = 1 << 16;

    static MEMO: LazyLock<Mutex<HashMap<Vec<u8>, Vec<u8>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    pub fn cached<const N: usize>(
        op: u8,
        inputs: impl Fn(&mut dyn FnMut(&[u8])),
        compute: impl FnOnce() -> [u8; N],
    ) -> [u8; N] {
        let key = super::super::key::encode(op, &inputs);
        let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = memo
            .get(&key)
            .and_then(|v| <[u8; N]>::try_from(v.as_slice()).ok())
        {
            return hit;
        }
        let value = compute();
        if memo.len() >= MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(key, value.to_vec());
        value
    }
}
