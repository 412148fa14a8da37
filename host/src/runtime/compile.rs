//! Compiling a plugin: checks on the raw bytes (size, custom sections, component or core
//! module), then cranelift, in a child process under CPU-time, memory and wall-clock limits:
//! a small hostile component can keep a compiler busy for minutes and take gigabytes.
//!
//! The child is this same binary (`sluice compile-plugin`), so it compiles with the same
//! wasmtime and configuration and its output loads here. The parent trusts that output as it
//! would trust its own compiler: the child's only input is the component, and the limits are
//! about exhaustion, not about a compromised compiler.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::wasm_config;
use super::error::{LoadError, one_line};
use super::limits::Limits;

/// What a component may be, before and while it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// The largest component accepted.
    pub max_component_bytes: usize,
    /// Custom sections (names, debug info, padding) in total.
    pub max_custom_section_bytes: usize,
    /// Wall-clock (and CPU) time to compile one component.
    pub timeout: Duration,
    /// Address space of the compiler process.
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            // Room for interpreted plugins: a componentize-py component is ≈ 19 MiB (CPython
            // and its standard library), a ComponentizeJS one ≈ 12 MiB (SpiderMonkey).
            max_component_bytes: 32 << 20,
            max_custom_section_bytes: 1 << 20,
            timeout: Duration::from_secs(30),
            memory_bytes: 2 << 30,
        }
    }
}

/// Where untrusted components are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In a child process running `<exe> compile-plugin`, under the limits.
    Child(PathBuf),
    /// In this process, with no time or memory bound: for components this build trusts.
    InProcess,
}

impl Compiler {
    /// The child compiler of the running `sluice` binary.
    pub fn this_binary() -> Self {
        std::env::current_exe().map_or(Self::InProcess, Self::Child)
    }
}

/// Refuse what is not worth compiling: too large, not a component, too much in custom
/// sections. Cheap and linear; runs before anything is compiled or stored.
pub fn check_bytes(bytes: &[u8], limits: &CompileLimits) -> Result<(), LoadError> {
    if bytes.len() > limits.max_component_bytes {
        return Err(LoadError::TooLarge(format!(
            "the component is {}, more than the limit of {} (SLUICE_PLUGIN_MAX_MIB)",
            size(bytes.len()),
            size(limits.max_component_bytes)
        )));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::Compile(
            "not WebAssembly (no `\\0asm` header): upload the .wasm component built for \
             wasm32-wasip2"
                .into(),
        ));
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(LoadError::Compile(
            "this is a core WebAssembly module, not a component: build the plugin for \
             wasm32-wasip2 (`cargo build --target wasm32-wasip2`), which emits a component"
                .into(),
        ));
    }
    let mut custom = 0usize;
    let mut largest: Option<(String, usize)> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Compile(one_line(&e.to_string())))?;
        if let wasmparser::Payload::CustomSection(section) = payload {
            let len = section.data().len();
            custom = custom.saturating_add(len);
            if largest.as_ref().is_none_or(|(_, l)| len > *l) {
                largest = Some((section.name().to_string(), len));
            }
        }
    }
    if custom > limits.max_custom_section_bytes {
        let (name, len) = largest.unwrap_or_default();
        return Err(LoadError::TooLarge(format!(
            "custom sections hold {} (the largest, `{name}`, {}), more than the limit of {}: \
             build without debug info (`strip = true` in the profile)",
            size(custom),
            size(len),
            size(limits.max_custom_section_bytes)
        )));
    }
    Ok(())
}

/// Compile `bytes` for `engine` where `compiler` says.
pub async fn compile(
    compiler: &Compiler,
    engine: &Engine,
    sandbox_limits: &Limits,
    bytes: bytes::Bytes,
    limits: &CompileLimits,
) -> Result<Component, LoadError> {
    check_bytes(&bytes, limits)?;
    match compiler {
        Compiler::InProcess => {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || compile_here(&engine, &bytes))
                .await
                .map_err(|e| LoadError::Compile(format!("the compile task failed: {e}")))?
        }
        Compiler::Child(exe) => {
            let artifact = compile_in_child(exe, sandbox_limits, &bytes, limits).await?;
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || {
                // SAFETY: the artifact was produced just now by this same binary's compiler,
                // from the component the caller gave; see the module documentation.
                unsafe { Component::deserialize(&engine, &artifact) }.map_err(|e| load_error(&e))
            })
            .await
            .map_err(|e| LoadError::Compile(format!("the load task failed: {e}")))?
        }
    }
}

/// Compile in this process.
pub fn compile_here(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::from_binary(engine, bytes).map_err(|e| load_error(&e))
}

/// A component the engine refuses: over the sandbox's limits (the pool's counts and sizes,
/// checked as it loads), or not valid.
fn load_error(e: &wasmtime::Error) -> LoadError {
    let text = one_line(&format!("{e:#}"));
    if text.contains("pooling allocator") {
        LoadError::Limits(text.replace(
            "module memory does not fit in pooling allocator requirements: ",
            "",
        ))
    } else {
        LoadError::Compile(text)
    }
}

async fn compile_in_child(
    exe: &PathBuf,
    sandbox_limits: &Limits,
    bytes: &[u8],
    limits: &CompileLimits,
) -> Result<Vec<u8>, LoadError> {
    let cpu_seconds = limits.timeout.as_secs().max(1) + 1;
    let memory = limits.memory_bytes;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("compile-plugin")
        .arg("--memory-mib")
        .arg((sandbox_limits.memory_bytes >> 20).to_string())
        // Few malloc arenas: the address-space limit is for the compiler, not for arenas.
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setrlimit, prctl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_CPU,
                cpu_seconds,
                cpu_seconds,
            )?;
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, memory, memory)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| LoadError::Compile(format!("starting the compiler process: {e}")))?;
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let write = async move {
        use tokio::io::AsyncWriteExt as _;
        if let Some(stdin) = stdin.as_mut() {
            // A child that dies early closes the pipe: its exit status says why.
            let _ = stdin.write_all(&input).await;
        }
        drop(stdin);
    };
    let run = async {
        let (_, output) = tokio::join!(write, child.wait_with_output());
        output
    };
    let output = match tokio::time::timeout(limits.timeout, run).await {
        Ok(output) => {
            output.map_err(|e| LoadError::Compile(format!("the compiler process: {e}")))?
        }
        Err(_) => {
            return Err(LoadError::CompileLimit(format!(
                "compiling took longer than {} s (SLUICE_PLUGIN_COMPILE_TIMEOUT_S)",
                limits.timeout.as_secs_f64()
            )));
        }
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt as _;
    match output.status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => Err(LoadError::CompileLimit(format!(
            "compiling used more than {} s of CPU time",
            cpu_seconds - 1
        ))),
        Some(_) if stderr.contains("memory allocation") => Err(LoadError::CompileLimit(format!(
            "compiling needed more than {} MiB of memory",
            memory >> 20
        ))),
        _ if stderr.contains("memory allocation") || stderr.contains("out of memory") => {
            Err(LoadError::CompileLimit(format!(
                "compiling needed more than {} MiB of memory",
                memory >> 20
            )))
        }
        _ => Err(LoadError::Compile(one_line(stderr.trim()))),
    }
}

/// `sluice compile-plugin`: read a component on stdin, compile it, write the artifact to
/// stdout. Run by [`compile`] under limits; not meant to be run by hand.
pub fn child_main(memory_mib: usize) -> std::process::ExitCode {
    let limits = Limits {
        memory_bytes: memory_mib << 20,
        ..Limits::default()
    };
    let result = (|| -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the component: {e}"))?;
        let engine = Engine::new(&wasm_config(&limits, false)).map_err(|e| format!("{e:#}"))?;
        let component = Component::from_binary(&engine, &bytes).map_err(|e| format!("{e:#}"))?;
        component.serialize().map_err(|e| format!("{e:#}"))
    })();
    match result {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the compiled component: {e}");
                std::process::ExitCode::from(3)
            }
        },
        Err(e) => {
            eprintln!("{}", one_line(&e));
            std::process::ExitCode::from(2)
        }
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
