//! Per-call resource caps for a plugin instance, remembering which cap a call ran into.

use wasmtime::ResourceLimiter;

/// What a single plugin call may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory, bytes, across all of the instance's memories.
    pub memory_bytes: usize,
    /// Elements per table.
    pub table_elements: usize,
    /// Core instances, tables and memories a component may create.
    pub instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 32,
        }
    }
}

/// A `ResourceLimiter` that also records the cap that was hit, so the host can say
/// "memory limit exceeded" instead of the guest's generic abort.
pub struct Limiter {
    limits: Limits,
    pub(crate) exceeded: Option<String>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.exceeded = Some(format!(
                "memory limit of {} MiB exceeded (asked for {} MiB)",
                self.limits.memory_bytes >> 20,
                desired >> 20
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.exceeded = Some(format!(
                "table limit of {} elements exceeded",
                self.limits.table_elements
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.instances
    }

    fn memories(&self) -> usize {
        self.limits.instances
    }
}
