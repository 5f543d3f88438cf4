//! Separate hosts on one machine, for the tests of what crosses a network: each
//! host is a network namespace of its own with a veth link to this one
//! (`10.213.N.2` there, `10.213.N.1` here) and a hostname of its own, so a
//! `vespene worker` started in it reaches the database only through its link.
//! Needs root (or CAP_NET_ADMIN) and iproute2; `scripts/setup --test` installs it.

use std::process::Command;

use tokio::net::{TcpListener, TcpStream};

/// One host: a network namespace and its link, removed when dropped.
pub struct Host {
    /// The namespace's name (`ip netns`).
    pub namespace: String,
    /// The hostname processes in it see.
    pub hostname: String,
    /// This side of the link: the address the host reaches us at.
    pub gateway: String,
    /// The host's own address.
    pub address: String,
    link: String,
}

fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("run ip {args:?}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "ip {}: {} (the multi-host tests need root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Host {
    /// Host number `n` (1..=250) called `hostname`.
    pub fn new(n: u8, hostname: &str) -> Host {
        let namespace = format!("vespene-host-{n}");
        let link = format!("vsp{n}");
        let peer = format!("vsp{n}p");
        // Left over from an interrupted run: start clean.
        let _ = Command::new("ip").args(["netns", "del", &namespace]).output();
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        let gateway = format!("10.213.{n}.1");
        let address = format!("10.213.{n}.2");
        ip(&["netns", "add", &namespace]);
        let host = Host { namespace, hostname: hostname.into(), gateway, address, link };
        ip(&["link", "add", &host.link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &host.namespace]);
        ip(&["addr", "add", &format!("{}/24", host.gateway), "dev", &host.link]);
        ip(&["link", "set", &host.link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", host.namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", host.address), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        host
    }

    /// `command` run on this host: same program, arguments, environment and
    /// directory, inside the namespace and with the host's own hostname.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.namespace, "unshare", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(&self.hostname)
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// Whether this host can reach `addr` (`ip:port`) over TCP.
    pub fn can_reach(&self, addr: &str) -> bool {
        let (ip_addr, port) = addr.rsplit_once(':').expect("ip:port");
        Command::new("ip")
            .args(["netns", "exec", &self.namespace, "bash", "-c", &format!("exec 3<>/dev/tcp/{ip_addr}/{port}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.namespace]).output();
    }
}

/// Forwards TCP connections accepted on `listen` to `target` until the
/// runtime stops: the database's door on a host link, since the test
/// PostgreSQL listens on 127.0.0.1 only. Answers the bound address.
pub async fn forward(listen: &str, target: &str) -> String {
    let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| panic!("listen on {listen}: {e}"));
    let bound = listener.local_addr().unwrap().to_string();
    let target = target.to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    bound
}
