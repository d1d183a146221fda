//! Kept-open control files stay within half the descriptor limit: past
//! it, readings open and close their files, and still read right. A test
//! binary of its own, because the budget is taken from the limit once per
//! process.

// Shared with the other cgroup tests; this one needs not all of it.
#[allow(dead_code)]
mod common;

use common::{Cleanup, require_root};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use runtime::cgroup::Hierarchy;
use runtime::cgroup::stats::{ControlFiles, Detail, kept_open};

#[test]
fn control_files_kept_open_stay_within_half_the_descriptor_limit() {
    require_root();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // A budget of 32: less than two cgroups' worth of files on v1.
    setrlimit(Resource::RLIMIT_NOFILE, 64, hard).expect("setrlimit");
    let hierarchy = Hierarchy::detect().expect("detect");
    let parent = format!("/crid-test-fd-budget-{}", std::process::id());
    let leaves: Vec<String> = (0..4).map(|i| format!("{parent}/c{i}")).collect();
    let _cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: leaves.iter().cloned().chain([parent.clone()]).collect(),
        child: None,
    };
    let mut files: Vec<ControlFiles> = Vec::new();
    for leaf in &leaves {
        hierarchy.create_leaf(leaf).expect("create leaf");
        let mut kept = ControlFiles::default();
        let stats = hierarchy
            .stats_with(leaf, &mut kept, Detail::Full)
            .expect("a reading past the budget still reads");
        assert_eq!(stats.pids.current, 0, "{leaf} is empty");
        files.push(kept);
        assert!(kept_open() <= 32, "{} files kept open", kept_open());
    }
    assert!(kept_open() > 0, "some files are kept open");
    // Again, through the same (partly kept) files.
    for (leaf, kept) in leaves.iter().zip(&mut files) {
        hierarchy
            .stats_with(leaf, kept, Detail::Cri)
            .expect("a second reading");
    }
    assert!(kept_open() <= 32, "{} files kept open", kept_open());
    drop(files);
    assert_eq!(kept_open(), 0, "dropped files are counted out");
}
