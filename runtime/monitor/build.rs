//! Links crid-monitor as a fixed-address executable (not PIE). Every pod
//! runs its own monitor and, forked from it, its pause; in a PIE the
//! loader relocates ~250 KiB of tables (`.data.rel.ro`: vtables, panic
//! locations, string tables) at a random base, which makes those pages
//! private to each pod. At a fixed address they stay clean file pages,
//! shared by every monitor on the node: about half of a pod's memory.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
