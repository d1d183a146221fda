//! The Debian package a node installs (`cargo deb -p cri-server`, see
//! cri-server's `[package.metadata.deb]` and packaging/): built from the
//! binaries of this build and taken apart with dpkg-deb, as dpkg would see
//! it. cargo-deb comes from scripts/install-prerequisites.

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_package_installs_crid_its_unit_and_a_default_config_and_keeps_the_data() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().expect("tempdir");
    let deb = out.path().join("crid.deb");
    // The binaries `cargo build --workspace --bins` made (scripts/test
    // builds them first); a release build packages the same way.
    run(Command::new("cargo")
        .current_dir(&workspace)
        .args([
            "deb",
            "-p",
            "cri-server",
            "--no-build",
            "--profile",
            "dev",
            "-q",
            "-o",
        ])
        .arg(&deb));

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    for expected in [
        "./usr/bin/crid",
        "./usr/bin/crid-monitor",
        "./usr/lib/systemd/system/crid.service",
        "./etc/crid/config.toml",
        "./etc/crid/config.d/README",
        "./usr/share/doc/crid/examples/10-crid.conflist",
    ] {
        assert!(files.contains(&expected), "{expected} missing:\n{contents}");
    }
    assert!(
        !files.iter().any(|file| file.starts_with("./var/")),
        "the package must not own crid's data: {contents}"
    );

    let control = out.path().join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let read = |name: &str| {
        std::fs::read_to_string(control.join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    assert_eq!(
        read("conffiles").lines().next(),
        Some("/etc/crid/config.toml")
    );
    let fields = read("control");
    assert!(fields.contains("Package: crid"), "{fields}");
    assert!(
        fields.contains("libseccomp2"),
        "crid-monitor links libseccomp: {fields}"
    );
    let postinst = read("postinst");
    assert!(
        postinst.contains("deb-systemd-helper enable crid.service"),
        "{postinst}"
    );
    // An upgrade restarts crid (the pods stay: KillMode=process).
    assert!(postinst.contains("_dh_action=restart"), "{postinst}");
    let postrm = read("postrm");
    assert!(
        !postrm
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .any(|line| line.contains("/var/lib/crid")),
        "purge must keep the data: {postrm}"
    );

    // What dpkg installs is what the repository holds.
    let data = out.path().join("data");
    run(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&data));
    for (installed, shipped) in [
        (
            "usr/lib/systemd/system/crid.service",
            "packaging/crid.service",
        ),
        ("etc/crid/config.toml", "packaging/config.toml"),
    ] {
        assert_eq!(
            std::fs::read_to_string(data.join(installed)).expect("installed"),
            std::fs::read_to_string(workspace.join(shipped)).expect("shipped"),
            "{installed}"
        );
    }
    let version = run(Command::new(data.join("usr/bin/crid")).arg("--version"));
    assert!(version.starts_with("crid "), "{version}");
}
