//! Hosts of their own for multi-instance tests: network namespaces joined by veth pairs to a
//! bridge in the test's namespace, so each pagepulse instance has its own address (and its own
//! loopback) and instances reach each other, the broker and the test by address only. Needs
//! `ip` (iproute2) and the right to create namespaces (root with CAP_NET_ADMIN/CAP_SYS_ADMIN);
//! [`Hosts::create`] answers `None` where the machine does not allow it, and the tests fall back
//! to loopback ports, saying so.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use rand::Rng;

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `n` hosts (namespaces) on one bridge; removed when dropped.
pub struct Hosts {
    bridge: String,
    names: Vec<String>,
    veths: Vec<String>,
    /// The bridge's address: the test's own host, where its broker listens.
    pub host_ip: String,
    /// Each namespace's address.
    pub ips: Vec<String>,
}

impl Hosts {
    /// Creates `n` namespaces with addresses on a fresh /24; `None` if the machine does not allow
    /// it (then nothing is left behind).
    pub fn create(n: usize) -> Option<Self> {
        let mut rng = rand::thread_rng();
        let tag = format!("{:04x}", rng.gen::<u16>());
        let net = format!("10.{}.{}", rng.gen_range(200..250), rng.gen_range(1..250));
        let mut hosts = Self {
            bridge: format!("ppbr{tag}"),
            names: Vec::new(),
            veths: Vec::new(),
            host_ip: format!("{net}.1"),
            ips: Vec::new(),
        };
        let ok = ip(&["link", "add", &hosts.bridge, "type", "bridge"])
            && ip(&["addr", "add", &format!("{}/24", hosts.host_ip), "dev", &hosts.bridge])
            && ip(&["link", "set", &hosts.bridge, "up"]);
        if !ok {
            return None; // Drop removes whatever was made
        }
        for i in 0..n {
            let (ns, outer, inner) = (format!("pp{tag}-{i}"), format!("ppv{tag}{i}"), format!("ppi{tag}{i}"));
            let addr = format!("{net}.{}", 10 + i);
            hosts.names.push(ns.clone());
            hosts.veths.push(outer.clone());
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&["link", "set", &outer, "master", &hosts.bridge])
                && ip(&["link", "set", &outer, "up"])
                && ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{addr}/24"), "dev", &inner])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
            hosts.ips.push(addr);
        }
        Some(hosts)
    }

    /// `program` to be run inside host `i`'s namespace (add its arguments).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i], program]);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            ip(&["netns", "del", ns]);
        }
        for v in &self.veths {
            ip(&["link", "del", v]);
        }
        ip(&["link", "del", &self.bridge]);
    }
}

/// A tansu broker (in memory) listening on `host:port`; killed when dropped.
pub struct HostBroker {
    child: Child,
    _dir: tempfile::TempDir,
    /// `host:port`.
    pub addr: String,
}

impl HostBroker {
    /// Starts one on `host` (an address of this namespace) and a free port.
    pub fn start(host: &str) -> Self {
        let port = super::free_port();
        let dir = tempfile::tempdir().expect("temp dir for tansu");
        let url = format!("tcp://{host}:{port}");
        let mut cmd = Command::new(super::tansu_bin());
        cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start tansu (scripts/install-tansu.sh)");
        let addr = format!("{host}:{port}");
        super::wait_listening(&addr);
        Self { child, _dir: dir, addr }
    }
}

impl Drop for HostBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
