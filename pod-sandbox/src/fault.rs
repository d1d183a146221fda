//! Test-only crash points. In debug builds (what the test suite runs),
//! `CRID_TEST_CRASH_AT=<step>` makes the process SIGKILL itself when it
//! reaches that step, so tests can prove a crash anywhere is recovered.
//! Release builds compile this to nothing.

pub fn point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("CRID_TEST_CRASH_AT").is_ok_and(|wanted| wanted == step) {
        eprintln!("crid: crashing at {step} (CRID_TEST_CRASH_AT)");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
