//! The traits the monitor core needs from a platform.
