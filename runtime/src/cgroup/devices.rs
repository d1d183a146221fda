//! The device cgroup: which device nodes a container may read, write and
//! create, from the spec's `linux.resources.devices` rules, in order (a
//! later rule overrides an earlier one, as runc applies them). v1 has
//! control files for them; v2 an eBPF program attached to the cgroup,
//! which crid assembles here from the rules (no crate emits cgroup device
//! programs without a BPF VM or libbpf; the program is a dozen instruction
//! kinds).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;
use super::limits::write;
use crate::sys::{self, BpfInstruction};

/// v1: each rule is a line written to `devices.allow` or `devices.deny`.
pub(super) fn apply_v1(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    for rule in rules {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(&dir.join(file), &v1_line(rule))?;
    }
    Ok(())
}

/// `type major:minor access`, `*` for any number, e.g. `c 136:* rwm`.
fn v1_line(rule: &LinuxDeviceCgroup) -> String {
    let number = |n: Option<i64>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::B => 'b',
        // A pipe needs no device access; `a` (and an unset type) is any.
        LinuxDeviceType::P | LinuxDeviceType::A => 'a',
    };
    let access = rule.access().as_deref().unwrap_or("rwm");
    format!(
        "{typ} {}:{} {access}",
        number(rule.major()),
        number(rule.minor())
    )
}

/// v2: a BPF_PROG_TYPE_CGROUP_DEVICE program built from the rules, loaded
/// and attached to the cgroup directory `dir`, where it stays until the
/// cgroup is removed. Rules that allow everything need no program.
pub(super) fn apply_v2(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    if allow_everything(rules) {
        return Ok(());
    }
    let cgroup = File::open(dir).map_err(CgroupError::io("cannot open cgroup", dir))?;
    let program =
        sys::load_cgroup_device_program(&program(rules)).map_err(|source| CgroupError::Io {
            what: "cannot load the device program for",
            path: dir.to_path_buf(),
            source,
        })?;
    sys::attach_cgroup_device_program(cgroup.as_fd(), program.as_fd()).map_err(|source| {
        CgroupError::Io {
            what: "cannot attach the device program to",
            path: dir.to_path_buf(),
            source,
        }
    })
}

fn allow_everything(rules: &[LinuxDeviceCgroup]) -> bool {
    let any_device = |rule: &LinuxDeviceCgroup| {
        rule.typ().unwrap_or(LinuxDeviceType::A) == LinuxDeviceType::A
            && rule.major().is_none()
            && rule.minor().is_none()
            && access_bits(rule) == ACCESS_ALL
    };
    // The last rule about every device decides, unless a later one narrows.
    match rules.iter().rposition(any_device) {
        Some(last) => rules[last].allow() && rules[last + 1..].iter().all(|rule| rule.allow()),
        None => false,
    }
}

// struct bpf_cgroup_dev_ctx: access_type (type | access << 16), major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACCESS_MKNOD: i32 = 1;
const ACCESS_READ: i32 = 2;
const ACCESS_WRITE: i32 = 4;
const ACCESS_ALL: i32 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

fn access_bits(rule: &LinuxDeviceCgroup) -> i32 {
    let access = rule.access().as_deref().unwrap_or("rwm");
    let bit = |letter, bit| if access.contains(letter) { bit } else { 0 };
    bit('m', ACCESS_MKNOD) | bit('r', ACCESS_READ) | bit('w', ACCESS_WRITE)
}

// Registers: r1 the context; r2 device type, r3 access, r4 major, r5 minor;
// r6 scratch; r0 the verdict (1 allows).
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const SCRATCH: u8 = 6;

fn instruction(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInstruction {
    let [o0, o1] = off.to_le_bytes();
    let [i0, i1, i2, i3] = imm.to_le_bytes();
    [code, dst | (src << 4), o0, o1, i0, i1, i2, i3]
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LOAD_WORD: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_IMM: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSHIFT32_IMM: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JUMP_IF_EQUAL_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_IF_NOT_EQUAL_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JUMP_IF_ANY_BIT_IMM: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program: the last rule that matches an access decides it; none
/// matching denies it. An allow rule matches an access within its own; a
/// deny rule one that shares any of its access bits.
fn program(rules: &[LinuxDeviceCgroup]) -> Vec<BpfInstruction> {
    let mut out = vec![
        instruction(LOAD_WORD, TYPE, R1, 0, 0),
        instruction(AND32_IMM, TYPE, 0, 0, 0xffff),
        instruction(LOAD_WORD, ACCESS, R1, 0, 0),
        instruction(RSHIFT32_IMM, ACCESS, 0, 0, 16),
        instruction(LOAD_WORD, MAJOR, R1, 4, 0),
        instruction(LOAD_WORD, MINOR, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let (block, unconditional) = rule_block(rule);
        out.extend(block);
        // The verifier refuses code that cannot be reached.
        if unconditional {
            return out;
        }
    }
    out.push(instruction(MOV64_IMM, R0, 0, 0, 0));
    out.push(instruction(EXIT, 0, 0, 0, 0));
    out
}

/// One rule's checks, each jumping past the block when it fails, then the
/// verdict; and whether it has no checks, so decides every access. Empty
/// for a rule that matches nothing (a pipe's, or a number beyond what the
/// kernel's device numbers hold).
fn rule_block(rule: &LinuxDeviceCgroup) -> (Vec<BpfInstruction>, bool) {
    // (opcode, dst, imm) of the checks; the jump offsets come last.
    let mut checks: Vec<(u8, u8, i32)> = Vec::new();
    match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => {}
        LinuxDeviceType::B => checks.push((JUMP_IF_NOT_EQUAL_IMM, TYPE, DEV_BLOCK)),
        LinuxDeviceType::C | LinuxDeviceType::U => {
            checks.push((JUMP_IF_NOT_EQUAL_IMM, TYPE, DEV_CHAR))
        }
        LinuxDeviceType::P => return (Vec::new(), false),
    }
    for (number, register) in [(rule.major(), MAJOR), (rule.minor(), MINOR)] {
        if let Some(number) = number {
            let Ok(number) = i32::try_from(number) else {
                return (Vec::new(), false);
            };
            checks.push((JUMP_IF_NOT_EQUAL_IMM, register, number));
        }
    }
    let access = access_bits(rule);
    let mut prefix = Vec::new();
    if rule.allow() {
        // Any asked bit outside the rule's: no match.
        if access != ACCESS_ALL {
            checks.push((JUMP_IF_ANY_BIT_IMM, ACCESS, !access & ACCESS_ALL));
        }
    } else if access != ACCESS_ALL {
        // No asked bit inside the rule's: no match.
        prefix.push(instruction(MOV64_REG, SCRATCH, ACCESS, 0, 0));
        prefix.push(instruction(AND32_IMM, SCRATCH, 0, 0, access));
        checks.push((JUMP_IF_EQUAL_IMM, SCRATCH, 0));
    }
    // After the checks: the verdict and exit, two instructions.
    let mut block = prefix;
    let checks_len = checks.len();
    for (index, (code, dst, imm)) in checks.into_iter().enumerate() {
        let remaining_checks = checks_len - index - 1;
        let skip = i16::try_from(remaining_checks + 2).unwrap_or(i16::MAX);
        block.push(instruction(code, dst, 0, skip, imm));
    }
    block.push(instruction(MOV64_IMM, R0, 0, 0, i32::from(rule.allow())));
    block.push(instruction(EXIT, 0, 0, 0, 0));
    (block, checks_len == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access)
            .build()
            .unwrap();
        rule.set_major(major).set_minor(None);
        rule
    }

    fn with_minor(mut rule: LinuxDeviceCgroup, minor: i64) -> LinuxDeviceCgroup {
        rule.set_minor(Some(minor));
        rule
    }

    #[test]
    fn the_program_checks_rules_last_first_and_ends_at_a_rule_for_everything() {
        let deny_all = rule(false, LinuxDeviceType::A, None, "rwm");
        let null = with_minor(rule(true, LinuxDeviceType::C, Some(1), "rw"), 3);
        let program = program(&[deny_all.clone(), null]);
        // 6 loads; null: type, major, minor, access checks + verdict (6);
        // deny-all: verdict only (2), and no default after it.
        assert_eq!(program.len(), 6 + 6 + 2);
        let null_block = &program[6..12];
        assert_eq!(
            null_block[0],
            instruction(JUMP_IF_NOT_EQUAL_IMM, TYPE, 0, 5, DEV_CHAR)
        );
        assert_eq!(
            null_block[1],
            instruction(JUMP_IF_NOT_EQUAL_IMM, MAJOR, 0, 4, 1)
        );
        assert_eq!(
            null_block[2],
            instruction(JUMP_IF_NOT_EQUAL_IMM, MINOR, 0, 3, 3)
        );
        assert_eq!(
            null_block[3],
            instruction(JUMP_IF_ANY_BIT_IMM, ACCESS, 0, 2, ACCESS_MKNOD)
        );
        assert_eq!(null_block[4], instruction(MOV64_IMM, R0, 0, 0, 1));
        assert_eq!(program[12], instruction(MOV64_IMM, R0, 0, 0, 0));
        assert_eq!(program[13], instruction(EXIT, 0, 0, 0, 0));

        // Without a rule for everything, what no rule matches is denied.
        let program = program_without_catch_all();
        assert_eq!(
            program[program.len() - 2],
            instruction(MOV64_IMM, R0, 0, 0, 0)
        );
    }

    fn program_without_catch_all() -> Vec<BpfInstruction> {
        program(&[
            rule(false, LinuxDeviceType::C, Some(5), "w"),
            rule(true, LinuxDeviceType::P, None, "rwm"),
        ])
    }

    #[test]
    fn a_partial_deny_matches_on_any_shared_access_bit() {
        let program = program_without_catch_all();
        // loads, then the deny: scratch = access & w; type; major; jump if
        // scratch == 0; verdict 0. The pipe's rule adds nothing.
        let deny = &program[6..];
        assert_eq!(deny[0], instruction(MOV64_REG, SCRATCH, ACCESS, 0, 0));
        assert_eq!(deny[1], instruction(AND32_IMM, SCRATCH, 0, 0, ACCESS_WRITE));
        assert_eq!(deny[4], instruction(JUMP_IF_EQUAL_IMM, SCRATCH, 0, 2, 0));
        assert_eq!(deny[5], instruction(MOV64_IMM, R0, 0, 0, 0));
        assert_eq!(deny.len(), 7 + 2, "the block, then the default");
    }

    #[test]
    fn only_a_final_allow_of_everything_skips_the_program() {
        let allow_all = rule(true, LinuxDeviceType::A, None, "rwm");
        let deny_all = rule(false, LinuxDeviceType::A, None, "rwm");
        let deny_tty = rule(false, LinuxDeviceType::C, Some(5), "rwm");
        assert!(allow_everything(std::slice::from_ref(&allow_all)));
        assert!(allow_everything(&[deny_all.clone(), allow_all.clone()]));
        assert!(!allow_everything(&[allow_all.clone(), deny_all]));
        assert!(!allow_everything(&[allow_all, deny_tty]));
        assert!(!allow_everything(&[]));
    }

    #[test]
    fn rules_become_v1_lines() {
        assert_eq!(
            v1_line(&rule(false, LinuxDeviceType::A, None, "rwm")),
            "a *:* rwm"
        );
        assert_eq!(
            v1_line(&rule(true, LinuxDeviceType::C, Some(136), "rwm")),
            "c 136:* rwm"
        );
        assert_eq!(
            v1_line(&rule(true, LinuxDeviceType::B, None, "m")),
            "b *:* m"
        );
    }

    #[test]
    fn rules_are_written_in_order_to_allow_or_deny() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["devices.allow", "devices.deny"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        apply_v1(
            dir.path(),
            &[
                rule(false, LinuxDeviceType::A, None, "rwm"),
                rule(true, LinuxDeviceType::U, Some(1), "rw"),
            ],
        )
        .unwrap();
        let read = |file| std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(read("devices.deny"), "a *:* rwm");
        assert_eq!(read("devices.allow"), "c 1:* rw");
    }
}
