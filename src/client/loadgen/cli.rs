//! The server's own CLI (`BIN -c CONFIG …`), as an admin would drive it: create the
//! tailnet's users and reusable pre-auth keys, set and replace the policy, and read the
//! event log's length (to check that a reconnect storm appends nothing).

use super::tailnet::{Owner, Tailnet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How many CLI processes run at once while creating users and keys.
const PARALLEL: usize = 8;

#[derive(Debug, Clone)]
pub struct ServerCli {
    pub bin: PathBuf,
    pub config: PathBuf,
}

impl ServerCli {
    pub fn new(bin: impl Into<PathBuf>, config: impl Into<PathBuf>) -> ServerCli {
        ServerCli {
            bin: bin.into(),
            config: config.into(),
        }
    }

    /// Runs `BIN -c CONFIG args…`; stdout on success, else stderr's last line.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "`{} {}`: {}",
                self.bin.display(),
                args.join(" "),
                stderr.trim().lines().last().unwrap_or("failed")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `policy set -f` with `text` (through a temp file).
    pub fn set_policy(&self, text: &str) -> Result<(), String> {
        let file = std::env::temp_dir().join(format!(
            "loadgen-policy-{}-{}.hujson",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let result = self.run(&["policy", "set", "-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        result.map(|_| ())
    }

    /// Creates the tailnet's users (an existing one is kept), sets its policy, and returns
    /// one reusable key per owner: per user, and per tag (tag-only keys). The users and keys
    /// are made `PARALLEL` CLI processes at a time.
    pub fn prepare(&self, tailnet: &Tailnet, nodes: usize) -> Result<Keys, String> {
        let users = tailnet.users();
        parallel(&users, |(name, email)| {
            let mut args = vec!["users", "create", name.as_str()];
            if !email.is_empty() {
                args.extend(["--email", email.as_str()]);
            }
            // The user may exist from an earlier run against the same server.
            match self.run(&args) {
                Ok(_) => Ok(()),
                Err(error) if error.contains("exists") => Ok(()),
                Err(error) => Err(error),
            }
        })?;
        if let Some(policy) = tailnet.policy() {
            self.set_policy(&policy)?;
        }
        let mut owners: Vec<Owner> = Vec::new();
        for index in 0..nodes {
            let owner = tailnet.owner(index);
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        let keys = parallel(&owners, |owner| {
            let mut args = vec!["preauthkeys", "create", "--reusable", "-e", "24h"];
            let tags;
            match owner {
                Owner::User(u) => args.extend(["-u", users[*u].0.as_str()]),
                Owner::Tag(tag) => {
                    tags = format!("--tags={tag}");
                    args.push(&tags);
                }
            }
            let out = self.run(&args)?;
            let key = out.lines().last().unwrap_or_default().trim().to_string();
            if !key.starts_with("hskey-auth-") {
                return Err(format!("`{}` printed no key: {out}", args.join(" ")));
            }
            Ok(key)
        })?;
        Ok(Keys(owners.into_iter().zip(keys).collect()))
    }

    /// The number of events in the log (`events verify`, which also checks the chain).
    pub fn event_count(&self) -> Result<u64, String> {
        let out = self.run(&["events", "verify", "-o", "json"])?;
        let value: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("events verify: {e}: {out}"))?;
        let events = &value["events"];
        events
            .as_u64()
            .or_else(|| events.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("events verify printed no event count: {out}"))
    }

    /// The types of the events after `seq` (`events list --since`), oldest first.
    pub fn event_types_since(&self, seq: u64) -> Result<Vec<String>, String> {
        let out = self.run(&["events", "list", "--since", &seq.to_string(), "-o", "json"])?;
        let value: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("events list: {e}: {out}"))?;
        let events = value
            .as_array()
            .ok_or_else(|| format!("events list printed no list: {out}"))?;
        Ok(events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_string())
            .collect())
    }
}

/// The reusable pre-auth key of each owner.
#[derive(Debug, Clone, Default)]
pub struct Keys(pub BTreeMap<Owner, String>);

impl Keys {
    /// One key for every node (a mesh with a given `--auth-key`).
    pub fn single(key: &str) -> Keys {
        Keys(BTreeMap::from([(Owner::User(0), key.to_string())]))
    }

    pub fn for_owner(&self, owner: &Owner) -> Option<&str> {
        self.0.get(owner).map(String::as_str)
    }
}

/// `f` over `items`, `PARALLEL` threads at a time; the results in order, or the first error.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(PARALLEL) {
        let chunk_results: Vec<Result<R, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk.iter().map(|item| scope.spawn(|| f(item))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a CLI thread panicked".into()))
                })
                .collect()
        });
        for result in chunk_results {
            results.push(result?);
        }
    }
    Ok(results)
}
