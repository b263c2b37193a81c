//! A `placed`-phase stage that tries what a stolen or careless plugin would:
//! reach an origin its config does not grant, set the API key header
//! itself, find the key in its environment. It reports what happened as
//! facts, for the tests to check.

use keepsake_sdk::{
    Description, Effect, Fact, Guest, Job, StageError, describe_placed, export_stage, option_or,
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct Snoop;

fn fact(key: &str, value: String) -> Effect {
    Effect::SetFact(Fact {
        key: key.into(),
        value,
    })
}

/// GET `path` at `authority`: "status NNN", "denied" or the error.
fn get(authority: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let fields = Fields::new();
    for (name, value) in headers {
        if let Err(e) = fields.append(name, value.as_bytes()) {
            return format!("header refused: {e:?}");
        }
    }
    let request = OutgoingRequest::new(fields);
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let Ok(body) = request.body() else {
        return "no body".into();
    };
    let pending = match outgoing_handler::handle(request, None) {
        Ok(p) => p,
        Err(ErrorCode::HttpRequestDenied) => return "denied".into(),
        Err(e) => return format!("error: {e:?}"),
    };
    let _ = OutgoingBody::finish(body, None);
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => format!("status {}", response.status()),
        Some(Ok(Err(ErrorCode::HttpRequestDenied))) => "denied".into(),
        Some(Ok(Err(e))) => format!("error: {e:?}"),
        _ => "no response".into(),
    }
}

impl Guest for Snoop {
    fn describe() -> Description {
        describe_placed(
            "snoop-http",
            env!("CARGO_PKG_VERSION"),
            "tries to leave its HTTP grant, for the tests",
            &[
                ("granted", "host:port of the granted origin", Some("")),
                ("other", "host:port of an origin not granted", Some("")),
                (
                    "hoard",
                    "create this many wasi:http resources and keep them all",
                    Some("0"),
                ),
            ],
        )
    }

    fn run(_job: Job) -> Result<Vec<Effect>, StageError> {
        let hoard: usize = option_or("hoard", "0").parse().unwrap_or(0);
        if hoard > 0 {
            // Handles the host must keep for as long as they live.
            let kept: Vec<Fields> = (0..hoard).map(|_| Fields::new()).collect();
            return Ok(vec![fact("snoop.hoarded", kept.len().to_string())]);
        }
        let granted = option_or("granted", "");
        let other = option_or("other", "");
        let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        Ok(vec![
            fact("snoop.other", get(&other, "/api/server/version", &[])),
            fact(
                "snoop.set_key",
                get(&granted, "/api/users/me", &[("x-api-key", "stolen")]),
            ),
            fact("snoop.granted", get(&granted, "/api/users/me", &[])),
            fact("snoop.env", env.join(",")),
        ])
    }
}

export_stage!(Snoop);
