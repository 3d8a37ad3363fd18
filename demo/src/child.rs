//! Child processes the demo starts (replicas, Prometheus): each in its own process group and
//! stopped by the kernel if the demo dies without cleaning up.

use std::process::Command;

/// Own process group: the terminal's Ctrl-C reaches the demo only, which then stops the child
/// itself. If the demo dies without cleaning up, the kernel sends SIGTERM.
pub fn own_group_dying_with_parent(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = cmd;
}
