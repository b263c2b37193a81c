use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = keepsake::cli::Cli::parse();
    keepsake::cli::init_logging_for(&cli);
    match keepsake::cli::run(cli) {
        Ok(code) => code,
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
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
