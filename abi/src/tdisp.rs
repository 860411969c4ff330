//! PCIe TDISP 1.0 wire format (requester and responder side).
