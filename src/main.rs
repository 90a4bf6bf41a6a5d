//! The `headscale` binary: parse the command line and dispatch. Errors become one line on
//! stderr and exit status 1.

use clap::{CommandFactory, Parser};
use headscale::cli::args::{Cli, Command, GenerateCommand, PolicyCommand};
use headscale::cli::{self, output::Format};
use headscale::{config, keyfile, server};

fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},sled=warn,hyper=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve) {
        exit_quietly_on_closed_stdout();
    }
    let format = cli.output;
    if let Err(error) = run(cli) {
        // `{"error": …}` with a machine format, as headscale's CLI does.
        eprintln!("{}", cli::output::error_text(format, &one_line(&error)));
        std::process::exit(1);
    }
}

/// A CLI command piped into `head` ends quietly when the reader goes away, as other command
/// line tools do, instead of panicking on the failed write ("Broken pipe"). Rust ignores
/// SIGPIPE so that servers see EPIPE; `serve` keeps that.
fn exit_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error and its causes on one line (causes only when they add something).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Version => return cli::output::print_version(cli.output),
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "headscale",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Generate(GenerateCommand::PrivateKey) => {
            println!("privkey:{}", hex::encode(keyfile::random_key()));
            return Ok(());
        }
        // Works without a config or daemon: the file is checked locally first.
        Command::Policy(PolicyCommand::Check { file }) => {
            return cli::check_policy_file(&cli, file);
        }
        // An export is checked (or imported into a data dir) with nothing but the file.
        Command::Events(command) if cli::log_file::needs_no_config(command) => {
            return cli::log_file::run_without_config(command, cli.output);
        }
        _ => {}
    }
    let loaded = match &cli.command {
        Command::Serve | Command::Configtest => cli::load_config(cli.config.as_deref())?,
        // A client of the server: a headscale config with server-only keys must not stop it.
        _ => cli::load_client_config(cli.config.as_deref())?,
    };
    let config = loaded.config;
    let runtime = tokio::runtime::Runtime::new()?;
    match &cli.command {
        Command::Configtest => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}", config.explain());
            println!("config OK");
            Ok(())
        }
        Command::Serve => {
            init_tracing(
                config.log.level_name().unwrap_or("info"),
                config.log.format == config::LogFormat::Json,
            );
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            runtime.block_on(server::run(config, std::future::pending()))
        }
        _ => {
            if cli.output == Format::Human {
                init_tracing("warn", false);
            }
            runtime.block_on(cli::run_api_command(&cli, &config))
        }
    }
}
