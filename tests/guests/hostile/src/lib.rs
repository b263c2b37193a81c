//! A stage that misbehaves on purpose, chosen by its `mode` option. The host
//! must contain every one of these to the job that triggered it.

use keepsake_sdk::{
    DeferUntil, Description, Effect, Guest, Job, Placement, StageError, describe, export_stage,
    file_name, host, option_or,
};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Description {
        describe(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            "misbehaves on purpose for the tests",
            &[
                (
                    "mode",
                    "loop | memory | panic | escape | absolute | nul | huge-read | snoop | defer | duplicate-of | kv-flood | skip | ok",
                    Some("ok"),
                ),
                (
                    "only",
                    "misbehave only for file names containing this",
                    Some(""),
                ),
                ("seconds", "how long `defer` defers", Some("3")),
                ("of", "the job id `duplicate-of` names", Some("1")),
            ],
        )
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        let only = option_or("only", "");
        if !file_name(&job).contains(only.as_str()) {
            return Ok(vec![]);
        }
        let place = |path: String| {
            Ok(vec![Effect::Place(Placement {
                root: "library".into(),
                path,
            })])
        };
        match option_or("mode", "ok").as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile stage panics on {}", job.relative_path),
            // A family plugin that leaves files out.
            "skip" => Ok(vec![Effect::Skip(format!(
                "hostile leaves out {}",
                job.relative_path
            ))]),
            "escape" => place(format!("../../escaped/{}", file_name(&job))),
            "absolute" => place(format!("/tmp/escaped-{}", file_name(&job))),
            "nul" => place(format!("bad\0name-{}", file_name(&job))),
            "snoop" => {
                // Everything a native program could reach; a stage reaches none of it.
                let mut reached = Vec::new();
                if std::fs::read_dir("/").is_ok() || std::fs::read_dir(".").is_ok() {
                    reached.push("the filesystem");
                }
                if std::fs::write("escape.txt", b"x").is_ok() {
                    reached.push("a writable folder");
                }
                if std::env::vars().next().is_some() {
                    reached.push("environment variables");
                }
                if std::net::TcpStream::connect(("127.0.0.1", 9)).is_ok() {
                    reached.push("the network");
                }
                if reached.is_empty() {
                    Ok(vec![Effect::SetFact(keepsake_sdk::Fact {
                        key: "snoop".into(),
                        value: "filesystem, environment and network all refused".into(),
                    })])
                } else {
                    Err(StageError::Internal(format!(
                        "reached {}",
                        reached.join(", ")
                    )))
                }
            }
            // Defer a file the first time it is seen, then let it through.
            "defer" => {
                let key = format!("deferred:{}", job.relative_path);
                if host::kv_get(&key).is_some() {
                    return Ok(vec![]);
                }
                host::kv_set(&key, b"1");
                Ok(vec![Effect::Defer(DeferUntil {
                    seconds: option_or("seconds", "3").parse().unwrap_or(3),
                    reason: "waiting on purpose".into(),
                })])
            }
            // Claims the file is a copy of job `of`, whatever its bytes.
            "duplicate-of" => {
                let of = option_or("of", "1").parse().unwrap_or(1);
                Ok(vec![Effect::DuplicateOf(of)])
            }
            // 100 000 distinct keys of 1 MiB each: far past any quota.
            "kv-flood" => {
                let value = vec![7u8; 1 << 20];
                for i in 0..100_000u32 {
                    host::kv_set(&format!("flood:{i}"), &value);
                }
                Ok(vec![])
            }
            "huge-read" => match host::read(0, u32::MAX) {
                Ok(bytes) if bytes.len() <= 1 << 20 => Ok(vec![]),
                Ok(bytes) => Err(StageError::Internal(format!(
                    "host returned {} bytes",
                    bytes.len()
                ))),
                Err(e) => Err(StageError::Internal(e)),
            },
            _ => Ok(vec![]),
        }
    }
}

export_stage!(Hostile);
