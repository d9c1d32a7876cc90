//! `palisade status`, `palisade keys …` and `palisade environments …`.
//!
//! `status` prints, per environment and pack, the desired version and every gateway's state.
//! It exits 0 when every environment that has a desired version has at least one live gateway
//! and every live gateway of it is SYNCED; 1 otherwise (or on any error), so CI can wait on it in
//! a loop. OFFLINE gateways are shown and do not fail it (the control plane forgets them after
//! its forget time, or at `gateways prune`); an environment nothing is deployed to is waiting.
//! `keys create` prints the new key once; the registry keeps only its hash.

use std::process::ExitCode;

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};

use crate::cp_client::{CpArgs, CpClient};
use crate::pack_cmds::Format;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[arg(long, short)]
    environment: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cp: CpArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// viewer, deployer, admin or gateway.
        #[arg(long)]
        role: String,
        /// Limit the key to one environment (required for gateway keys).
        #[arg(long, short)]
        environment: Option<String>,
        #[command(flatten)]
        cp: CpArgs,
    },
    /// List keys (ids, roles, scopes; never secrets).
    List {
        #[command(flatten)]
        cp: CpArgs,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        cp: CpArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GatewaysCommand {
    /// Forget every OFFLINE gateway now (admin); they are forgotten anyway after the control
    /// plane's --forget-gateways-after.
    Prune {
        #[command(flatten)]
        cp: CpArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnvironmentsCommand {
    /// List environments with their promotion path, soak time and deploy role.
    List {
        #[command(flatten)]
        cp: CpArgs,
    },
    /// Create an environment.
    Create {
        name: String,
        #[command(flatten)]
        settings: EnvSettings,
        #[command(flatten)]
        cp: CpArgs,
    },
    /// Change an environment's settings.
    Set {
        name: String,
        #[command(flatten)]
        settings: EnvSettings,
        #[command(flatten)]
        cp: CpArgs,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct EnvSettings {
    /// The environment promotions into this one come from.
    #[arg(long)]
    feeds_from: Option<String>,
    /// How long the source must be verified before a promotion into this environment.
    #[arg(long)]
    soak_ms: Option<i64>,
    /// deployer or admin.
    #[arg(long)]
    deploy_role: Option<String>,
    /// How long its decision events are kept (e.g. 7d, 36h; 0 restores the default, 7 days).
    #[arg(long, value_parser = humantime::parse_duration)]
    event_retention: Option<std::time::Duration>,
    /// Promotions into this environment need at least this many requests of the source on the
    /// promoted version (runtime evidence).
    #[arg(long)]
    min_requests: Option<i64>,
    /// … and an error rate (upstream and internal errors) at most this fraction (0.02 = 2 %).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// … and an escalation rate at most this fraction.
    #[arg(long)]
    max_escalation_rate: Option<f64>,
    /// … and a block rate (PII blocks and budget refusals) at most this fraction.
    #[arg(long)]
    max_block_rate: Option<f64>,
    /// Remove every runtime-evidence threshold (no evidence gate).
    #[arg(long, conflicts_with_all = ["min_requests", "max_error_rate", "max_escalation_rate", "max_block_rate"])]
    no_evidence: bool,
}

impl EnvSettings {
    fn body(&self, name: Option<&str>) -> Value {
        let mut b = json!({});
        if let Some(n) = name {
            b["name"] = json!(n);
        }
        if let Some(f) = &self.feeds_from {
            b["feeds_from"] = json!(f);
        }
        if let Some(s) = self.soak_ms {
            b["soak_ms"] = json!(s);
        }
        if let Some(r) = &self.deploy_role {
            b["deploy_role"] = json!(r);
        }
        if let Some(d) = self.event_retention {
            b["event_retention_ms"] = json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        if self.no_evidence {
            for k in [
                "min_requests",
                "max_error_rate",
                "max_escalation_rate",
                "max_block_rate",
            ] {
                b[k] = Value::Null;
            }
        }
        if let Some(n) = self.min_requests {
            b["min_requests"] = json!(n);
        }
        for (k, v) in [
            ("max_error_rate", self.max_error_rate),
            ("max_escalation_rate", self.max_escalation_rate),
            ("max_block_rate", self.max_block_rate),
        ] {
            if let Some(v) = v {
                b[k] = json!(v);
            }
        }
        b
    }
}

fn done(r: Result<ExitCode, ExitCode>) -> ExitCode {
    r.unwrap_or_else(|code| code)
}

pub(crate) fn status(args: &StatusArgs) -> ExitCode {
    done((|| {
        let c = CpClient::new(&args.cp)?;
        let path = match &args.environment {
            Some(e) => format!("/v1/status?environment={e}"),
            None => "/v1/status".to_owned(),
        };
        let out = c.expect_ok(Method::GET, &path, None)?;
        let synced = out["all_synced"] == json!(true);
        if args.format == Format::Json {
            println!("{out}");
        } else {
            print_matrix(&out);
        }
        Ok(if synced {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })())
}

fn print_matrix(out: &Value) {
    println!(
        "{:<10} {:<12} {:<10} {:<24} {:<9} {:<10} DETAIL",
        "ENV", "PACK", "DESIRED", "GATEWAY", "STATE", "ACTIVE"
    );
    for e in out["entries"].as_array().into_iter().flatten() {
        let env = e["environment"].as_str().unwrap_or("?");
        let pack = e["pack"].as_str().unwrap_or("?");
        let desired = e["desired"]["version"].as_str().unwrap_or("-");
        let gws = e["gateways"].as_array().cloned().unwrap_or_default();
        if gws.is_empty() {
            println!(
                "{env:<10} {pack:<12} {desired:<10} {:<24} {:<9} {:<10}",
                "(no gateways)", "-", "-"
            );
        }
        for g in gws {
            let detail = match g["state"].as_str() {
                Some("REJECTED") => {
                    let err = &g["last_attempt"]["error"];
                    format!(
                        "{} {}: {}",
                        err["code"].as_str().unwrap_or("?"),
                        err["path"].as_str().unwrap_or(""),
                        err["message"].as_str().unwrap_or("")
                    )
                }
                _ => format!("last seen {}", g["last_seen_at"].as_str().unwrap_or("-")),
            };
            let dropped = g["counters"]["events_dropped"].as_u64().unwrap_or(0);
            let detail = if dropped > 0 {
                format!("{detail}; {dropped} decision events dropped")
            } else {
                detail
            };
            let missing = g["counters"]["audit_dropped"].as_u64().unwrap_or(0);
            let detail = if missing > 0 {
                format!("{detail}; {missing} audit records not in the log")
            } else {
                detail
            };
            let detail = crate::cp_client::printable(&detail);
            println!(
                "{env:<10} {pack:<12} {desired:<10} {:<24} {:<9} {:<10} {detail}",
                crate::cp_client::printable(g["id"].as_str().unwrap_or("?")),
                g["state"].as_str().unwrap_or("?"),
                g["active"]["version"].as_str().unwrap_or("-"),
            );
        }
    }
}

pub(crate) fn keys(cmd: &KeysCommand) -> ExitCode {
    done((|| match cmd {
        KeysCommand::Create {
            role,
            environment,
            cp,
        } => {
            let c = CpClient::new(cp)?;
            let out = c.expect_ok(
                Method::POST,
                "/v1/keys",
                Some(&json!({ "role": role, "environment": environment })),
            )?;
            eprintln!(
                "key {} ({role}{}) created; it is shown only now:",
                out["id"].as_str().unwrap_or("?"),
                environment
                    .as_deref()
                    .map(|e| format!(", environment {e}"))
                    .unwrap_or_default()
            );
            println!("{}", out["key"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { cp } => {
            let c = CpClient::new(cp)?;
            let out = c.expect_ok(Method::GET, "/v1/keys", None)?;
            println!(
                "{:<18} {:<9} {:<12} {:<25} REVOKED",
                "ID", "ROLE", "ENVIRONMENT", "CREATED"
            );
            for k in out["keys"].as_array().into_iter().flatten() {
                let f = |n: &str| k[n].as_str().unwrap_or("-").to_owned();
                println!(
                    "{:<18} {:<9} {:<12} {:<25} {}",
                    f("id"),
                    f("role"),
                    f("environment"),
                    f("created_at"),
                    f("revoked_at")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, cp } => {
            let c = CpClient::new(cp)?;
            c.expect_ok(Method::DELETE, &format!("/v1/keys/{id}"), None)?;
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
    })())
}

pub(crate) fn environments(cmd: &EnvironmentsCommand) -> ExitCode {
    done((|| {
        let (c, out) = match cmd {
            EnvironmentsCommand::List { cp } => {
                let c = CpClient::new(cp)?;
                let out = c.expect_ok(Method::GET, "/v1/environments", None)?;
                (c, out["environments"].clone())
            }
            EnvironmentsCommand::Create { name, settings, cp } => {
                let c = CpClient::new(cp)?;
                let out = c.expect_ok(
                    Method::POST,
                    "/v1/environments",
                    Some(&settings.body(Some(name))),
                )?;
                (c, json!([out]))
            }
            EnvironmentsCommand::Set { name, settings, cp } => {
                let c = CpClient::new(cp)?;
                let out = c.expect_ok(
                    Method::PATCH,
                    &format!("/v1/environments/{name}"),
                    Some(&settings.body(None)),
                )?;
                (c, json!([out]))
            }
        };
        drop(c);
        println!(
            "{:<12} {:<12} {:>10} {:<9} {:<10} EVIDENCE",
            "NAME", "FEEDS FROM", "SOAK MS", "ROLE", "EVENTS"
        );
        for e in out.as_array().into_iter().flatten() {
            let retention = e["event_retention_ms"].as_u64().map_or_else(
                || "7d".to_owned(),
                |ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string(),
            );
            println!(
                "{:<12} {:<12} {:>10} {:<9} {:<10} {}",
                e["name"].as_str().unwrap_or("?"),
                e["feeds_from"].as_str().unwrap_or("-"),
                e["soak_ms"]
                    .as_i64()
                    .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
                e["deploy_role"].as_str().unwrap_or("?"),
                retention,
                evidence(&e["evidence"])
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// The evidence thresholds in one phrase (`-` when there is no gate).
fn evidence(e: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(n) = e["min_requests"].as_i64() {
        parts.push(format!("≥{n} requests"));
    }
    for (k, name) in [
        ("max_error_rate", "errors"),
        ("max_escalation_rate", "escalations"),
        ("max_block_rate", "blocks"),
    ] {
        if let Some(r) = e[k].as_f64() {
            parts.push(format!("{name} ≤{:.2} %", r * 100.0));
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

pub(crate) fn gateways(cmd: &GatewaysCommand) -> ExitCode {
    done((|| match cmd {
        GatewaysCommand::Prune { cp } => {
            let c = CpClient::new(cp)?;
            let out = c.expect_ok(Method::POST, "/v1/gateways/prune", None)?;
            let removed = out["removed"].as_array().cloned().unwrap_or_default();
            for id in &removed {
                println!(
                    "forgot {}",
                    crate::cp_client::printable(id.as_str().unwrap_or("?"))
                );
            }
            eprintln!("{} OFFLINE gateway(s) forgotten", removed.len());
            Ok(ExitCode::SUCCESS)
        }
    })())
}
