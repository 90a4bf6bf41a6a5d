//! The network namespace the real-client tests run in: the test executable re-executes itself
//! under `unshare --net --pid --fork --mount-proc`, so the server and every `tailscaled` see
//! only a loopback interface (nothing can leave the machine) and die with the harness (it is
//! PID 1 of its own PID namespace; when it exits the kernel kills everything left inside).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Set in the re-executed child: "we are inside".
const MARKER: &str = "HEADSCALE_REAL_CLIENTS_NETNS";

/// Returns when running inside the namespace (with `lo` and a private veth pair up); otherwise runs this executable
/// again inside a new one and exits with its status. Fails with one line when that is
/// impossible: no silent skips.
pub fn enter() {
    if std::env::var_os(MARKER).is_some() {
        bring_up_interfaces();
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        fail("real-client tests need root (they create a network namespace with unshare)");
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("current_exe: {e}")));
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(MARKER, "1");
    // If the harness is killed, unshare dies too and (--kill-child) takes the namespace down.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = command.status().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run `unshare` ({e}): real-client tests need util-linux unshare and root"
        ))
    });
    std::process::exit(status.code().unwrap_or(1));
}

/// The veth pair that gives the namespace a non-loopback address: Tailscale 1.80 believes
/// the network is down (no STUN, no DERP, never `Running`) when only `lo` has addresses.
/// Both ends stay inside the namespace and there is no route out.
pub const VETH: (&str, &str, &str) = ("hs0", "hs1", "10.254.254.1/24");

fn bring_up_interfaces() {
    let (a, b, address) = VETH;
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", a, "type", "veth", "peer", "name", b],
        &["addr", "add", address, "dev", a],
        &["link", "set", a, "up"],
        &["link", "set", b, "up"],
    ] {
        let out = Command::new("ip")
            .args(args)
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run `ip` ({e}): iproute2 is needed")));
        if !out.status.success() {
            fail(&format!(
                "`ip {}` failed in the namespace: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
}

fn fail(line: &str) -> ! {
    eprintln!("real_clients: {line}");
    std::process::exit(1);
}
