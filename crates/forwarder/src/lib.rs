//! Forwarder (placeholder: being written).
