//! `crid-monitor`, run in the pod's state dir: one per pod, started by crid.
fn main() -> std::process::ExitCode {
    monitor::main()
}
