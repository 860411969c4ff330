//! A TDISP device model.
#![no_std]
