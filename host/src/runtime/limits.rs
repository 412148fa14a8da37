//! Per-call resource caps for a plugin instance, remembering which cap a call ran into.

use wasmtime::ResourceLimiter;

/// What a single plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, bytes, in total across all of the call's memories.
    pub memory_bytes: usize,
    /// Table elements, in total across all of the call's tables.
    pub table_elements: usize,
    /// Core instances a component may create (a Rust plugin needs 3-4).
    pub instances: usize,
    /// Linear memories (a plugin needs 1; 2 leave room for a toolchain that adds one).
    pub memories: usize,
    /// Tables (a Rust plugin has 2-3, counting the component's own shims).
    pub tables: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 16,
            memories: 2,
            tables: 8,
        }
    }
}

/// A `ResourceLimiter` that keeps running totals across an instance's memories and tables and
/// records the cap that was hit, so the host can say "memory limit exceeded" instead of the
/// guest's generic abort.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) exceeded: Option<String>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            memory_bytes: 0,
            table_elements: 0,
            exceeded: None,
        }
    }

    /// Start over for a new call.
    pub fn reset(&mut self, limits: Limits) {
        *self = Self::new(limits);
    }

    /// Linear memory the call holds now, in total.
    #[cfg(test)]
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory arrives with `current` 0: its initial size counts like a growth.
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.limits.memory_bytes {
            self.exceeded = Some(format!(
                "memory limit of {} MiB exceeded (the call's memories would hold {} MiB)",
                self.limits.memory_bytes >> 20,
                total.div_ceil(1 << 20)
            ));
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.table_elements - current.min(self.table_elements) + desired;
        if total > self.limits.table_elements {
            self.exceeded = Some(format!(
                "table limit of {} elements exceeded",
                self.limits.table_elements
            ));
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn limiter(memory_mib: usize) -> Limiter {
        Limiter::new(Limits {
            memory_bytes: memory_mib * MIB,
            ..Limits::default()
        })
    }

    #[test]
    fn memory_is_capped_across_all_memories() {
        let mut limiter = limiter(64);
        // Two memories of 40 MiB: the second one is refused, and the cap is named.
        assert!(limiter.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(!limiter.memory_growing(0, 40 * MIB, None).unwrap());
        let exceeded = limiter.exceeded.clone().unwrap();
        assert!(exceeded.contains("64 MiB exceeded"), "{exceeded}");
        assert!(exceeded.contains("80 MiB"), "{exceeded}");
        // A smaller second memory fits, and growing the first counts only the difference.
        assert!(limiter.memory_growing(0, 16 * MIB, None).unwrap());
        assert!(limiter.memory_growing(40 * MIB, 48 * MIB, None).unwrap());
        assert_eq!(limiter.memory_bytes(), 64 * MIB);
        assert!(!limiter.memory_growing(16 * MIB, 17 * MIB, None).unwrap());
    }

    #[test]
    fn a_single_memory_may_use_the_whole_cap_and_no_more() {
        let mut limiter = limiter(64);
        assert!(limiter.memory_growing(0, MIB, None).unwrap());
        assert!(limiter.memory_growing(MIB, 64 * MIB, None).unwrap());
        assert!(limiter.exceeded.is_none());
        assert!(
            !limiter
                .memory_growing(64 * MIB, 64 * MIB + 65536, None)
                .unwrap()
        );
        assert!(limiter.exceeded.is_some());
    }

    #[test]
    fn tables_are_capped_across_all_tables() {
        let mut limiter = limiter(64);
        assert!(limiter.table_growing(0, 15_000, None).unwrap());
        assert!(!limiter.table_growing(0, 6_000, None).unwrap());
        assert!(
            limiter
                .exceeded
                .as_deref()
                .unwrap()
                .contains("20000 elements")
        );
    }

    #[test]
    fn reset_starts_a_new_call() {
        let mut limiter = limiter(64);
        assert!(!limiter.memory_growing(0, 65 * MIB, None).unwrap());
        limiter.reset(Limits::default());
        assert!(limiter.exceeded.is_none());
        assert_eq!(limiter.memory_bytes(), 0);
        assert!(limiter.memory_growing(0, 64 * MIB, None).unwrap());
    }

    #[test]
    fn counts_are_the_configured_ones() {
        let limiter = Limiter::new(Limits::default());
        assert_eq!(
            (limiter.instances(), limiter.memories(), limiter.tables()),
            (16, 2, 8)
        );
    }
}
