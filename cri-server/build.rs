//! Records the git commit crid is built from, for `crid --version`.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        // A source tarball or package build without the repository.
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CRID_COMMIT={commit}");
    // Rebuild when HEAD moves (a worktree's HEAD lives elsewhere; then the
    // commit is refreshed with the next change to crid's own sources).
    for head in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={head}");
    }
}
