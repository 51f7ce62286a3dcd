//! Plain, synchronous building blocks that pipelines are made of. No I/O, no actors, time passed
//! in: every type here is unit-tested on its own.

pub mod codec;
pub mod hourly;
pub mod latest;
pub mod series;
pub mod text;
pub mod topn;
pub mod window;
