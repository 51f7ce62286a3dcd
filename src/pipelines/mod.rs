//! The pipelines: each a [`crate::engine::Processor`] built from [`crate::ops`] blocks.

pub mod decode;
pub mod fans;
pub mod pages;
pub mod pageviews;
pub mod posts;
