use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = keepsake::cli::Cli::parse();
    keepsake::cli::init_logging(cli.verbose);
    match keepsake::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keepsake: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
