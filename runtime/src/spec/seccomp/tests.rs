use super::*;

fn caps(list: &[Capability]) -> HashSet<Capability> {
    list.iter().copied().collect()
}

/// The rules naming `name`, in order.
fn rules_for<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect()
}

fn allowed_unconditionally(profile: &LinuxSeccomp, name: &str) -> bool {
    rules_for(profile, name).iter().any(|r| {
        r.action() == LinuxSeccompAction::ScmpActAllow
            && r.args().as_deref().unwrap_or_default().is_empty()
    })
}

fn default_for(set: &HashSet<Capability>) -> LinuxSeccomp {
    runtime_default(set).expect("the default profile builds")
}

#[test]
fn default_denies_with_eperm_on_all_x86_arches() {
    let p = default_for(&caps(crate::spec::DEFAULT_CAPABILITIES));
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
}

#[test]
fn ordinary_syscalls_allowed_privileged_ones_not() {
    let p = default_for(&caps(crate::spec::DEFAULT_CAPABILITIES));
    for name in ["mkdir", "read", "execve", "chroot", "ptrace", "arch_prctl"] {
        assert!(allowed_unconditionally(&p, name), "{name}");
    }
    for name in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "reboot",
        "init_module",
        "bpf",
        "perf_event_open",
        "clock_settime",
        "open_by_handle_at",
        "pivot_root",
        "userfaultfd",
        "personality",
        "socket",
        "clone",
    ] {
        assert!(!allowed_unconditionally(&p, name), "{name}");
    }
}

#[test]
fn capabilities_unlock_their_syscalls() {
    let mut set = caps(crate::spec::DEFAULT_CAPABILITIES);
    set.remove(&Capability::SysChroot);
    assert!(!allowed_unconditionally(&default_for(&set), "chroot"));
    for (cap, name) in [
        (Capability::SysAdmin, "mount"),
        (Capability::SysAdmin, "unshare"),
        (Capability::SysAdmin, "clone3"),
        (Capability::SysModule, "init_module"),
        (Capability::SysBoot, "reboot"),
        (Capability::SysTime, "clock_settime"),
        (Capability::SysPtrace, "kcmp"),
        (Capability::Syslog, "syslog"),
        (Capability::DacReadSearch, "open_by_handle_at"),
        (Capability::Bpf, "bpf"),
        (Capability::Perfmon, "perf_event_open"),
    ] {
        assert!(
            allowed_unconditionally(&default_for(&caps(&[cap])), name),
            "{cap} {name}"
        );
    }
}

#[test]
fn clone_is_limited_and_clone3_is_enosys_without_sys_admin() {
    let p = default_for(&caps(crate::spec::DEFAULT_CAPABILITIES));
    let clone = rules_for(&p, "clone");
    assert_eq!(clone.len(), 1);
    let args = clone[0].args().clone().unwrap_or_default();
    assert_eq!(args.len(), 1);
    assert_eq!(args[0].index(), 0);
    assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    // moby's value: every CLONE_NEW* flag a clone can pass.
    assert_eq!(args[0].value(), 0x7E02_0000);
    assert_eq!(args[0].value_two(), Some(0));
    let clone3 = rules_for(&p, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));

    let admin = default_for(&caps(&[Capability::SysAdmin]));
    assert!(allowed_unconditionally(&admin, "clone"));
    assert!(
        rules_for(&admin, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
    );
}

#[test]
fn personality_and_socket_are_limited_by_argument() {
    let p = default_for(&HashSet::new());
    let values: Vec<u64> = rules_for(&p, "personality")
        .iter()
        .flat_map(|r| r.args().clone().unwrap_or_default())
        .map(|a| a.value())
        .collect();
    assert_eq!(values, PERSONALITIES);
    let socket = rules_for(&p, "socket");
    assert_eq!(socket.len(), 1);
    let args = socket[0].args().clone().unwrap_or_default();
    assert_eq!(
        (args[0].op(), args[0].value()),
        (LinuxSeccompOperator::ScmpCmpNe, libc::AF_VSOCK as u64)
    );
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("writing the test profile");
    path
}

#[test]
fn localhost_reads_the_oci_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "oci.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                        {"names":["chmod"],"action":"SCMP_ACT_ERRNO",
                         "args":[{"index":1,"value":2048,"valueTwo":2048,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    let p = localhost(&path, &HashSet::new()).expect("valid profile");
    assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(
        p.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64][..])
    );
    let mkdir = rules_for(&p, "mkdirat");
    assert_eq!(mkdir[0].errno_ret(), Some(1));
    let chmod = rules_for(&p, "chmod");
    let args = chmod[0].args().clone().unwrap_or_default();
    assert_eq!((args[0].index(), args[0].value_two()), (1, Some(2048)));
}

#[test]
fn localhost_reads_the_docker_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "docker.json",
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]},
                       {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]},
                       {"architecture":"SCMP_ARCH_RISCV64","subArchitectures":null}],
            "syscalls":[
              {"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":null,"comment":""},
              {"name":"getpid","action":"SCMP_ACT_ALLOW"},
              {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38,"excludes":{"caps":["CAP_SYS_ADMIN"]}},
              {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
              {"names":["future"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"999.0"}},
              {"names":["arch_prctl"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","x32"]}},
              {"names":["set_tls"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm","arm64"]}}
            ]}"#,
    );
    let plain = localhost(&path, &HashSet::new()).expect("valid profile");
    assert_eq!(plain.default_errno_ret(), Some(1));
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            plain.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert!(allowed_unconditionally(&plain, "arch_prctl"));
        assert!(rules_for(&plain, "set_tls").is_empty());
    }
    assert!(allowed_unconditionally(&plain, "write"));
    assert!(allowed_unconditionally(&plain, "getpid"));
    assert!(rules_for(&plain, "mount").is_empty());
    assert_eq!(rules_for(&plain, "clone3").len(), 1);
    assert!(allowed_unconditionally(&plain, "ptrace"));
    assert!(rules_for(&plain, "future").is_empty());

    let admin = localhost(&path, &caps(&[Capability::SysAdmin])).expect("valid profile");
    assert!(allowed_unconditionally(&admin, "mount"));
    assert!(rules_for(&admin, "clone3").is_empty());
}

#[test]
fn localhost_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.json");
    let bad = write(&dir, "bad.json", "{not json");
    let both = write(
        &dir,
        "both.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
    );
    let no_names = write(
        &dir,
        "nonames.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    for path in [missing, bad, both, no_names] {
        let error = localhost(&path, &HashSet::new())
            .map(|_| ())
            .expect_err("must be refused")
            .to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
}

#[test]
fn kernel_versions_compare_by_major_and_minor() {
    assert_eq!(major_minor("6.1.0-13-amd64"), Some((6, 1)));
    assert_eq!(major_minor("4.8"), Some((4, 8)));
    assert_eq!(major_minor("5.15rc1"), Some((5, 15)));
    assert_eq!(major_minor("x"), None);
}
