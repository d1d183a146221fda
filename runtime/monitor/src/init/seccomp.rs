//! OCI `linux.seccomp` → a libseccomp filter, loaded by the container
//! process (init or exec) just before it execs.
//!
//! As runc: syscall names this libseccomp or architecture does not know
//! are skipped (profiles list syscalls of newer kernels and other
//! arches); a rule whose action is the default action is skipped (it
//! would change nothing, and libseccomp refuses it); several conditions on
//! the same argument become one rule each (libseccomp cannot AND them, and
//! profiles mean OR).

use std::io;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};

use super::context;

/// The errno of an ERRNO (or TRACE) action without `errnoRet` (runc's).
const DEFAULT_ERRNO: i32 = libc::EPERM;

/// Builds the filter (not loaded yet). Built before the process changes
/// anything, so a bad profile fails the start cleanly.
pub(super) fn filter(seccomp: &LinuxSeccomp) -> io::Result<ScmpFilterContext> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = context(ScmpFilterContext::new(default), || {
        "creating the seccomp filter".into()
    })?;
    // libseccomp sets no_new_privs on load unless told not to; the spec's
    // `noNewPrivileges` decides that, not the filter.
    context(ctx.set_ctl_nnp(false), || {
        "seccomp: clearing CTL_NNP".into()
    })?;
    for &arch in seccomp.architectures().as_deref().unwrap_or_default() {
        let arch = scmp_arch(arch);
        let present = context(ctx.is_arch_present(arch), || {
            format!("seccomp: checking arch {arch:?}")
        })?;
        if !present {
            context(ctx.add_arch(arch), || {
                format!("seccomp: adding arch {arch:?}")
            })?;
        }
    }
    for flag in seccomp.flags().as_deref().unwrap_or_default() {
        let set = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        };
        context(set, || format!("seccomp: setting flag {flag}"))?;
    }
    for rule in seccomp.syscalls().as_deref().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or_default();
        let compares = args.iter().map(compare).collect::<io::Result<Vec<_>>>()?;
        let one_per_arg = args
            .iter()
            .enumerate()
            .any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
        for name in rule.names() {
            // Unknown here: nothing to filter (see the module docs).
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let what = || format!("seccomp: adding the rule for {name}");
            if compares.is_empty() {
                context(ctx.add_rule(act, syscall), what)?;
            } else if one_per_arg {
                for compare in &compares {
                    context(ctx.add_rule_conditional(act, syscall, &[*compare]), what)?;
                }
            } else {
                context(ctx.add_rule_conditional(act, syscall, &compares), what)?;
            }
        }
    }
    Ok(ctx)
}

/// Loads `filter` into this process. Needs no_new_privs or CAP_SYS_ADMIN.
pub(super) fn load(filter: &ScmpFilterContext) -> io::Result<()> {
    context(filter.load(), || "loading the seccomp filter".into())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> io::Result<ScmpAction> {
    let errno = || {
        errno
            .map(i32::try_from)
            .transpose()
            .map_err(|_| io::Error::other(format!("seccomp: errnoRet {errno:?} is out of range")))
            .map(|e| e.unwrap_or(DEFAULT_ERRNO))
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno()?),
        LinuxSeccompAction::ScmpActTrace => {
            let value = errno()?;
            ScmpAction::Trace(u16::try_from(value).map_err(|_| {
                io::Error::other(format!("seccomp: trace value {value} is out of range"))
            })?)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        // Needs a listener (a seccomp agent) that crid does not provide.
        LinuxSeccompAction::ScmpActNotify => {
            return Err(io::Error::other(
                "seccomp: SCMP_ACT_NOTIFY is not supported by crid",
            ));
        }
    })
}

fn compare(arg: &LinuxSeccompArg) -> io::Result<ScmpArgCompare> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|&i| i < 6)
        .ok_or_else(|| {
            io::Error::other(format!(
                "seccomp: argument index {} is not 0 to 5",
                arg.index()
            ))
        })?;
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // OCI: `value` is the mask, `valueTwo` what the masked arg equals.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index, op, datum))
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use oci_spec::runtime::Capability;

    use super::*;
    use runtime::spec::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES, seccomp::runtime_default};

    /// libseccomp accepts every rule of the default profile, on all its
    /// arches, with and without CAP_SYS_ADMIN (loading is tested for real
    /// in tests/init.rs, in a container).
    #[test]
    fn the_default_profile_translates() {
        for caps in [DEFAULT_CAPABILITIES, ALL_CAPABILITIES] {
            let caps: HashSet<Capability> = caps.iter().copied().collect();
            let profile = runtime_default(&caps).expect("the default profile builds");
            let ctx = filter(&profile).expect("libseccomp takes the default profile");
            assert!(!ctx.get_ctl_nnp().expect("reading CTL_NNP"));
            #[cfg(target_arch = "x86_64")]
            for arch in [ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32] {
                assert!(ctx.is_arch_present(arch).expect("arch query"), "{arch:?}");
            }
        }
    }

    #[test]
    fn actions_and_compares_map_as_oci_says() {
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, None).ok(),
            Some(ScmpAction::Errno(libc::EPERM))
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, Some(38)).ok(),
            Some(ScmpAction::Errno(libc::ENOSYS))
        );
        assert!(action(LinuxSeccompAction::ScmpActNotify, None).is_err());
        let masked: LinuxSeccompArg = serde_json::from_str(
            r#"{"index":1,"value":2048,"valueTwo":1024,"op":"SCMP_CMP_MASKED_EQ"}"#,
        )
        .expect("valid arg");
        assert_eq!(
            compare(&masked).ok(),
            Some(ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(2048),
                1024
            ))
        );
        let bad: LinuxSeccompArg =
            serde_json::from_str(r#"{"index":6,"value":0,"op":"SCMP_CMP_EQ"}"#).expect("valid arg");
        assert!(compare(&bad).is_err());
    }
}
