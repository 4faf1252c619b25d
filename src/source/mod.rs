//! Sources: where records come from and how they are framed. Files and stdin for `replay`;
//! Kafka for `run`.

pub mod file;
