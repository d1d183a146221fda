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

/// A step of building a pod or container is done: log how long it took
/// (debug, `<kind> step done`) and give the crash tests their chance to kill
/// crid right here.
pub struct Progress {
    kind: &'static str,
    id: String,
    last: std::time::Instant,
}

impl Progress {
    pub fn new(kind: &'static str, id: &str) -> Progress {
        Progress {
            kind,
            id: id.to_string(),
            last: std::time::Instant::now(),
        }
    }

    pub fn step(&mut self, step: &str) {
        let now = std::time::Instant::now();
        let elapsed_ms = (now - self.last).as_secs_f64() * 1000.0;
        tracing::debug!(id = %self.id, step, elapsed_ms, "{} step done", self.kind);
        self.last = now;
        point(step);
    }
}
