//! Event ids of the benchmarks: random, as real vendors send them
//! (`sl-<uuid4>`, SPEC §1's example is UUID-based). Sequential ids
//! (`drain-<i>`) made sled's trees look far better than they are with random
//! keys (issue 11), so no benchmark uses them.

/// A fresh random event id, `sl-<uuid4>` (39 bytes).
pub fn random_id() -> String {
    format!("sl-{}", uuid::Uuid::new_v4())
}
