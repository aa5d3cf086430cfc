//! `weft certs`: a development CA and workload certificates in one command, for
//! demos and tests, made by the config server's own CA code.
//!
//! It writes into `--out`: `ca.pem` and `ca-key.pem` (0600), reused when they are
//! there already (so a second run adds workloads or renews their certificates
//! under the same CA); for each `--workload NAME`, `NAME.pem` (the chain) and
//! `NAME-key.pem` (0600), naming `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME`; and
//! `bundle.pem`, the trust bundle proxies verify each other with.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use weft_config::spiffe;
use weft_config_server::ca::{self, Ca};

/// The trust bundle's file.
const BUNDLE_FILE: &str = "bundle.pem";

/// `weft certs`.
#[derive(clap::Args)]
pub(crate) struct CertsArgs {
    /// The folder to write to (made 0700 if missing); a CA already there is used,
    /// not replaced.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The SPIFFE trust domain the workloads are in.
    #[arg(long, default_value = weft_config::MeshIdentity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// A workload to certify, by its service name: writes NAME.pem and NAME-key.pem
    /// for spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME. Repeatable.
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// The namespace in the workloads' SPIFFE IDs.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// DNS names and IP addresses to add to every workload certificate, so that
    /// ordinary TLS clients can verify it as a server by name (comma-separated or
    /// repeated), e.g. localhost,127.0.0.1.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    dns: Vec<String>,
    /// How long each workload certificate lasts.
    #[arg(long, default_value = "24h", value_parser = weft_config::units::parse_duration)]
    ttl: Duration,
}

/// Make or reuse the CA, then certify every workload and write the bundle; print
/// what was written.
pub(crate) fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let ids = workload_ids(args)?;
    if args.ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s");
    }
    let (ips, names): (Vec<_>, Vec<_>) = args
        .dns
        .iter()
        .filter(|n| !n.is_empty())
        .partition(|n| n.parse::<IpAddr>().is_ok());
    let ips: Vec<IpAddr> = ips.iter().filter_map(|n| n.parse().ok()).collect();
    let names: Vec<String> = names.into_iter().cloned().collect();
    let out = &args.out;
    let name = format!("Weft development CA ({})", args.trust_domain);
    let (ca, created) = Ca::load_or_create(out, &name)?;
    let cert = out.join(ca::CA_CERT_FILE);
    if created {
        println!(
            "made a CA: {} (its key {}, 0600)",
            cert.display(),
            out.join(ca::CA_KEY_FILE).display()
        );
    } else {
        println!("using the CA in {}", cert.display());
    }
    for (workload, id) in args.workloads.iter().zip(&ids) {
        write_workload(&ca, out, workload, id, &names, &ips, args.ttl)?;
    }
    let bundle = ca::write_pem(out, BUNDLE_FILE, ca.bundle_pem(), false)?;
    println!(
        "wrote {}: the trust bundle (the CA's certificate)",
        bundle.display()
    );
    Ok(())
}

/// The SPIFFE ID of every workload, after checking the names make files and IDs.
fn workload_ids(args: &CertsArgs) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(args.workloads.len());
    for (i, workload) in args.workloads.iter().enumerate() {
        // Their files are the CA's and the bundle's.
        if ["ca", "bundle"].contains(&workload.as_str()) {
            bail!("--workload {workload}: the name is taken by the CA's or the bundle's files");
        }
        if args.workloads[..i].contains(workload) {
            bail!("--workload {workload} is given twice");
        }
        let id = format!(
            "spiffe://{}/ns/{}/sa/{workload}",
            args.trust_domain, args.namespace
        );
        // A segment rule: the name cannot hold `/` or be `.`/`..`, so it is a
        // plain file name too.
        let single = !workload.contains('/') && !args.namespace.contains('/');
        match spiffe::check_id(&id) {
            Ok(()) if single => ids.push(id),
            Ok(()) => bail!("{id:?}: the namespace and the workload name may not hold '/'"),
            Err(e) => bail!(
                "{id:?} is not a SPIFFE ID: {e} (check --trust-domain, --namespace and --workload)"
            ),
        }
    }
    Ok(ids)
}

/// Certify one workload and write its chain and key.
fn write_workload(
    ca: &Ca,
    out: &Path,
    workload: &str,
    id: &str,
    names: &[String],
    ips: &[IpAddr],
    ttl: Duration,
) -> anyhow::Result<()> {
    let issued = ca
        .issue_workload(id, names, ips, ttl)
        .with_context(|| format!("--workload {workload}"))?;
    // The key first: a chain whose key is missing is of no use.
    let key = ca::write_pem(out, &format!("{workload}-key.pem"), &issued.key_pem, true)?;
    let chain = ca::write_pem(
        out,
        &format!("{workload}.pem"),
        &issued.issued.chain_pem,
        false,
    )?;
    let hosts = names
        .iter()
        .cloned()
        .chain(ips.iter().map(IpAddr::to_string))
        .collect::<Vec<_>>();
    let hosts = if hosts.is_empty() {
        String::new()
    } else {
        format!(" and {}", hosts.join(", "))
    };
    println!(
        "wrote {}: {id}{hosts}, until {} (its key {}, 0600)",
        chain.display(),
        humantime::format_rfc3339_seconds(issued.issued.not_after),
        key.display()
    );
    Ok(())
}
