//! Admin operations (placeholder: being written).
