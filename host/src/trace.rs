//! Trace context across both flows: the W3C `traceparent` an order carries from `POST /orders`
//! through the outbox and Kafka to the plugin call, the batch and the status update, so that
//! one order's path is one `trace_id` in the logs.

use std::fmt;

use crate::domain::Header;

/// The header (HTTP and Kafka) that carries the context.
pub const TRACEPARENT: &str = "traceparent";

/// `00-<trace-id>-<parent-id>-<flags>` (W3C Trace Context, level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A context as received; `None` when it is not one (which starts a new trace, as the
    /// specification asks). Versions above 00 are read by their version-00 prefix.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let mut parts = raw.splitn(5, '-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && hex(span, 16)
            && hex(flags, 2)
            && (version != "00" || rest.is_none());
        if !valid {
            return None;
        }
        let parsed = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    /// A new trace (sampled).
    pub fn root() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().as_u128(),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// A span of the same trace, as its child.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The context of the first well-formed `traceparent` header.
    pub fn from_headers(headers: &[Header]) -> Option<Self> {
        headers
            .iter()
            .filter(|h| h.key == TRACEPARENT)
            .find_map(|h| Self::parse(std::str::from_utf8(h.value.as_deref()?).ok()?))
    }

    /// A child whose span id is derived from this context and `key`: every process that
    /// derives it for the same hop gets the same span (the ingest writes it on the status
    /// event before commit and exports the span after).
    pub fn hop(&self, key: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(self.trace_id.to_be_bytes())
            .chain_update(self.span_id.to_be_bytes())
            .chain_update(key)
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self {
            span_id: u64::from_be_bytes(first).max(1),
            ..*self
        }
    }

    /// The header carrying this context: the receiver's spans become this span's children.
    pub fn header(&self) -> Header {
        Header::text(TRACEPARENT, self.to_string())
    }

    /// The trace id, 32 hex digits: what the logs carry as `trace_id`.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn new_span_id() -> u64 {
    // Never zero, which the specification reserves.
    (uuid::Uuid::new_v4().as_u128() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_parse_print_and_descend() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(raw).unwrap();
        assert_eq!(parent.to_string(), raw);
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_string(), raw);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
        // A later version is read by its version-00 fields.
        assert!(TraceParent::parse(&format!("{}-extra", raw.replacen("00", "01", 1))).is_some());
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        // A hop is a child, the same for the same key, another for another key.
        let hop = parent.hop(b"3/17");
        assert_eq!(hop.trace_id(), parent.trace_id());
        assert_ne!(hop.span_id(), parent.span_id());
        assert_eq!(hop, parent.hop(b"3/17"));
        assert_ne!(hop, parent.hop(b"3/18"));
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let headers = vec![
            Header::text(TRACEPARENT, "garbage"),
            Header::text(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ];
        assert!(TraceParent::from_headers(&headers).is_some());
    }
}
