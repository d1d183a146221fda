//! What the cgroup tests (v1 on the host, v2 in scripts/vm-lane's VM) share.

use std::fs;
use std::path::Path;
use std::process::Child;

use runtime::cgroup::Hierarchy;

/// The test's cgroups and process; on drop (also after a failed assert)
/// kills the process and removes every level the test made, deepest first.
pub struct Cleanup {
    pub hierarchy: Hierarchy,
    pub levels: Vec<String>,
    pub child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        for level in &self.levels {
            let _ = self.hierarchy.kill_and_remove(level);
        }
    }
}

/// A control file's content, trimmed.
pub fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .trim()
        .to_owned()
}

/// These tests write real cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test writes real cgroups: run it as root"
    );
}
