//! Fault-injecting TCP proxy (being written).
