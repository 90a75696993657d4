//! No network, no other process in sight, and no process outliving the command: new network,
//! PID and mount namespaces, with a /proc of the command's own PID namespace.
//!
//! In a fresh network namespace there is no interface but a downed loopback, so nothing can be
//! reached, not even the loop's own ports on 127.0.0.1. The PID namespace makes the command's
//! first process its init: when it ends, the kernel kills everything it left behind (a training
//! step cannot leave a process that rewrites metrics.json after the eval step), and its own
//! /proc shows only its own processes: Landlock does not stop a read of another process's
//! `/proc/PID/environ` (tried: the loop's provider key was readable), so the loop and every
//! other process must not be in the command's /proc at all. Root may unshare directly; anyone else goes through a user namespace mapping only their own ids.

use std::io;

/// How the network was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// New network + PID namespaces.
    Namespace,
    /// unshare refused: Landlock's TCP rules (no bind, no connect) are all that is left.
    LandlockTcpOnly,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Namespace => "netns",
            NetMode::LandlockTcpOnly => "landlock-tcp",
        }
    }
}

/// Moves this process into new network and PID namespaces (the PID one takes effect for the
/// children it forks next).
pub fn enter() -> io::Result<()> {
    // SAFETY: plain syscalls on our own process; no pointers are passed.
    let euid = unsafe { libc::geteuid() };
    let egid = unsafe { libc::getegid() };
    let flags = libc::CLONE_NEWNET | libc::CLONE_NEWPID | libc::CLONE_NEWNS;
    if unsafe { libc::unshare(flags) } == 0 {
        return private_mounts();
    }
    let root_error = io::Error::last_os_error();
    if euid == 0 {
        return Err(root_error);
    }
    if unsafe { libc::unshare(flags | libc::CLONE_NEWUSER) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Map our own ids only: the files we can touch stay exactly the same.
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{euid} {euid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{egid} {egid} 1"))?;
    private_mounts()
}

/// Mounts made in our namespace (the /proc below) must not propagate back to the host's.
fn private_mounts() -> io::Result<()> {
    // SAFETY: constant C strings; a remount of / with propagation flags only.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A fresh /proc for the PID namespace of the calling process (the command's first process,
/// in the forked child before exec: no allocation here).
pub fn mount_own_proc() -> io::Result<()> {
    // SAFETY: constant C strings; mounts a procfs over /proc in our private mount namespace.
    let r = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What of /proc a command may read when it shares the host's /proc (no namespaces): facts
/// about the machine, never another process's files.
pub fn shared_proc_paths() -> Vec<std::path::PathBuf> {
    [
        "cpuinfo",
        "meminfo",
        "stat",
        "loadavg",
        "uptime",
        "version",
        "filesystems",
        "sys",
        "driver",
    ]
    .iter()
    .map(|p| std::path::Path::new("/proc").join(p))
    .collect()
}
