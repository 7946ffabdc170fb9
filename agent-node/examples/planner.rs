//! A planner agent fanning work out to worker agents over typed RPC, with streaming progress.
//!
//! Each worker is a node serving the RPC service `jobs` (method `jobs.run`: one job in, a
//! stream of progress updates out, the last one carrying the result). Its policy file lets
//! exactly one planner call `jobs.*`. The planner connects once to each worker (one
//! end-to-end channel each) and runs every job concurrently over those channels.
//!
//! ```text
//! np-planner worker --relay RELAY --home DIR --allow PLANNER_NODE_ID   prints "worker <NodeId>"
//! np-planner plan --relay RELAY --workers ID,ID,ID --jobs N            prints progress, then "done ..."
//! ```
//!
//! `--seed N` (both) gives a fixed identity (`[N; 32]`), so a worker can be told the planner's
//! NodeId before the planner starts: `np-planner id --seed N` prints it. The relay is any
//! nullport relay (`nullport-relay`, or `np-testnode relay` in the tests).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nullport_node::rpc::{
    CallOptions, PolicyAccess, Responses, RpcClient, RpcError, RpcServer, RpcService,
};
use nullport_node::{Node, NodeConfig, RelayAddr};
use nullport_protocol::{Identity, NodeId};
use serde::{Deserialize, Serialize};

/// One unit of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: u32,
    text: String,
    steps: u32,
}

/// What a worker streams back while it works.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Update {
    Progress {
        job: u32,
        percent: u8,
    },
    Done {
        job: u32,
        worker: String,
        words: usize,
        shout: String,
    },
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(message: &str) -> ! {
    eprintln!("np-planner: {message}");
    std::process::exit(2)
}

struct Args {
    command: String,
    flags: BTreeMap<String, String>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let command = it
        .next()
        .unwrap_or_else(|| fail("usage: np-planner worker|plan|id ..."));
    let mut flags = BTreeMap::new();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            fail(&format!("unexpected argument {flag:?}"));
        };
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("--{name} needs a value")));
        flags.insert(name.to_owned(), value);
    }
    Args { command, flags }
}

impl Args {
    fn get(&self, name: &str) -> &str {
        self.flags
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| fail(&format!("--{name} is required")))
    }

    fn identity(&self) -> Arc<Identity> {
        let identity = match self.flags.get("seed") {
            Some(s) => {
                let seed: u8 = s.parse().unwrap_or_else(|_| fail("--seed takes 0..=255"));
                Identity::from_seed([seed; 32])
            }
            None => Identity::generate().unwrap_or_else(|e| fail(&format!("no randomness: {e}"))),
        };
        Arc::new(identity)
    }
}

async fn start(args: &Args) -> Node {
    let relay: RelayAddr = args
        .get("relay")
        .parse()
        .unwrap_or_else(|e| fail(&format!("--relay: {e}")));
    let node = Node::start(NodeConfig::new(args.identity(), relay))
        .await
        .unwrap_or_else(|e| fail(&format!("node: {e}")));
    node.wait_online(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| fail(&format!("relay: {e}")));
    node
}

async fn worker(args: Args) {
    let planner: NodeId = args
        .get("allow")
        .parse()
        .unwrap_or_else(|e| fail(&format!("--allow: {e}")));
    let home = PathBuf::from(args.get("home"));
    let policy =
        format!("[rpc.jobs.allow.\"{planner}\"]\nmethods = [\"jobs.*\"]\nmax_concurrent = 64\n");
    std::fs::create_dir_all(&home)
        .and_then(|()| std::fs::write(home.join("policy.toml"), policy))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", home.display())));
    let node = start(&args).await;
    let me = node.node_id().fmt_short().to_string();
    let access = PolicyAccess::from_home(node.node_id(), &home)
        .unwrap_or_else(|e| fail(&format!("policy: {e}")));
    let service = RpcService::new("jobs").server_stream(
        "jobs.run",
        move |ctx, job: Job, updates: Responses<Update>| {
            let me = me.clone();
            async move {
                if job.steps == 0 || job.steps > 1000 {
                    return Err(RpcError::invalid_argument("steps must be 1..=1000"));
                }
                for step in 1..=job.steps {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let percent = (step * 100 / job.steps) as u8;
                    updates
                        .send(&Update::Progress {
                            job: job.id,
                            percent,
                        })
                        .await?;
                }
                eprintln!("job {} done for {}", job.id, ctx.peer.fmt_short());
                updates
                    .send(&Update::Done {
                        job: job.id,
                        worker: me,
                        words: job.text.split_whitespace().count(),
                        shout: job.text.to_uppercase(),
                    })
                    .await
            }
        },
    );
    let server = RpcServer::new(access).service(service);
    say(&format!("worker {}", node.node_id()));
    server.serve(&node).await;
}

async fn plan(args: Args) {
    let workers: Vec<NodeId> = args
        .get("workers")
        .split(',')
        .map(|w| {
            w.parse()
                .unwrap_or_else(|e| fail(&format!("--workers: {e}")))
        })
        .collect();
    let jobs: u32 = args
        .get("jobs")
        .parse()
        .unwrap_or_else(|_| fail("--jobs takes a number"));
    let node = start(&args).await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for w in &workers {
        let client = RpcClient::connect(&node, *w, "jobs")
            .await
            .unwrap_or_else(|e| fail(&format!("worker {}: {e}", w.fmt_short())));
        clients.push(client);
    }
    let mut running = tokio::task::JoinSet::new();
    for id in 0..jobs {
        let client = clients[id as usize % clients.len()].clone();
        running.spawn(async move {
            let job = Job {
                id,
                text: format!("job number {id} for the fleet"),
                steps: 10,
            };
            let mut call = client
                .server_stream::<Job, Update>(
                    "jobs.run",
                    &job,
                    CallOptions::deadline(Duration::from_secs(30)),
                )
                .await?;
            let mut last_percent = 0;
            let mut done = None;
            while let Some(update) = call.recv().await? {
                match update {
                    Update::Progress { job, percent } => {
                        if job != id || percent < last_percent {
                            return Err(RpcError::internal("progress out of order"));
                        }
                        last_percent = percent;
                    }
                    Update::Done {
                        job,
                        worker,
                        words,
                        shout,
                    } => {
                        if job != id || words != 6 || shout != job_text(id).to_uppercase() {
                            return Err(RpcError::internal("wrong result"));
                        }
                        done = Some(worker);
                    }
                }
            }
            let worker = done.ok_or_else(|| RpcError::internal("no result"))?;
            say(&format!("job {id} 100% on {worker}"));
            Ok::<_, RpcError>(worker)
        });
    }
    let mut per_worker: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(result) = running.join_next().await {
        match result {
            Ok(Ok(worker)) => *per_worker.entry(worker).or_default() += 1,
            Ok(Err(e)) => fail(&format!("a job failed: {e}")),
            Err(e) => fail(&format!("a job panicked: {e}")),
        }
    }
    let spread: Vec<String> = per_worker.iter().map(|(w, n)| format!("{w}={n}")).collect();
    say(&format!(
        "done {jobs} jobs on {} workers in {} ms: {}",
        per_worker.len(),
        started.elapsed().as_millis(),
        spread.join(" ")
    ));
}

fn job_text(id: u32) -> String {
    format!("job number {id} for the fleet")
}

const USAGE: &str = "\
np-planner: a planner agent fanning jobs out to worker agents over typed RPC

  np-planner worker --relay RELAY --home DIR --allow PLANNER_NODE_ID [--seed N]
      serve `jobs.run` to that planner only; prints \"worker <NodeId>\"
  np-planner plan --relay RELAY --workers ID,ID,ID --jobs N [--seed N]
      run N jobs over the workers with streaming progress; prints \"done ...\"
  np-planner id --seed N
      print the NodeId of the fixed identity [N; 32]

RELAY is <relay NodeId>@<host>:<port>.";

#[tokio::main]
async fn main() {
    let args = args();
    match args.command.as_str() {
        "worker" => worker(args).await,
        "plan" => plan(args).await,
        "id" => say(&args.identity().node_id().to_string()),
        "help" | "--help" | "-h" => say(USAGE),
        other => fail(&format!("unknown command {other:?} (worker, plan, id)")),
    }
}
