use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = keepsake::cli::Cli::parse();
    keepsake::cli::init_logging_for(&cli);
    match keepsake::cli::run(cli) {
        Ok(code) => code,
        // Anywhere in the chain (a report's write wrapped in context, a
        // serde_json error over a closed stdout).
        Err(error)
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                    || cause
                        .downcast_ref::<serde_json::Error>()
                        .and_then(|e| e.io_error_kind())
                        == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            // `keepsake jobs | head`: the reader left; that is not a failure.
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keepsake: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
