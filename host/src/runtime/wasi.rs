//! The WASI a plugin gets: what Rust's standard library, CPython (componentize-py) and
//! SpiderMonkey (ComponentizeJS) import on `wasm32-wasip2` — stdio, environment, exit, clocks,
//! random, streams, polling, filesystem, sockets — granting nothing and never waiting.
//!
//! The filesystem has no preopened directory, so there is no descriptor to open anything with;
//! sockets refuse to be created (TCP and UDP are off) and every name lookup fails; an outgoing
//! HTTP request (`wasi:http`, which ComponentizeJS's `fetch` imports) is denied. Environment
//! and arguments are empty, stdin is closed, stdout is discarded and stderr is captured (its
//! last bytes go into the error report of a failed call). Nothing here may block: epoch deadlines
//! interrupt wasm code, not a host call, so `pollable.block` and `poll` answer at once when
//! something is ready and trap when the plugin would have to wait (a sleep, a timer, a poll on
//! a clock).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
use wasmtime_wasi::{WasiCtx, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable as _;
use wasmtime_wasi_io::poll::DynPollable;

/// The version of the WASI interfaces the host defines; components importing any 0.2.x
/// version link to them.
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// The largest `get-random-bytes` answer: plugins need seeds, not megabytes.
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Link the plugin WASI into `linker`.
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let l = &mut *linker;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    // Interpreters' libc imports these: with no preopens and no network they can only fail.
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::network::add_to_linker::<T, WasiSockets>(l, &Default::default(), T::sockets)?;

    use wasmtime_wasi::p2::bindings::sync::{self as blocking, io};
    blocking::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    blocking::sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    blocking::sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    blocking::sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    blocking::sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, Table>(l, table_of)?;
    io::streams::add_to_linker::<T, Table>(l, table_of)?;
    // The standard `poll` interface defines the `pollable` resource; its two waiting
    // functions are then replaced by ones that never wait.
    io::poll::add_to_linker::<T, Table>(l, table_of)?;
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, T>, (pollable,): (Resource<DynPollable>,)| {
            let table = table_of(store.data_mut());
            if is_ready(table, pollable.rep())? {
                Ok(())
            } else {
                Err(would_block())
            }
        },
    )?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, T>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let table = table_of(store.data_mut());
            let mut ready = Vec::new();
            for (index, pollable) in pollables.iter().enumerate() {
                if is_ready(table, pollable.rep())? {
                    ready.push(u32::try_from(index)?);
                }
            }
            if ready.is_empty() {
                Err(would_block())
            } else {
                Ok((ready,))
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The trap a plugin gets for waiting.
fn would_block() -> wasmtime::Error {
    wasmtime::Error::msg(WouldBlock)
}

/// A plugin asked to wait (sleep, timer, poll); plugins must not block.
#[derive(Debug, thiserror::Error)]
#[error(
    "the plugin tried to wait (a sleep, a timer or a poll that is not ready): plugins must not block"
)]
pub struct WouldBlock;

/// Whether the pollable is ready now. A pollable that is due at once (a zero-length sleep)
/// reports ready on its second look.
fn is_ready(table: &mut ResourceTable, rep: u32) -> wasmtime::Result<bool> {
    for _ in 0..2 {
        let look = table.ready(Resource::<DynPollable>::new_borrow(rep));
        if wasmtime_wasi::runtime::in_tokio(look)? {
            return Ok(true);
        }
    }
    Ok(false)
}

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

fn table_of<T: WasiView>(state: &mut T) -> &mut ResourceTable {
    state.ctx().table
}

/// A WASI context that grants nothing, with stderr going to `stderr`: no preopened
/// directory, no TCP, no UDP, no name lookups (and no address passes the socket check).
pub fn context(stderr: Capture) -> WasiCtx {
    WasiCtx::builder()
        .stderr(stderr)
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// Keeps the last `capacity` bytes written to it and drops what came before (a chatty plugin
/// is not an error); cleared between calls.
#[derive(Clone)]
pub struct Capture {
    capacity: usize,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Arc::default(),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep the last `capacity` bytes written: a panic's message comes after whatever the
    /// plugin wrote before it.
    fn keep(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let over = (buffer.len() + bytes.len()).saturating_sub(self.capacity);
        buffer.drain(..over);
        buffer.extend_from_slice(bytes);
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The `wasi:http` hooks of a plugin: every outgoing request is denied at once
/// (`HTTP-request-denied`), before anything is resolved or connected.
pub struct DenyHttp;

/// What a sent request resolves to (wasmtime-wasi-http's hook signature).
type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Sent {
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
    }
}
