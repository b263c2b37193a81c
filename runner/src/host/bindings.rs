//! Host bindings generated from `sdk/wit/stage.wit`: the plain `stage`
//! world, and the `service-stage` world that adds `sweep` (sharing the
//! plain world's interfaces and types).
#![allow(unsafe_code, clippy::all, missing_docs)]

pub mod plain {
    wasmtime::component::bindgen!({
        world: "stage",
        path: "../sdk/wit",
    });
}

pub mod service {
    wasmtime::component::bindgen!({
        world: "service-stage",
        path: "../sdk/wit",
        with: {
            "keepsake:stage/types": super::plain::keepsake::stage::types,
            "keepsake:stage/host": super::plain::keepsake::stage::host,
        },
    });
}

pub use plain::*;
