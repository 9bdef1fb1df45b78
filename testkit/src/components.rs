//! Hand-written listener components: a WebAssembly core module in text form, wrapped for the
//! `lockstep:listener@0.1.0` world the way `wit-bindgen` output is, so a test can build
//! components no compiler would emit (a lying allocator, a bad pointer, invalid UTF-8).

use std::path::PathBuf;

/// Where the core module writes a hook's answer: the variant's tag at +0, the string's
/// pointer at +4 and length at +8 (the canonical ABI's layout for `pre-outcome` and
/// `post-outcome`).
pub const RETURN_AREA: u32 = 16;

/// The answer `proceed` (pre-reset) or `success("")` (post-reset): tag 0, empty string.
pub const ANSWER_OK: &str = "(i32.store8 (i32.const 16) (i32.const 0)) \
     (i32.store (i32.const 20) (i32.const 0)) (i32.store (i32.const 24) (i32.const 0)) \
     (i32.const 16)";

/// A bump allocator over the first 128 KiB; the host calls it to pass the event in.
pub const HONEST_REALLOC: &str = "(local $p i32) \
     (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8))) \
     (global.set $heap (i32.add (local.get $p) (local.get 3))) \
     (if (i32.gt_u (global.get $heap) (i32.const 131072)) (then unreachable)) \
     (local.get $p)";

/// The parts of a core module that differ between hostile components.
pub struct CoreModule<'a> {
    /// Extra module fields: tables, data segments, helper functions, imports.
    pub fields: &'a str,
    /// The body of `cabi_realloc(old, old_size, align, new_size) -> ptr`.
    pub realloc: &'a str,
    /// The body of both hooks: `(event fields as 8 × i32) -> return area pointer`.
    pub hook: &'a str,
}

impl CoreModule<'_> {
    /// The module's text.
    pub fn wat(&self) -> String {
        format!(
            "(module\n  {fields}\n  (memory (export \"memory\") 2)\n  \
             (global $heap (mut i32) (i32.const 4096))\n  \
             (func (export \"cabi_realloc\") (param i32 i32 i32 i32) (result i32) {realloc})\n  \
             (func (export \"pre-reset\") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) {hook})\n  \
             (func (export \"post-reset\") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) {hook}))",
            fields = self.fields,
            realloc = self.realloc,
            hook = self.hook,
        )
    }

    /// The module as a component of the listener world (validated by `wit-component`).
    pub fn component(&self) -> Vec<u8> {
        let mut module = wat::parse_str(self.wat()).expect("the WAT parses");
        let mut resolve = wit_parser::Resolve::default();
        // Contract 0.1.0, as the import names in the WAT say: these hand-written components
        // are also the proof that a 0.1.0 component still loads and runs on today's host.
        let wit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit/v0.1.0");
        let (package, _) = resolve.push_dir(&wit).expect("wit/v0.1.0 parses");
        let world = resolve
            .select_world(&[package], Some("listener"))
            .expect("the listener world");
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .expect("component metadata");
        wit_component::ComponentEncoder::default()
            .module(&module)
            .expect("a core module for the listener world")
            .validate(true)
            .encode()
            .expect("the component encodes")
    }
}

/// The body of a function with `locals` locals (after 8 parameters), all live across a loop:
/// the shape that makes Cranelift's register allocator slow.
pub fn live_locals_body(locals: usize) -> String {
    let mut body = format!("(local{})", " i32".repeat(locals));
    for k in 8..8 + locals {
        body.push_str(&format!(" (local.set {k} (i32.const {k}))"));
    }
    body.push_str(" (loop $l");
    for k in 8..8 + locals {
        let next = if k + 1 < 8 + locals { k + 1 } else { 8 };
        body.push_str(&format!(
            " (local.set {k} (i32.add (local.get {k}) (local.get {next})))"
        ));
    }
    body.push_str(" (br_if $l (local.get 0))) (i32.const 0)");
    body
}

/// A component whose hooks have `locals` live locals each, plus `extra` functions like them.
pub fn many_locals(locals: usize, extra: usize) -> Vec<u8> {
    let body = live_locals_body(locals);
    let params = "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)";
    let fields: String = (0..extra)
        .map(|i| format!("(func (export \"extra-{i}\") {params} {body})\n"))
        .collect();
    CoreModule {
        fields: &fields,
        realloc: "(i32.const 4096)",
        hook: &body,
    }
    .component()
}
