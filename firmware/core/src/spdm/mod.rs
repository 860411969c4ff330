//! SPDM: the requester's certificate side (issue 14).

pub mod cert;
