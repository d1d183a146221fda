//! `release_idle_memory` gives back what a burst of work touched, on the
//! main thread's stack and in the heap, and the process goes on unharmed.
//!
//! `harness = false`: the stack given back is the main thread's, and
//! libtest would run the test on a thread of its own.

use std::hint::black_box;

/// Resident KiB of the mappings named `name` in /proc/self/smaps.
fn resident_kib(name: &str) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut in_mapping = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line.as_bytes().first().is_some_and(u8::is_ascii_hexdigit) && line.contains('-') {
            in_mapping = line.ends_with(name);
        } else if in_mapping && let Some(rest) = line.strip_prefix("Rss:") {
            total += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .expect("Rss in kB");
        }
    }
    total
}

#[inline(never)]
fn touch_deep_stack() -> u8 {
    let mut frame = [0u8; 512 * 1024];
    for page in frame.chunks_mut(4096) {
        page[0] = 1;
    }
    black_box(&mut frame)
        .iter()
        .step_by(4096)
        .fold(0, |a, b| a ^ b)
}

fn main() {
    monitor::note_main_stack();

    black_box(touch_deep_stack());
    // Many small blocks come from the heap (not mmap); one kept block above
    // them stops free() from trimming the heap's top by itself.
    let blocks: Vec<Box<[u8; 1024]>> = (0..2048).map(|_| Box::new([1u8; 1024])).collect();
    let pinned = Box::new([2u8; 1024]);
    drop(black_box(blocks));

    let stack_before = resident_kib("[stack]");
    let heap_before = resident_kib("[heap]");
    monitor::release_idle_memory();
    let stack_after = resident_kib("[stack]");
    let heap_after = resident_kib("[heap]");
    println!("stack {stack_before} -> {stack_after} KiB, heap {heap_before} -> {heap_after} KiB");

    assert!(
        stack_after + 256 <= stack_before,
        "the stack below the caller stayed resident: {stack_before} -> {stack_after} KiB"
    );
    assert!(
        heap_after + 1024 <= heap_before,
        "the freed heap stayed resident: {heap_before} -> {heap_after} KiB"
    );
    // What is live is intact, and the stack given back works again.
    assert!(pinned.iter().all(|&b| b == 2));
    black_box(touch_deep_stack());
    println!("ok");
}
