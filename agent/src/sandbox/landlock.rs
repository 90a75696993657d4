//! Applies a policy's rules to the calling thread with Landlock (and everything it then
//! executes): filesystem access, TCP bind/connect (none), and the scopes that keep it from
//! signalling or reaching abstract sockets outside its domain.

use landlock::{
    Access as _, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::policy::{Access, Rule};

/// The newest ABI this code asks for; older kernels get what they support (best effort),
/// and `current_abi` says which.
const ABI_WANTED: ABI = ABI::V7;

/// The kernel's Landlock ABI version (0: unsupported or disabled).
pub fn current_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and the VERSION flag, the syscall only returns a
    // number; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

fn rights(access: Access, is_dir: bool) -> BitFlags<AccessFs> {
    let all = match access {
        Access::ListOnly => return AccessFs::ReadDir.into(),
        // No Refer either: a hidden file cannot be renamed to where it could be read.
        Access::WriteOnly => {
            AccessFs::from_all(ABI_WANTED)
                & !(AccessFs::ReadFile | AccessFs::Execute | AccessFs::Refer)
        }
        Access::Read => AccessFs::from_read(ABI_WANTED),
        Access::Write => AccessFs::from_all(ABI_WANTED),
    };
    if is_dir {
        all
    } else {
        all & AccessFs::from_file(ABI_WANTED)
    }
}

/// Restricts this thread to `rules`, with no TCP and scoped signals and sockets. An error when
/// the kernel enforces nothing: a sandbox that silently is not one is worse than none.
pub fn restrict(rules: &[Rule]) -> anyhow::Result<RulesetStatus> {
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?;
    for rule in rules {
        // A path that vanished since the policy was built is simply not granted.
        let Ok(fd) = PathFd::new(&rule.path) else {
            continue;
        };
        let is_dir = rule.path.is_dir();
        created = created.add_rule(PathBeneath::new(fd, rights(rule.access, is_dir)))?;
    }
    let status = created.restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced {
        anyhow::bail!(
            "the kernel does not enforce Landlock (ABI {})",
            current_abi()
        );
    }
    Ok(status.ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::policy::{rules, Hide};
    use std::path::PathBuf;

    /// Landlock restricts the calling thread: a fresh thread is sandboxed, the test is not.
    fn in_sandbox<T: Send + 'static>(
        rules: Vec<Rule>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            restrict(&rules).expect("landlock");
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn hidden_files_cannot_be_read_and_their_siblings_can() {
        if current_abi() < 1 {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for f in ["data/train/a.txt", "data/val/b.txt", "notes.txt"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::os::unix::fs::symlink(root.join("data/val/b.txt"), root.join("link")).unwrap();
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let hidden = Hide {
            root: root.clone(),
            globs: vec!["data/val/**".into()],
        }
        .resolve()
        .unwrap();
        let granted = rules(
            &[(root.clone(), Access::Read), (out.clone(), Access::Write)],
            &hidden,
        );
        // A writable tree holding a hidden file (a build's worktree).
        let wt = root.join("wt");
        std::fs::create_dir_all(wt.join("val")).unwrap();
        std::fs::write(wt.join("val/v.txt"), "x").unwrap();
        std::fs::write(wt.join("Cargo.lock"), "x").unwrap();
        let wt_hidden = vec![wt.join("val/v.txt")];
        let mut granted = granted;
        granted.extend(rules(&[(wt.clone(), Access::Write)], &wt_hidden));
        let r = root.clone();
        let results: Vec<(String, bool)> = in_sandbox(granted, move || {
            let read = |p: &str| std::fs::read(r.join(p)).is_ok();
            vec![
                ("data/train/a.txt".into(), read("data/train/a.txt")),
                ("notes.txt".into(), read("notes.txt")),
                ("data/val/b.txt".into(), read("data/val/b.txt")),
                ("link".into(), read("link")),
                (
                    "list data/val".into(),
                    std::fs::read_dir(r.join("data/val")).is_ok(),
                ),
                (
                    "write out".into(),
                    std::fs::write(r.join("out/m.json"), "{}").is_ok(),
                ),
                (
                    "write root".into(),
                    std::fs::write(r.join("new.txt"), "x").is_ok(),
                ),
                (
                    "read /etc/hostname".into(),
                    std::fs::read(PathBuf::from("/etc/hostname")).is_ok(),
                ),
                (
                    "wt: mkdir".into(),
                    std::fs::create_dir(r.join("wt/.agentloop-bin")).is_ok(),
                ),
                (
                    "wt: new file".into(),
                    std::fs::write(r.join("wt/new"), "x").is_ok(),
                ),
                (
                    "wt: rewrite Cargo.lock".into(),
                    std::fs::write(r.join("wt/Cargo.lock"), "y").is_ok(),
                ),
                (
                    "wt: read hidden".into(),
                    std::fs::read(r.join("wt/val/v.txt")).is_ok(),
                ),
                (
                    "wt: move hidden out".into(),
                    std::fs::rename(r.join("wt/val/v.txt"), r.join("wt/.agentloop-bin/v")).is_ok(),
                ),
            ]
        });
        let want = [
            ("data/train/a.txt", true),
            ("notes.txt", true),
            ("data/val/b.txt", false),
            ("link", false),
            ("list data/val", true),
            ("write out", true),
            ("write root", false),
            ("read /etc/hostname", false),
            ("wt: mkdir", true),
            ("wt: new file", true),
            ("wt: rewrite Cargo.lock", true),
            ("wt: read hidden", false),
            ("wt: move hidden out", false),
        ];
        assert_eq!(results.len(), want.len());
        for ((name, got), (wname, want)) in results.iter().zip(want) {
            assert_eq!((name.as_str(), *got), (wname, want));
        }
    }
}
