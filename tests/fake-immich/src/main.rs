//! `fake-immich [PORT]`: runs a fake Immich v2.4.1 server on 127.0.0.1
//! (port 0 or none: any free port), prints `url=<base url> key=<api key>`
//! and serves until killed.

use std::io::Write as _;

fn main() {
    let port = match std::env::args().nth(1) {
        None => 0,
        Some(arg) => match arg.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("usage: fake-immich [PORT]");
                std::process::exit(2);
            }
        },
    };
    let fake = fake_immich::FakeImmich::start_on(port);
    println!("url={} key={}", fake.url(), fake.api_key());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
