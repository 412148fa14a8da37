//! Hostile components no Rust toolchain emits, built from WebAssembly text for the tests:
//! a handler with extra linear memories, a compile bomb, a component padded with a custom
//! section.

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

/// A core module implementing `handle` (it returns no mutations), with `extra` more memories
/// of `extra_pages` 64 KiB pages each, made into a component of the `handler` world.
pub fn handler_with_memories(extra: usize, extra_pages: u32) -> Vec<u8> {
    let memories: String = (0..extra)
        .map(|i| format!("(memory $extra{i} {extra_pages})\n"))
        .collect();
    // `handle` takes the message flattened (13 core values) and returns a pointer to the
    // result: `ok` (discriminant 0) with an empty list, written at address 16.
    let wat = format!(
        r#"(module
            (memory (export "memory") 1)
            {memories}
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
            (func (export "handle")
                (param i32 i32 i32 i64 i32 i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
                (i32.store8 (i32.const 16) (i32.const 0))
                (i32.store (i32.const 20) (i32.const 0))
                (i32.store (i32.const 24) (i32.const 0))
                i32.const 16))"#
    );
    component(&wat)
}

/// A small component whose one function makes the compiler work for a very long time:
/// `locals` locals, all read inside `depth` nested loops (every loop header then carries
/// every local), summed into the first.
pub fn compile_bomb(locals: usize, depth: usize) -> Vec<u8> {
    let mut body = String::new();
    for _ in 0..depth {
        body.push_str("(loop\n");
    }
    body.push_str("(local.get 0)\n");
    for i in 1..locals {
        body.push_str(&format!("(local.get {i}) (i64.add)\n"));
    }
    body.push_str("(local.set 0)\n");
    for i in 1..locals {
        body.push_str(&format!(
            "(local.set {i} (i64.add (local.get {i}) (i64.const 1)))\n"
        ));
    }
    body.push_str("(br_if 0 (i64.eqz (local.get 0)))\n");
    for _ in 0..depth {
        body.push_str(")\n");
    }
    let wat = format!(
        "(component (core module (func (export \"f\") (local {}) {body})))",
        "i64 ".repeat(locals)
    );
    wat::parse_str(&wat).expect("the bomb is valid text")
}

/// `component` with a custom section of `bytes` bytes appended.
pub fn with_custom_section(component: &[u8], name: &str, bytes: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    leb128(&mut payload, name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    payload.resize(payload.len() + bytes, 0x5a);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A core module in text, with the `handler` world's metadata, encoded as a component.
fn component(wat: &str) -> Vec<u8> {
    let mut module = wat::parse_str(wat).expect("valid module text");
    let mut resolve = Resolve::default();
    // Hand-written components of contract 0.1 (its `handle` takes the message alone).
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/v0.1");
    let (package, _) = resolve.push_dir(&wit).expect("the WIT parses");
    let world = resolve
        .select_world(&[package], Some("handler"))
        .expect("world handler");
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)
        .expect("embedding the world");
    ComponentEncoder::default()
        .module(&module)
        .expect("a module the encoder takes")
        .validate(true)
        .encode()
        .expect("encoding the component")
}
