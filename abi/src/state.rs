//! Object states and device operations as the ABI reports them (VDEV_GET_STATE, G_VDEV_INFO,
//! the results of the resumable calls). The transitions are specified in `docs/abi.md`.

use crate::layout::abi_enum;

abi_enum! {
    /// The state of a TVM.
    pub enum TvmState ("TVM_STATE") {
        /// Created; the host may populate private memory with content (MAP_PRIVATE with a
        /// source); vCPUs may not run.
        New = 1 => "NEW",
        /// Activated; vCPUs may run; private maps are zero-filled only.
        Active = 2 => "ACTIVE",
    }
}

abi_enum! {
    /// The state of a PDEV (a device security manager and its requester-ID range).
    pub enum PdevState ("PDEV_STATE") {
        /// Created; PDEV_CONNECT not yet called.
        New = 1 => "NEW",
        /// The connect operation is in progress (device I/O through COMMUNICATE).
        Connecting = 2 => "CONNECTING",
        /// Connected: TDISP version and capabilities known; vdevices may be created.
        Ready = 3 => "READY",
        /// Stopped by PDEV_STOP; only PDEV_DESTROY is allowed.
        Stopped = 4 => "STOPPED",
        /// The device failed the connect protocol or the host cancelled it; only
        /// PDEV_STOP / PDEV_DESTROY are allowed.
        Error = 5 => "ERROR",
    }
}

abi_enum! {
    /// The state of a vdevice (vPCI function). T=0 DMA is translated in every state; T=1 DMA
    /// to private memory is allowed only in `Run`.
    pub enum VdevState ("VDEV_STATE") {
        /// TDISP CONFIG_UNLOCKED: T=0 only, through the secure vIOMMU.
        Unlocked = 1 => "UNLOCKED",
        /// VDEV_BIND in progress: LOCK_INTERFACE and the report fetch.
        Locking = 2 => "LOCKING",
        /// TDISP CONFIG_LOCKED: report cached, accept nonce fresh; waiting for the guest.
        Locked = 3 => "LOCKED",
        /// The guest accepted; START_INTERFACE in progress.
        Starting = 4 => "STARTING",
        /// TDISP RUN and accepted by the TVM: T=1 DMA allowed.
        Run = 5 => "RUN",
        /// VDEV_UNBIND or G_VDEV_STOP in progress: T=1 already off, STOP_INTERFACE pending.
        Stopping = 6 => "STOPPING",
        /// The device or the host broke the protocol, or an operation was cancelled: T=1 off;
        /// VDEV_UNBIND (to try STOP_INTERFACE) or VDEV_DESTROY.
        Error = 7 => "ERROR",
    }
}

abi_enum! {
    /// A device operation pending on a PDEV or VDEV (result of the resumable calls and of
    /// VDEV_GET_STATE). `None` means no operation is pending: the last one finished.
    pub enum DeviceOp ("OP") {
        /// No operation pending.
        None = 0 => "NONE",
        /// PDEV connect: with SPDM the SPDM connect and session (GET_VERSION … FINISH), then
        /// TDISP GET_VERSION, GET_CAPABILITIES.
        Connect = 1 => "CONNECT",
        /// VDEV bind: TDISP LOCK_INTERFACE, GET_DEVICE_INTERFACE_REPORT (all portions).
        Bind = 2 => "BIND",
        /// Guest accept: TDISP START_INTERFACE (started by G_VDEV_ACCEPT).
        Start = 3 => "START",
        /// VDEV unbind or guest stop: TDISP STOP_INTERFACE.
        Stop = 4 => "STOP",
        /// PDEV key update: SPDM KEY_UPDATE (UpdateAllKeys, then VerifyNewKey) in the session;
        /// the PDEV stays READY.
        KeyUpdate = 5 => "KEY_UPDATE",
        /// PDEV disconnect: SPDM END_SESSION in the session; the PDEV stays READY until the
        /// device acknowledges, then goes back to NEW.
        Disconnect = 6 => "DISCONNECT",
    }
}
