//! The reading side of a replay, on its own thread: frames and decodes every input in order
//! and hands events and rejects over in batches, with the records' sources and bytes for the
//! metrics.

use super::*;

pub(super) const MAX_REJECT_RECORD: usize = 64 << 10;

/// Records per batch handed from the decoding thread to the detecting one.
pub(super) const BATCH: usize = 256;
/// Batches in flight between the two threads.
pub(super) const IN_FLIGHT: usize = 32;

/// Records of a batch by source (the last slot: not recognised) and their bytes.
#[derive(Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) sources: [u64; Source::ALL.len() + 1],
    pub(super) bytes: u64,
}

impl Tally {
    pub(super) fn add(&mut self, source: Option<Source>, records: u64, bytes: usize) {
        self.sources[source.map_or(Source::ALL.len(), |s| s as usize)] += records;
        self.bytes += bytes as u64;
    }
}

/// What the decoding thread hands over, in input order.
pub(super) enum Msg {
    /// The events and rejects of consecutive records of input number `input`.
    Batch {
        input: usize,
        records: u64,
        items: Vec<Item>,
        /// When the batch was handed over (Unix microseconds): its records' arrival.
        arrival: u64,
        /// Records by source, and bytes, for the metrics.
        tally: Tally,
    },
    /// Input number `input` was read to its end (`bytes`, decompressed), or failed.
    Done {
        input: usize,
        result: io::Result<u64>,
    },
    /// Input number `input` could not be opened.
    Unopened { input: usize, error: io::Error },
}

// Events are the common case; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Item {
    Event(Event),
    Reject {
        line: u64,
        reject: Reject,
        /// The rejected text, cut at `MAX_REJECT_RECORD` (only with a rejects file).
        text: Vec<u8>,
        truncated: bool,
    },
}

/// The decoding thread: frames and decodes every input in order and sends the results in
/// batches, until the inputs end or the receiver goes away.
pub(super) fn decode_inputs(
    decoder: &Decoder,
    inputs: &[Input],
    keep_text: bool,
    tx: &std::sync::mpsc::SyncSender<Msg>,
    bar: Option<ProgressBar>,
) {
    let mut results: Vec<Decoded> = Vec::with_capacity(64);
    let mut done_bytes = 0u64;
    let mut records_total = 0u64;
    for (input, source) in inputs.iter().enumerate() {
        let counter = ReadCounter::default();
        let reader = match file::open(source, &counter) {
            Ok(r) => r,
            Err(error) => {
                if tx.send(Msg::Unopened { input, error }).is_err() {
                    return;
                }
                continue;
            }
        };
        // A pipe may be a live stream: hand each of its records over as soon as it is read.
        let batch_size = if *source == Input::Stdin { 1 } else { BATCH };
        let mut max_time = decoder.max_event_time();
        let mut records = 0u64;
        let mut items = Vec::with_capacity(BATCH + 8);
        let mut tally = Tally::default();
        let mut since_tick = 0u32;
        let mut gone = false;
        let res = file::frame(reader, decoder.max_record_bytes(), |framed| {
            records += decode_framed(
                decoder,
                framed,
                max_time,
                keep_text,
                &mut results,
                &mut items,
                &mut tally,
            );
            since_tick += 1;
            if since_tick == 4096 {
                since_tick = 0;
                // A long stdin stream must not judge new records against a stale clock.
                max_time = decoder.max_event_time();
                if let Some(bar) = &bar {
                    bar.set_position(done_bytes + counter.get());
                    bar.set_message(format!("{} records", thousands(records_total + records)));
                }
            }
            if records >= batch_size as u64 || items.len() >= batch_size {
                records_total += records;
                let batch = Msg::Batch {
                    input,
                    records: std::mem::take(&mut records),
                    items: std::mem::replace(&mut items, Vec::with_capacity(BATCH + 8)),
                    arrival: metrics::now_micros(),
                    tally: std::mem::take(&mut tally),
                };
                if tx.send(batch).is_err() {
                    gone = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if gone {
            return;
        }
        records_total += records;
        if (records > 0 || !items.is_empty())
            && tx
                .send(Msg::Batch {
                    input,
                    records,
                    items,
                    arrival: metrics::now_micros(),
                    tally,
                })
                .is_err()
        {
            return;
        }
        done_bytes += counter.get();
        if tx.send(Msg::Done { input, result: res }).is_err() {
            return;
        }
    }
}

/// Decodes one framed record into `items`; returns the records it counts as.
pub(super) fn decode_framed(
    decoder: &Decoder,
    framed: Framed<'_>,
    max_time: crate::time::Timestamp,
    keep_text: bool,
    results: &mut Vec<Decoded>,
    items: &mut Vec<Item>,
    tally: &mut Tally,
) -> u64 {
    match framed {
        Framed::Record { bytes, line, doc } => {
            results.clear();
            let n = decoder.decode_with_bound(bytes, max_time, results) as u64;
            tally.add(decoder.source_of(results), n, bytes.len());
            for r in results.drain(..) {
                match r {
                    Ok(event) => items.push(Item::Event(event)),
                    Err(reject) => {
                        let line = doc.map_or(line, |d| d.line_of(reject.offset));
                        items.push(reject_item(line, reject, keep_text, bytes));
                    }
                }
            }
            n
        }
        Framed::Oversize { line, len, cut } => {
            let reject = Reject {
                reason: RejectReason::TooLarge,
                message: if cut {
                    // A document is read no further than the limit (see `file::frame`).
                    format!(
                        "document is more than decode.max_record_bytes ({}); the rest of the input was not read",
                        decoder.max_record_bytes()
                    )
                } else {
                    format!(
                        "line is {len} bytes; decode.max_record_bytes is {}",
                        decoder.max_record_bytes()
                    )
                },
                offset: 0,
                len: 0,
                index: None,
            };
            items.push(reject_item(line, reject, keep_text, b""));
            tally.add(decoder.format().source(), 1, len as usize);
            1
        }
        Framed::Unparseable {
            line,
            message,
            bytes,
        } => {
            let reject = Reject {
                reason: RejectReason::MalformedJson,
                message: format!("invalid JSON: {message}"),
                offset: 0,
                len: bytes.len(),
                index: None,
            };
            tally.add(decoder.format().source(), 1, bytes.len());
            items.push(reject_item(line, reject, keep_text, bytes));
            1
        }
    }
}

/// A reject with the part of `bytes` it points at (cut at `MAX_REJECT_RECORD`), kept only
/// when there is a rejects file to write it to.
pub(super) fn reject_item(line: u64, reject: Reject, keep: bool, bytes: &[u8]) -> Item {
    let (text, truncated) = if keep {
        reject_text(&reject, bytes)
    } else {
        (Vec::new(), false)
    };
    Item::Reject {
        line,
        reject,
        text,
        truncated,
    }
}

pub(super) fn reject_text(reject: &Reject, bytes: &[u8]) -> (Vec<u8>, bool) {
    let end = if reject.len == 0 {
        bytes.len()
    } else {
        (reject.offset + reject.len).min(bytes.len())
    };
    let text = bytes.get(reject.offset.min(end)..end).unwrap_or_default();
    // Masked whole, then cut: a secret across the cut is masked, not left half there.
    let text = crate::redact::redact(text);
    if text.len() > MAX_REJECT_RECORD {
        (text[..MAX_REJECT_RECORD].to_vec(), true)
    } else {
        (text.into_owned(), false)
    }
}
