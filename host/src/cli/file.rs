//! Settings from a TOML file (`--config`), layered under flags and environment, and
//! `sluice config`, which prints the effective settings and where each one came from.
//!
//! The file's keys are the long flags without their dashes (`http-addr = "0.0.0.0:8080"`);
//! a list flag takes an array, a `KEY=VALUE` flag also a table (`[kafka-options]`). Precedence:
//! flag > environment > file > default; `KEY=VALUE` lists merge, later sources winning per key.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

/// Where each setting of the chosen command came from, for `sluice config`.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The final parse of the chosen subcommand.
    matches: Option<ArgMatches>,
    /// Ids of the arguments the file set.
    from_file: BTreeSet<String>,
    file: Option<String>,
}

impl Cli {
    /// The command line, with the `--config` file's values under flags and environment.
    /// Exits with clap's message on a usage error (as `Cli::parse` does).
    pub fn parse_layered() -> Self {
        Self::try_parse_layered(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_layered<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = Self::command();
        let first = command.clone().try_get_matches_from(&args)?;
        let mut provenance = Provenance::default();
        let mut matches = first.clone();
        if let Some((name, sub)) = first.subcommand()
            && let Some(path) = sub
                .try_get_one::<std::path::PathBuf>("config")
                .ok()
                .flatten()
            && let Some(subcommand) = command.find_subcommand(name)
        {
            let file = file_args(path, subcommand, sub)?;
            // Right after the subcommand's name: before the user's own flags.
            let at = args
                .iter()
                .position(|a| a.to_str() == Some(name))
                .map_or(args.len(), |i| i + 1);
            args.splice(at..at, file.first);
            args.extend(file.last);
            matches = command.clone().try_get_matches_from(&args)?;
            provenance.from_file = file.from_file;
            provenance.file = Some(path.display().to_string());
        }
        let mut cli = Self::from_arg_matches(&matches)?;
        provenance.matches = matches.subcommand().map(|(_, sub)| sub.clone());
        cli.provenance = provenance;
        Ok(cli)
    }
}

/// What the file adds to the command line.
struct FileArgs {
    /// Flags for the start of the subcommand's arguments: list settings of `KEY=VALUE` pairs
    /// from the file, then the environment's (re-expressed as flags, since a flag would hide
    /// the variable), so that the environment's and then the flags' pairs win key by key.
    first: Vec<OsString>,
    /// Flags for the end: the file's other settings that neither a flag nor the environment set.
    last: Vec<OsString>,
    /// Ids of the arguments the file set or contributed to.
    from_file: BTreeSet<String>,
}

fn file_args(
    path: &Path,
    subcommand: &clap::Command,
    given: &ArgMatches,
) -> Result<FileArgs, clap::Error> {
    let invalid = |message: String| clap::Error::raw(ErrorKind::InvalidValue, message + "\n");
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("reading the config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        invalid(format!(
            "the config file {} is not TOML: {e}",
            path.display()
        ))
    })?;
    let mut file = FileArgs {
        first: Vec::new(),
        last: Vec::new(),
        from_file: BTreeSet::new(),
    };
    for (key, value) in &table {
        let Some(arg) = subcommand
            .get_arguments()
            .find(|arg| long_name(arg) == *key && arg.get_id() != "config")
        else {
            return Err(invalid(format!(
                "unknown setting `{key}` in {}: the settings are the long flags of \
                 `sluice {} --help`, without the dashes",
                path.display(),
                subcommand.get_name()
            )));
        };
        let id = arg.get_id().as_str();
        let source = given.value_source(id);
        let merged = is_key_value_list(arg);
        if !merged
            && matches!(
                source,
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        {
            continue;
        }
        let values = scalars(value)
            .map_err(|why| invalid(format!("setting `{key}` in {}: {why}", path.display())))?;
        let takes_values = arg.get_action().takes_values();
        let into = if merged {
            &mut file.first
        } else {
            &mut file.last
        };
        for value in values {
            match (takes_values, value.as_str()) {
                (false, "true") => into.extend(flag(arg, None)),
                (false, "false") => {}
                (false, _) => {
                    return Err(invalid(format!(
                        "setting `{key}` in {} is true or false",
                        path.display()
                    )));
                }
                (true, _) => into.extend(flag(arg, Some(&value))),
            }
        }
        if merged
            && source == Some(ValueSource::EnvVariable)
            && let Some(values) = given.get_raw(id)
        {
            for value in values {
                file.first.extend(flag(arg, value.to_str()));
            }
        }
        file.from_file.insert(id.to_string());
    }
    Ok(file)
}

/// A repeatable `KEY=VALUE` setting (Kafka options, plugin configuration, routes): the file's
/// pairs and the environment's and flags' are merged, later sources winning key by key.
fn is_key_value_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
        && arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| n.as_str().contains('=')))
}

/// The name an argument has in the file: its long flag, else its id in kebab case.
fn long_name(arg: &Arg) -> String {
    arg.get_long()
        .map_or_else(|| arg.get_id().as_str().replace('_', "-"), str::to_string)
}

fn flag(arg: &Arg, value: Option<&str>) -> Vec<OsString> {
    match (arg.get_long(), arg.get_short(), value) {
        (Some(long), _, None) => vec![format!("--{long}").into()],
        (Some(long), _, Some(value)) => vec![format!("--{long}={value}").into()],
        (None, Some(short), None) => vec![format!("-{short}").into()],
        (None, Some(short), Some(value)) => vec![format!("-{short}").into(), value.into()],
        (None, None, _) => Vec::new(),
    }
}

/// A file value as the strings a flag would take: a scalar, each element of an array, or
/// `key=value` for each entry of a table.
fn scalars(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("expected a string, number or boolean inside a list".into())
        }
    }
}

/// `sluice config`: the effective settings of `sluice serve` as TOML, each with its source,
/// secrets hidden.
pub fn render(provenance: &Provenance, command: &str) -> String {
    let mut out = format!(
        "# Effective configuration: flag > environment > {} > default.\n",
        provenance
            .file
            .as_deref()
            .map_or("config file (none given)".to_string(), |f| format!(
                "config file {f}"
            ))
    );
    let Some(matches) = &provenance.matches else {
        return out;
    };
    let cli = Cli::command();
    let Some(subcommand) = cli.find_subcommand(command) else {
        return out;
    };
    for arg in subcommand.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version" | "config") || arg.is_hide_set() {
            continue;
        }
        let key = long_name(arg);
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| {
                raw.map(|v| hide_secret(arg, &v.to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        let env_set = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        let source = match (provenance.from_file.contains(id), matches.value_source(id)) {
            (true, _) if is_key_value_list(arg) && env_set => {
                "config file, then environment (later pairs win)".to_string()
            }
            (true, _) => "config file".to_string(),
            (false, Some(ValueSource::CommandLine)) => "flag".to_string(),
            (false, Some(ValueSource::EnvVariable)) => format!(
                "environment ({})",
                arg.get_env()
                    .map_or_else(String::new, |e| e.to_string_lossy().into_owned())
            ),
            (false, Some(ValueSource::DefaultValue)) => "default".to_string(),
            (false, _) => {
                out.push_str(&format!("# {key}: not set\n"));
                continue;
            }
        };
        let rendered = match (arg.get_action().takes_values(), values.as_slice()) {
            (false, [flag]) => flag.clone(),
            (false, _) => "true".to_string(),
            (true, [one]) if !matches!(arg.get_action(), clap::ArgAction::Append) => {
                match one.parse::<i64>() {
                    Ok(number) => number.to_string(),
                    Err(_) => toml::Value::String(one.clone()).to_string(),
                }
            }
            (true, many) => toml::Value::Array(
                many.iter()
                    .map(|v| toml::Value::String(v.clone()))
                    .collect(),
            )
            .to_string(),
        };
        out.push_str(&format!("{key} = {rendered}  # {source}\n"));
    }
    out
}

/// Keys of `KEY=VALUE` settings whose values are secret (librdkafka's `sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, a plugin's `api-token`, ...).
const SECRET_KEY_PARTS: [&str; 5] = ["password", "secret", "token", "credential", "key.pem"];

fn hide_secret(arg: &Arg, value: &str) -> String {
    if arg.is_hide_env_values_set() {
        return hide_url_password(value).unwrap_or_else(|| "********".to_string());
    }
    if let Some((key, _)) = value.split_once('=') {
        let lower = key.to_ascii_lowercase();
        if SECRET_KEY_PARTS.iter().any(|part| lower.contains(part)) {
            return format!("{key}=********");
        }
    }
    value.to_string()
}

/// `scheme://user:********@host/...` for a URL with a password; `None` for anything else.
fn hide_url_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    Some(format!("{scheme}://{user}:********@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn serve(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_layered(["sluice", "serve"].iter().chain(args))
    }

    #[test]
    fn the_file_fills_what_flags_do_not_set_and_flags_win() {
        let file = write(
            r#"
            database-url = "postgres://sluice:hunter2@db/sluice"
            http-addr = "0.0.0.0:9000"
            group-id = "from-file"
            batch-max-messages = 250
            public-dead-letters = true
            route = ["a=stock", "b=rules"]
            [kafka-options]
            "security.protocol" = "SASL_SSL"
            "sasl.password" = "s3cret"
            "#,
        );
        let path = file.path().to_str().unwrap();
        let cli = serve(&[
            "--config",
            path,
            "--group-id",
            "from-flag",
            "--kafka-options",
            "security.protocol=SSL",
        ])
        .unwrap();
        let rendered = render(&cli.provenance, "serve");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.common.http_addr.port(), 9000);
        assert_eq!(args.common.group_id, "from-flag");
        assert_eq!(args.common.batch_max_messages, 250);
        assert!(args.common.public_dead_letters);
        assert_eq!(args.common.routes.len(), 2);
        // Pairs merge: the file's first, the flag's after them (the later wins per key).
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            args.common.kafka_options,
            [
                pair("sasl.password", "s3cret"),
                pair("security.protocol", "SASL_SSL"),
                pair("security.protocol", "SSL"),
            ]
        );
        assert!(
            rendered.contains(r#"http-addr = "0.0.0.0:9000"  # config file"#),
            "{rendered}"
        );
        assert!(
            rendered.contains(r#"group-id = "from-flag"  # flag"#),
            "{rendered}"
        );
        assert!(
            rendered.contains(r#"topic = "example-order-topic"  # default"#),
            "{rendered}"
        );
        if std::env::var_os("DATABASE_URL").is_none() {
            assert!(
                rendered.contains("postgres://sluice:********@db/sluice"),
                "{rendered}"
            );
        }
        assert!(rendered.contains("sasl.password=********"), "{rendered}");
        assert!(
            !rendered.contains("hunter2") && !rendered.contains("s3cret"),
            "{rendered}"
        );
    }

    #[test]
    fn the_documented_example_is_a_valid_file() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sluice.example.toml");
        let cli = serve(&["--config", example]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.common.sandbox.plugin_timeout_ms, 100);
        assert!(
            args.common
                .kafka_options
                .contains(&("sasl.mechanism".into(), "SCRAM-SHA-512".into()))
        );
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        let unknown = write("no-such-flag = 1\n");
        let error = serve(&["--config", unknown.path().to_str().unwrap()]).unwrap_err();
        assert!(
            error.to_string().contains("unknown setting `no-such-flag`"),
            "{error}"
        );
        let broken = write("http-addr = \n");
        let error = serve(&["--config", broken.path().to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("is not TOML"), "{error}");
        let invalid = write("batch-max-messages = \"many\"\n");
        let error = serve(&["--config", invalid.path().to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("many"), "{error}");
        let missing = serve(&["--config", "/nonexistent/sluice.toml"]).unwrap_err();
        assert!(
            missing.to_string().contains("reading the config file"),
            "{missing}"
        );
    }
}
