//! Call handlers, one module per group of calls. Each handler has the dispatcher's signature
//! (`fn(&Tsm, Ctx, &Args) -> Outcome`) and is listed in the table in [`crate::dispatch`].

pub mod comm;
pub mod device;
pub mod guest;
pub mod memory;
pub mod system;
pub mod vcpu;
