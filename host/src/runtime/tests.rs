//! The sandbox on its own, in process: a small hostile guest (contract 0.1) and the tally
//! fixture (0.2) driven through every way a call can fail, in both isolations. Seconds, no
//! Kafka, no PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{
    HandleError, Isolation, IsolationConfig, LoadError, Plugin, PluginConfig, Sandbox,
    SandboxConfig, bindings, compile, version_of,
};
use crate::domain::{Allowances, Consumed, ErrorKind, Mutation};

/// A fixture component built by host/build.rs.
fn fixture(stem: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("SLUICE_FIXTURES_DIR")).join(format!("{stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sandbox(timeout: Duration, config: &[(&str, &str)]) -> Arc<Sandbox> {
    Sandbox::new(SandboxConfig {
        timeout,
        plugin_config: PluginConfig::from_pairs(
            config
                .iter()
                .map(|(k, v)| (format!("sluice_fixture_tally:{k}"), v.to_string())),
        ),
        isolation: IsolationConfig::default(),
        ..SandboxConfig::default()
    })
    .expect("a sandbox")
}

/// Compile and load fixture `stem` as plugin `stem`.
fn load(sandbox: &Arc<Sandbox>, stem: &str) -> Result<Plugin, LoadError> {
    let bytes = fixture(stem);
    let component = compile::compile_here(sandbox.engine(), &bytes)?;
    Plugin::load(sandbox, stem, version_of(&bytes), &component)
}

fn message(payload: &[u8], key: Option<&str>) -> bindings::Message {
    bindings::Message::from(Consumed {
        topic: "orders".into(),
        partition: 0,
        offset: 0,
        key: key.map(|k| k.as_bytes().to_vec()),
        payload: Some(payload.to_vec()),
        headers: Vec::new(),
        timestamp_ms: None,
    })
}

/// Call `plugin` once per payload, in one batch of calls of `isolation`.
fn call(
    plugin: &Plugin,
    isolation: Isolation,
    allowed: &Allowances,
    payloads: &[&str],
) -> Vec<Result<Vec<Mutation>, HandleError>> {
    let mut calls = plugin.calls_in(isolation, allowed);
    payloads
        .iter()
        .map(|p| calls.handle(&message(p.as_bytes(), Some("k")), None))
        .collect()
}

const BOTH: [Isolation; 2] = [Isolation::Record, Isolation::Batch];

/// The error of a failed call, with its kind checked.
fn failure(result: &Result<Vec<Mutation>, HandleError>, kind: ErrorKind) -> String {
    match result {
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e.to_string()
        }
        Ok(output) => panic!("expected {kind}, got {output:?}"),
    }
}

#[test]
fn every_way_a_call_fails_costs_only_that_call_and_says_why() {
    let sandbox = sandbox(Duration::from_millis(200), &[]);
    let hostile = load(&sandbox, "sluice_fixture_hostile").expect("the hostile fixture loads");
    assert_eq!(hostile.contract(), "sluice:handler@0.1.0");
    let allowed = Allowances::default();
    for isolation in BOTH {
        // Each failure between two records that apply: the next call is unaffected.
        let cases: [(&str, ErrorKind, &str); 8] = [
            ("loop", ErrorKind::Timeout, "200 ms deadline"),
            ("alloc", ErrorKind::Trap, "memory"),
            // The stack is in linear memory: it overflows into what is below it.
            ("recurse", ErrorKind::Trap, "out of bounds memory access"),
            ("panic", ErrorKind::Trap, "hostile plugin panics on purpose"),
            ("trap", ErrorKind::Trap, ""),
            ("sleep", ErrorKind::Blocked, ""),
            ("huge-output", ErrorKind::InvalidOutput, "100000 mutations"),
            ("bad-output", ErrorKind::InvalidOutput, ""),
        ];
        for (payload, kind, words) in cases {
            let started = Instant::now();
            let results = call(&hostile, isolation, &allowed, &["ok", payload, "ok"]);
            let reason = failure(&results[1], kind);
            assert!(
                reason.to_lowercase().contains(&words.to_lowercase()),
                "{isolation:?} {payload}: {reason}"
            );
            for fine in [&results[0], &results[2]] {
                assert!(fine.is_ok(), "{isolation:?} {payload}: {fine:?}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{isolation:?} {payload} held its thread {:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn stderr_reaches_the_reason_its_end_on_one_line() {
    let sandbox = sandbox(Duration::from_secs(2), &[]);
    let hostile = load(&sandbox, "sluice_fixture_hostile").unwrap();
    let results = call(
        &hostile,
        Isolation::Record,
        &Allowances::default(),
        &["stderr-flood"],
    );
    let reason = failure(&results[0], ErrorKind::Trap);
    // 1 MB of `x`, then the panic's message: the end is kept, on one line.
    assert!(reason.contains("after a stderr flood"), "{reason}");
    assert!(
        reason.len() < 1200,
        "the reason is cut: {} bytes",
        reason.len()
    );
    assert!(!reason.contains('\n'), "{reason}");
}

#[test]
fn a_trap_in_a_reused_instance_is_tried_again_in_a_fresh_one() {
    let sandbox = sandbox(Duration::from_secs(2), &[]);
    let hostile = load(&sandbox, "sluice_fixture_hostile").unwrap();
    let allowed = Allowances::default();
    // The second call traps in the instance the first one used (batch isolation); tried again
    // in a fresh instance, as record isolation would have run it, it applies.
    for isolation in BOTH {
        let results = call(&hostile, isolation, &allowed, &["ok", "trap-if-reused"]);
        assert!(
            results.iter().all(Result::is_ok),
            "{isolation:?}: {results:?}"
        );
    }
    // A trap that is the record's own stays a trap after the second try.
    let results = call(&hostile, Isolation::Batch, &allowed, &["ok", "panic"]);
    failure(&results[1], ErrorKind::Trap);
}

/// Lines a plugin logs go to the host's log, at most 100 per call; the rest are counted and
/// dropped, and the call goes on within its deadline.
#[test]
fn a_plugin_that_floods_the_log_is_cut_off_and_goes_on() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            lines.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let sandbox = sandbox(Duration::from_secs(2), &[]);
    let hostile = load(&sandbox, "sluice_fixture_hostile").unwrap();
    let results = tracing::subscriber::with_default(subscriber, || {
        call(
            &hostile,
            Isolation::Record,
            &Allowances::default(),
            &["log-flood"],
        )
    });
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let lines = log.lines().filter(|l| l.contains("flood line")).count();
    assert_eq!(lines, 100, "lines that reached the host's log");
    assert!(
        log.contains("plugin logged too much in one call") && log.contains("dropped=9900"),
        "{log}"
    );
}

#[test]
fn outputs_beyond_what_the_route_allows_are_refused() {
    let sandbox = sandbox(Duration::from_secs(2), &[("emit-topic", "orders.tally")]);
    let tally = load(&sandbox, "sluice_fixture_tally").expect("the tally fixture loads");
    assert_eq!(tally.contract(), "sluice:handler@0.2.0");
    let allowed = Allowances {
        state: true,
        emit_to: vec!["orders.tally".into()],
        ..Allowances::default()
    };
    for isolation in BOTH {
        let results = call(
            &tally,
            isolation,
            &allowed,
            &[
                "emit-forbidden",
                "emit-many",
                "emit-huge",
                "state-huge",
                "state-twice",
            ],
        );
        for (result, words) in
            results
                .iter()
                .zip(["not-allowed", "records", "bytes", "state", "state changes"])
        {
            let reason = failure(result, ErrorKind::InvalidOutput);
            assert!(reason.contains(words), "{isolation:?}: {reason}");
        }
    }
    // State needs a key: a keyless record that changes state is refused.
    let mut calls = tally.calls_in(Isolation::Record, &allowed);
    let keyless = calls.handle(&message(b"state-keyless", None), None);
    failure(&keyless, ErrorKind::InvalidOutput);
}

#[test]
fn components_that_cannot_be_plugins_are_refused_at_load_with_the_reason() {
    let sandbox = sandbox(Duration::from_millis(300), &[]);
    for (stem, expected) in [
        ("sluice_fixture_wrong_world", "link"),
        ("sluice_fixture_failing_self_test", "self-test"),
        ("sluice_fixture_sleepy_self_test", "self-test"),
    ] {
        match load(&sandbox, stem) {
            Err(e) => assert_eq!(e.kind(), expected, "{stem}: {e}"),
            Ok(_) => panic!("{stem} loaded"),
        }
    }
    let not_wasm = compile::compile_here(sandbox.engine(), b"not a component");
    assert!(
        matches!(not_wasm, Err(LoadError::Compile(_))),
        "{not_wasm:?}"
    );
}

#[test]
fn configuration_reaches_the_plugin_it_is_for() {
    let sandbox = sandbox(Duration::from_secs(2), &[("emit-topic", "elsewhere")]);
    let tally = load(&sandbox, "sluice_fixture_tally").unwrap();
    assert_eq!(
        tally.config(),
        &HashMap::from([("emit-topic".to_string(), "elsewhere".to_string())])
    );
}
