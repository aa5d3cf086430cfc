//! `weft init`: transparent capture in the current network namespace, as Istio's and
//! Linkerd's init containers install it.
//!
//! 1. Two chains of the `nat` table, `WEFT_INBOUND` and `WEFT_OUTBOUND`, redirect
//!    TCP: what arrives for the workload goes to the sidecar's inbound capture
//!    listener, what the workload dials goes to its outbound one. The sidecar's own
//!    connections (its uid, or gid), loopback and the excluded ports are left alone.
//! 2. `PREROUTING` and `OUTPUT` jump to them. Installing again flushes and refills
//!    the chains and adds a jump only where there is none, so running twice is the
//!    same as running once, with the last flags.
//! 3. `--remove` deletes the jumps and the two chains, and nothing else.
//!
//! IPv4 by `iptables`, IPv6 by `ip6tables` when it is installed (either backend,
//! nft or legacy, is fine: the rules are the same).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The chain of inbound capture.
const INBOUND: &str = "WEFT_INBOUND";
/// The chain of outbound capture.
const OUTBOUND: &str = "WEFT_OUTBOUND";
/// Where each chain is jumped to from.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND), ("OUTPUT", OUTBOUND)];

/// `weft init`.
#[derive(clap::Args, Debug)]
pub(crate) struct InitArgs {
    /// The uid the sidecar runs as: its own connections are not captured (they would
    /// come back to it). Istio's sidecar runs as 1337.
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    proxy_uid: Option<u32>,
    /// Also leave alone the connections of processes of this gid.
    #[arg(long, value_name = "GID")]
    proxy_gid: Option<u32>,
    /// The port of the sidecar's inbound capture listener
    /// (`capture: { direction: inbound }`).
    #[arg(long, value_name = "PORT", default_value_t = 15006)]
    inbound_port: u16,
    /// The port of the sidecar's outbound capture listener
    /// (`capture: { direction: outbound }`).
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    outbound_port: u16,
    /// Destination ports of incoming connections not to capture, comma separated
    /// (the sidecar's admin port, ssh, a health check port).
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Destination ports of the workload's connections not to capture, comma
    /// separated (a database it must reach directly).
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Capture IPv4 only, even when ip6tables is installed.
    #[arg(long)]
    ipv4_only: bool,
    /// Remove the chains and jumps `weft init` installed, and nothing else.
    #[arg(long, conflicts_with_all = ["proxy_uid", "proxy_gid"])]
    remove: bool,
    /// Print the commands (as for a namespace with no capture yet) and change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
}

/// An address family and the tool that rules it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
}

/// Run `weft init`.
pub(crate) fn run(args: &InitArgs) -> anyhow::Result<()> {
    check_ports(args)?;
    if !args.dry_run {
        need_net_admin()?;
    }
    let v4 = Tables::find(Family::V4, args.dry_run)?;
    let v6 = match args.ipv4_only {
        true => None,
        false => ipv6_tables(args.dry_run),
    };
    for tables in std::iter::once(&v4).chain(v6.as_ref()) {
        match args.remove {
            true => remove(tables)?,
            false => install(tables, args)?,
        }
    }
    if !args.dry_run {
        say_done(args, v6.is_some());
    }
    Ok(())
}

/// The ports must make sense before anything changes.
fn check_ports(args: &InitArgs) -> anyhow::Result<()> {
    if args.remove {
        return Ok(());
    }
    if args.inbound_port == 0 || args.outbound_port == 0 {
        bail!("--inbound-port and --outbound-port must be 1 to 65535");
    }
    if args.inbound_port == args.outbound_port {
        bail!(
            "--inbound-port and --outbound-port are both {}: the sidecar needs one listener each way",
            args.inbound_port
        );
    }
    if let Some(p) = (args.exclude_inbound_ports.iter())
        .chain(&args.exclude_outbound_ports)
        .find(|p| **p == 0)
    {
        bail!("excluded port {p}: ports are 1 to 65535");
    }
    Ok(())
}

/// What was done, and how to undo it.
fn say_done(args: &InitArgs, ipv6: bool) {
    let families = if ipv6 { "IPv4 and IPv6" } else { "IPv4" };
    if args.remove {
        println!("removed Weft's capture ({families}) from this network namespace");
        return;
    }
    let except = |ports: &[u16]| match ports {
        [] => String::new(),
        _ => format!(
            ", except ports {}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    println!(
        "captured TCP ({families}) in this network namespace: inbound to port {}{}; \
         outbound to port {}{}, except uid {}, loopback{}; undo with `weft init --remove`",
        args.inbound_port,
        except(&args.exclude_inbound_ports),
        args.outbound_port,
        except(&args.exclude_outbound_ports),
        args.proxy_uid.map_or_else(String::new, |u| u.to_string()),
        args.proxy_gid
            .map_or_else(String::new, |g| format!(", gid {g}")),
    );
}

/// Changing iptables rules needs CAP_NET_ADMIN in this namespace; say so plainly
/// rather than relay iptables' own words.
fn need_net_admin() -> anyhow::Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match effective {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) == 0 => bail!(
            "weft init changes this network namespace's iptables rules, which needs \
             CAP_NET_ADMIN: run it as root (in Kubernetes, as an init container with the \
             NET_ADMIN and NET_RAW capabilities)"
        ),
        // Not Linux's /proc: let iptables say what it can.
        _ => Ok(()),
    }
}

/// ip6tables when IPv6 is on and the tool is there; a note when it is not.
fn ipv6_tables(dry_run: bool) -> Option<Tables> {
    if !Path::new("/proc/net/if_inet6").exists() && !dry_run {
        return None;
    }
    match Tables::find(Family::V6, dry_run) {
        Ok(t) => Some(t),
        Err(_) => {
            eprintln!(
                "note: ip6tables not found, IPv6 is not captured (Debian's iptables \
                 package has it)"
            );
            None
        }
    }
}

/// One family's `nat` table, through its tool (or printed, for a dry run).
struct Tables {
    family: Family,
    tool: PathBuf,
    dry_run: bool,
}

impl Tables {
    /// The family's tool, from the PATH or the system folders (a PATH without
    /// `sbin` is common outside root's shell).
    fn find(family: Family, dry_run: bool) -> anyhow::Result<Self> {
        let name = family.tool();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file());
        match (found, dry_run) {
            (Some(tool), _) => Ok(Self {
                family,
                tool,
                dry_run,
            }),
            (None, true) => Ok(Self {
                family,
                tool: PathBuf::from(name),
                dry_run,
            }),
            (None, false) => bail!(
                "{name} not found (looked in PATH, /usr/sbin and /sbin): install Debian's \
                 `iptables` package (`apt-get install iptables`), which has iptables and \
                 ip6tables with both the nft and the legacy backend"
            ),
        }
    }

    /// Whether a read-only command succeeds (a chain or rule exists); never, in a dry
    /// run, which plans for a namespace with no capture yet.
    fn holds(&self, args: &[&str]) -> bool {
        !self.dry_run
            && Command::new(&self.tool)
                .args(["-w", "-t", "nat"])
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// Run (or print) a command that changes the table; its failure is an error
    /// that names it.
    fn change(&self, args: &[String]) -> anyhow::Result<()> {
        let shown = format!("{} -w -t nat {}", self.family.tool(), args.join(" "));
        println!("{shown}");
        if self.dry_run {
            return Ok(());
        }
        let out = Command::new(&self.tool)
            .args(["-w", "-t", "nat"])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.tool.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let hint = if said.contains("table `nat'") || said.contains("does not exist") {
            " (this kernel has no NAT for this family: it needs nf_nat and the nat table)"
        } else if said.contains("ermission denied") {
            " (run as root, with CAP_NET_ADMIN)"
        } else {
            ""
        };
        bail!("`{shown}` failed: {said}{hint}")
    }
}

/// Fill both chains and add the jumps that are missing.
fn install(t: &Tables, args: &InitArgs) -> anyhow::Result<()> {
    for (chain, rules) in chains(args, t.family) {
        let exists = t.holds(&["-S", chain]);
        let start = if exists { "-F" } else { "-N" };
        t.change(&strings(&[start, chain]))?;
        for rule in rules {
            t.change(&rule)?;
        }
    }
    for (hook, chain) in JUMPS {
        if !t.holds(
            &jump("-C", hook, chain)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ) {
            t.change(&jump("-A", hook, chain))?;
        }
    }
    Ok(())
}

/// Delete every jump to the chains, then the chains; what is not there is skipped.
fn remove(t: &Tables) -> anyhow::Result<()> {
    for (hook, chain) in JUMPS {
        let check = jump("-C", hook, chain);
        let check: Vec<&str> = check.iter().map(String::as_str).collect();
        // A jump added twice by hand is removed twice; the bound stops a loop on a
        // tool that reports success without deleting.
        let mut left = 64;
        while left > 0 && (t.dry_run || t.holds(&check)) {
            t.change(&jump("-D", hook, chain))?;
            left -= 1;
            if t.dry_run {
                break;
            }
        }
    }
    for chain in [INBOUND, OUTBOUND] {
        if t.dry_run || t.holds(&["-S", chain]) {
            t.change(&strings(&["-F", chain]))?;
            t.change(&strings(&["-X", chain]))?;
        }
    }
    Ok(())
}

/// The jump from `hook` to `chain`, as `op` (`-A`, `-C`, `-D`) writes it.
fn jump(op: &str, hook: &str, chain: &str) -> Vec<String> {
    strings(&[op, hook, "-p", "tcp", "-j", chain])
}

/// The rules of each chain, in order: what is left alone first, the redirect last.
fn chains(args: &InitArgs, family: Family) -> [(&'static str, Vec<Vec<String>>); 2] {
    let rule = |chain: &str, parts: &[&str]| strings(&[&["-A", chain][..], parts].concat());
    let skip = |chain, port: &u16| {
        rule(
            chain,
            &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"],
        )
    };
    let redirect = |chain, port: u16| {
        rule(
            chain,
            &[
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port.to_string(),
            ],
        )
    };
    let owner = |which, id: u32| {
        rule(
            OUTBOUND,
            &["-m", "owner", which, &id.to_string(), "-j", "RETURN"],
        )
    };

    let mut inbound: Vec<_> = (args.exclude_inbound_ports.iter())
        .map(|p| skip(INBOUND, p))
        .collect();
    inbound.push(redirect(INBOUND, args.inbound_port));

    // The sidecar's own connections (to the mesh, to passthrough destinations, to
    // the config server), then loopback (the workload's calls to itself, the
    // sidecar's to the application), then the excluded ports.
    let mut outbound: Vec<_> = (args.proxy_uid.map(|u| owner("--uid-owner", u)))
        .into_iter()
        .chain(args.proxy_gid.map(|g| owner("--gid-owner", g)))
        .collect();
    outbound.push(rule(OUTBOUND, &["-o", "lo", "-j", "RETURN"]));
    outbound.push(rule(OUTBOUND, &["-d", family.loopback(), "-j", "RETURN"]));
    outbound.extend(
        args.exclude_outbound_ports
            .iter()
            .map(|p| skip(OUTBOUND, p)),
    );
    outbound.push(redirect(OUTBOUND, args.outbound_port));
    [(INBOUND, inbound), (OUTBOUND, outbound)]
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn args(line: &[&str]) -> InitArgs {
        Cli::try_parse_from(std::iter::once("weft-init").chain(line.iter().copied()))
            .map(|c| c.init)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn lines(args: &InitArgs, family: Family) -> Vec<String> {
        chains(args, family)
            .into_iter()
            .flat_map(|(_, rules)| rules)
            .map(|r| r.join(" "))
            .collect()
    }

    #[test]
    fn the_chains_leave_the_sidecar_loopback_and_excluded_ports_alone_then_redirect() {
        let a = args(&[
            "--proxy-uid",
            "1337",
            "--proxy-gid",
            "1338",
            "--exclude-inbound-ports",
            "15000,22",
            "--exclude-outbound-ports",
            "5432",
        ]);
        assert_eq!(
            lines(&a, Family::V4),
            [
                "-A WEFT_INBOUND -p tcp --dport 15000 -j RETURN",
                "-A WEFT_INBOUND -p tcp --dport 22 -j RETURN",
                "-A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 15006",
                "-A WEFT_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
                "-A WEFT_OUTBOUND -m owner --gid-owner 1338 -j RETURN",
                "-A WEFT_OUTBOUND -o lo -j RETURN",
                "-A WEFT_OUTBOUND -d 127.0.0.1/32 -j RETURN",
                "-A WEFT_OUTBOUND -p tcp --dport 5432 -j RETURN",
                "-A WEFT_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
            ]
        );
        let v6 = lines(
            &args(&["--proxy-uid", "0", "--inbound-port", "7000"]),
            Family::V6,
        );
        assert!(v6.contains(&"-A WEFT_OUTBOUND -d ::1/128 -j RETURN".to_owned()));
        assert!(v6.contains(&"-A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 7000".to_owned()));
    }

    #[test]
    fn flags_that_cannot_work_are_refused_before_anything_changes() {
        let no_uid = Cli::try_parse_from(["weft-init"])
            .err()
            .unwrap()
            .to_string();
        assert!(no_uid.contains("--proxy-uid"), "{no_uid}");
        assert!(Cli::try_parse_from(["weft-init", "--remove"]).is_ok());
        let same = args(&[
            "--proxy-uid",
            "1",
            "--inbound-port",
            "9",
            "--outbound-port",
            "9",
        ]);
        let e = check_ports(&same).unwrap_err().to_string();
        assert!(e.contains("both 9"), "{e}");
        let zero = args(&["--proxy-uid", "1", "--exclude-outbound-ports", "80,0"]);
        assert!(check_ports(&zero).is_err());
    }

    #[test]
    fn a_dry_run_plans_for_a_fresh_namespace_and_changes_nothing() {
        let t = Tables {
            family: Family::V4,
            tool: PathBuf::from("/nonexistent/iptables"),
            dry_run: true,
        };
        // Nothing is run: the tool does not even exist.
        install(&t, &args(&["--proxy-uid", "1337"])).unwrap();
        remove(&t).unwrap();
        assert_eq!(
            jump("-A", "OUTPUT", OUTBOUND).join(" "),
            "-A OUTPUT -p tcp -j WEFT_OUTBOUND"
        );
    }
}
