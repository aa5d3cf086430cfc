//! `wasi:io` for filters, without blocking.
//!
//! wasmtime-wasi's synchronous `wasi:io` enters a tokio runtime for every blocking
//! stream operation, which panics on a runtime worker, and hook calls always run on
//! one. Filters only ever see streams that are always ready (stderr kept in memory,
//! stdout discarded, stdin empty), so each operation here polls wasmtime-wasi's own
//! async implementation once: it completes at once, or the filter tried to wait on
//! something that is not ready (a clock, say), which a hook may not do: that traps
//! with a message saying so, and the failure policy handles it.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    Host as AsyncHost, HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

use crate::HostState;

const BLOCKED: &str = "the filter tried to block on I/O or a timer inside a hook; \
                       hooks must not wait (return a delay action instead)";

/// Run a future that must be ready on its first poll.
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn blocked() -> wasmtime::Error {
    wasmtime::Error::msg(BLOCKED)
}

fn now_stream<T>(f: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    now(f).unwrap_or_else(|| Err(StreamError::Trap(blocked())))
}

fn now_trap<T>(f: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    now(f).unwrap_or_else(|| Err(blocked()))
}

/// The resource table, seen through non-blocking `wasi:io`.
pub(crate) struct NonBlocking<'a>(&'a mut ResourceTable);

pub(crate) struct HasNonBlocking;

impl HasData for HasNonBlocking {
    type Data<'a> = NonBlocking<'a>;
}

/// Replace wasmtime-wasi's `wasi:io/poll` and `wasi:io/streams` in `linker`.
pub(crate) fn shadow(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, HasNonBlocking>(linker, |s| NonBlocking(s.table()))?;
    streams::add_to_linker::<HostState, HasNonBlocking>(linker, |s| NonBlocking(s.table()))?;
    linker.allow_shadowing(false);
    Ok(())
}

impl poll::Host for NonBlocking<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        now_trap(async_poll::Host::poll(self.0, pollables))
    }
}

impl poll::HostPollable for NonBlocking<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        now_trap(async_poll::HostPollable::ready(self.0, pollable))
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        now_trap(async_poll::HostPollable::block(self.0, pollable))
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for NonBlocking<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(AsyncHost::convert_stream_error(self.0, err)?.into())
    }
}

type Out = Resource<streams::OutputStream>;
type In = Resource<streams::InputStream>;

impl streams::HostOutputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Out) -> wasmtime::Result<()> {
        now_trap(AsyncOutput::drop(self.0, stream))
    }
    fn check_write(&mut self, stream: Out) -> StreamResult<u64> {
        AsyncOutput::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Out, bytes: Vec<u8>) -> StreamResult<()> {
        AsyncOutput::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(&mut self, stream: Out, bytes: Vec<u8>) -> StreamResult<()> {
        now_stream(AsyncOutput::blocking_write_and_flush(self.0, stream, bytes))
    }
    fn blocking_write_zeroes_and_flush(&mut self, stream: Out, len: u64) -> StreamResult<()> {
        now_stream(AsyncOutput::blocking_write_zeroes_and_flush(
            self.0, stream, len,
        ))
    }
    fn subscribe(&mut self, stream: Out) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncOutput::subscribe(self.0, stream)
    }
    fn write_zeroes(&mut self, stream: Out, len: u64) -> StreamResult<()> {
        AsyncOutput::write_zeroes(self.0, stream, len)
    }
    fn flush(&mut self, stream: Out) -> StreamResult<()> {
        AsyncOutput::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Out) -> StreamResult<()> {
        now_stream(AsyncOutput::blocking_flush(self.0, stream))
    }
    fn splice(&mut self, dst: Out, src: In, len: u64) -> StreamResult<u64> {
        AsyncOutput::splice(self.0, dst, src, len)
    }
    fn blocking_splice(&mut self, dst: Out, src: In, len: u64) -> StreamResult<u64> {
        now_stream(AsyncOutput::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: In) -> wasmtime::Result<()> {
        now_trap(AsyncInput::drop(self.0, stream))
    }
    fn read(&mut self, stream: In, len: u64) -> StreamResult<Vec<u8>> {
        AsyncInput::read(self.0, stream, len)
    }
    fn blocking_read(&mut self, stream: In, len: u64) -> StreamResult<Vec<u8>> {
        now_stream(AsyncInput::blocking_read(self.0, stream, len))
    }
    fn skip(&mut self, stream: In, len: u64) -> StreamResult<u64> {
        AsyncInput::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: In, len: u64) -> StreamResult<u64> {
        now_stream(AsyncInput::blocking_skip(self.0, stream, len))
    }
    fn subscribe(&mut self, stream: In) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncInput::subscribe(self.0, stream)
    }
}
