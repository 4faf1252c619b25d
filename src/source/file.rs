//! Files and stdin: framing bytes into records.
//!
//! Two framings, chosen per file from its first bytes:
//! * **lines** (JSON lines, the format every supported system can write): each line is one
//!   input, streamed in chunks, so files of any size run in bounded memory;
//! * **documents** (pretty-printed JSON, a JSON array, a CloudTrail delivery file spread over
//!   lines, several concatenated documents): the file is read whole and split into top-level
//!   JSON values.
//!
//! A file is in line framing when its first non-blank line is a complete JSON value (or is not
//! JSON at all, so each line gets its own reject). Gzip is recognized by its magic bytes, not
//! by the file name.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Read size for streamed line framing.
const CHUNK: usize = 1 << 20;

/// Where to read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    Path(PathBuf),
}

impl Input {
    /// `-` means stdin.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Input::Stdin
        } else {
            Input::Path(PathBuf::from(s))
        }
    }

    /// The name used in locations (`file:line`).
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_string(),
            Input::Path(p) => p.display().to_string(),
        }
    }

    /// Size on disk, when known (for progress).
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::Path(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        }
    }
}

/// One framed input handed to the caller.
#[derive(Debug)]
pub enum Framed<'a> {
    /// A line or a top-level document; `line` is where it starts (1-based), `base` its byte
    /// offset in the (decompressed) stream.
    Record {
        /// The bytes.
        bytes: &'a [u8],
        /// 1-based line of the first byte.
        line: u64,
        /// For document framing, the text the record came from, to map offsets inside the
        /// record to lines; `None` for line framing (the record is on one line).
        doc: Option<DocLines<'a>>,
    },
    /// A line longer than the limit; its bytes were skipped.
    Oversize {
        /// 1-based line.
        line: u64,
        /// Its length in bytes (when `cut`: how much was read).
        len: u64,
        /// A document read no further than the limit: the rest of the input was not read.
        cut: bool,
    },
    /// The document framing could not find a JSON value; the text up to the next line that
    /// starts a document was skipped.
    Unparseable {
        /// 1-based line where the skipped text starts (the message says where the parse
        /// failed).
        line: u64,
        /// The parser's message.
        message: String,
        /// The skipped text.
        bytes: &'a [u8],
    },
}

/// Maps byte offsets inside a record read in document framing to line numbers.
#[derive(Clone, Copy, Debug)]
pub struct DocLines<'a> {
    record: &'a [u8],
    line: u64,
}

impl DocLines<'_> {
    /// The 1-based line of `offset` (relative to the record start).
    pub fn line_of(&self, offset: usize) -> u64 {
        let end = offset.min(self.record.len());
        self.line + memchr::memchr_iter(b'\n', &self.record[..end]).count() as u64
    }
}

/// Counts bytes read from the underlying file (compressed bytes for gzip), for progress.
#[derive(Clone, Default, Debug)]
pub struct ReadCounter(Arc<AtomicU64>);

impl ReadCounter {
    /// Bytes read so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counting<R> {
    inner: R,
    counter: ReadCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens an input, transparently decompressing gzip.
pub fn open(input: &Input, counter: &ReadCounter) -> io::Result<Box<dyn Read>> {
    let raw: Box<dyn Read> = match input {
        Input::Stdin => Box::new(io::stdin().lock()),
        Input::Path(p) => Box::new(File::open(p)?),
    };
    let mut raw = Counting {
        inner: raw,
        counter: counter.clone(),
    };
    // Peek at the magic bytes without a BufReader: plain input is read straight into the
    // framing buffer, saving a copy of every byte.
    let mut head = [0u8; 2];
    let mut n = 0;
    while n < head.len() {
        match raw.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let chained = io::Cursor::new(head[..n].to_vec()).chain(raw);
    Ok(if head[..n] == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            CHUNK,
            MultiGzDecoder::new(BufReader::with_capacity(CHUNK, chained)),
        ))
    } else {
        Box::new(chained)
    })
}

/// A read buffer zeroed once and reused: on stable Rust, reading through wrapped readers
/// would otherwise initialize every chunk before the read overwrites it.
struct Window {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Window {
    fn new() -> Self {
        Window {
            buf: vec![0; CHUNK * 2],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more after the unconsumed bytes (moved to the front first, growing the buffer
    /// when they fill it); 0 at end of input.
    fn fill(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len();
            self.buf.resize(n * 2, 0);
        }
        loop {
            match reader.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Frames an input into records and hands each to `f`, until `f` breaks. Returns the
/// decompressed bytes read.
pub fn frame(
    mut reader: impl Read,
    max_record: usize,
    mut f: impl FnMut(Framed<'_>) -> ControlFlow<()>,
) -> io::Result<u64> {
    let mut w = Window::new();
    // Read until the first complete line (or EOF) to choose the framing.
    let mut eof = false;
    let mut scanned = 0;
    let first_line_end = loop {
        if let Some(i) = memchr::memchr(b'\n', &w.data()[scanned..]) {
            let candidate = scanned + i;
            if w.data()[..candidate].iter().all(is_json_space) {
                // Leading blank lines: keep looking.
                scanned = candidate + 1;
                continue;
            }
            break candidate;
        }
        scanned = w.data().len();
        if scanned > max_record {
            break scanned;
        }
        if w.fill(&mut reader)? == 0 {
            eof = true;
            break w.data().len();
        }
    };
    let first = &w.data()[..first_line_end];
    let start = first.iter().position(|b| !is_json_space(b));
    let lines = match start.map(|s| first[s]) {
        None => true,
        Some(b'[') => false,
        Some(b'{') => serde_json::from_slice::<IgnoredAny>(first).is_ok(),
        Some(_) => true,
    };
    if lines {
        frame_lines(reader, w, eof, max_record, &mut f)
    } else {
        // Documents (a JSON array, pretty-printed values) are parsed whole, so they are read
        // whole, but never more than the record limit (a compressed file can expand a
        // thousand times): a larger one is one oversize record ("more than" the limit).
        // The window's buffer becomes the document's (no copy of what was read already).
        let (start, end) = (w.start, w.end);
        let mut all = std::mem::take(&mut w.buf);
        all.truncate(end);
        all.drain(..start);
        if !eof {
            let room = (max_record + 1).saturating_sub(all.len()) as u64;
            (&mut reader).take(room).read_to_end(&mut all)?;
        }
        if all.len() > max_record {
            // Not read further: the rest belongs to the same document, and reading it could
            // mean decompressing a bomb.
            let len = all.len() as u64;
            let _ = f(Framed::Oversize {
                line: 1,
                len,
                cut: true,
            });
            return Ok(len);
        }
        frame_documents(&all, &mut f);
        Ok(all.len() as u64)
    }
}

fn frame_lines(
    mut reader: impl Read,
    mut w: Window,
    mut eof: bool,
    max_record: usize,
    f: &mut impl FnMut(Framed<'_>) -> ControlFlow<()>,
) -> io::Result<u64> {
    let mut line: u64 = 1;
    let mut total: u64 = 0;
    // Set while skipping the rest of an oversize line: (its line number, bytes so far).
    let mut skipping: Option<(u64, u64)> = None;
    loop {
        let data = &w.buf[w.start..w.end];
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let end = pos + i;
            let flow = if let Some((l, n)) = skipping.take() {
                f(Framed::Oversize {
                    line: l,
                    len: n + end as u64,
                    cut: false,
                })
            } else {
                emit_line(&data[pos..end], line, max_record, f)
            };
            line += 1;
            pos = end + 1;
            if flow.is_break() {
                return Ok(total + pos as u64);
            }
        }
        total += pos as u64;
        w.start += pos;
        if w.end - w.start > max_record {
            let (l, n) = skipping.unwrap_or((line, 0));
            skipping = Some((l, n + (w.end - w.start) as u64));
            total += (w.end - w.start) as u64;
            w.start = w.end;
        }
        if eof {
            break;
        }
        if w.fill(&mut reader)? == 0 {
            eof = true;
        }
    }
    let rest = w.data();
    total += rest.len() as u64;
    if let Some((l, n)) = skipping {
        let _ = f(Framed::Oversize {
            line: l,
            len: n + rest.len() as u64,
            cut: false,
        });
    } else if !rest.is_empty() {
        let _ = emit_line(rest, line, max_record, f);
    }
    Ok(total)
}

fn emit_line(
    bytes: &[u8],
    line: u64,
    max_record: usize,
    f: &mut impl FnMut(Framed<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if bytes.iter().all(is_json_space) {
        return ControlFlow::Continue(());
    }
    if bytes.len() > max_record {
        return f(Framed::Oversize {
            line,
            len: bytes.len() as u64,
            cut: false,
        });
    }
    f(Framed::Record {
        bytes,
        line,
        doc: None,
    })
}

/// Splits a whole document into its top-level JSON values.
fn frame_documents(text: &[u8], f: &mut impl FnMut(Framed<'_>) -> ControlFlow<()>) {
    let mut pos = 0;
    let mut line: u64 = 1;
    while pos < text.len() {
        let mut stream =
            serde_json::Deserializer::from_slice(&text[pos..]).into_iter::<&RawValue>();
        match stream.next() {
            None => break,
            Some(Ok(value)) => {
                let bytes = value.get().as_bytes();
                let vstart = pos + (bytes.as_ptr() as usize - text[pos..].as_ptr() as usize);
                line += count_lines(&text[pos..vstart]);
                let flow = f(Framed::Record {
                    bytes,
                    line,
                    doc: Some(DocLines {
                        record: bytes,
                        line,
                    }),
                });
                if flow.is_break() {
                    return;
                }
                let vend = pos + stream.byte_offset();
                line += count_lines(&text[vstart..vend]);
                pos = vend;
            }
            Some(Err(e)) => {
                // Skip to the next line that starts a document, and go on from there.
                let err_line = line + e.line().saturating_sub(1) as u64;
                let from = pos;
                let mut next = text.len();
                let mut search = pos;
                while let Some(i) = memchr::memchr(b'\n', &text[search..]) {
                    let nl = search + i + 1;
                    if nl < text.len() && matches!(text[nl], b'{' | b'[') {
                        next = nl;
                        break;
                    }
                    search = nl;
                }
                // The skipped text must include the failing position.
                let skipped = &text[from..next];
                // Reported where the skipped text starts (lines only go forward), with the
                // parser's position made absolute (serde_json counts from `pos`).
                let message = e.to_string();
                let message = match message.rfind(" at line ") {
                    Some(i) => {
                        format!("{} at line {err_line} column {}", &message[..i], e.column())
                    }
                    None => message,
                };
                let flow = f(Framed::Unparseable {
                    line,
                    message,
                    bytes: skipped,
                });
                if flow.is_break() {
                    return;
                }
                line += count_lines(skipped);
                pos = next;
            }
        }
    }
}

/// JSON's whitespace. A line of other ASCII whitespace (a form feed) is not blank: it is
/// handed on, and rejected as a record, rather than skipped unreported.
fn is_json_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn count_lines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

/// Expands command-line inputs: a directory stands for the files in it, sorted.
pub fn expand(inputs: &[String]) -> io::Result<Vec<Input>> {
    let mut out = Vec::new();
    for s in inputs {
        let input = Input::parse(s);
        match &input {
            Input::Path(p) if p.is_dir() => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                out.extend(files.into_iter().map(Input::Path));
            }
            _ => out.push(input),
        }
    }
    Ok(out)
}

/// Convenience for tests and tools: every framed record of a file, as owned bytes and line.
pub fn read_records(path: &Path, max_record: usize) -> io::Result<Vec<(Vec<u8>, u64)>> {
    let counter = ReadCounter::default();
    let reader = open(&Input::Path(path.to_path_buf()), &counter)?;
    let mut out = Vec::new();
    frame(reader, max_record, |fr| {
        if let Framed::Record { bytes, line, .. } = fr {
            out.push((bytes.to_vec(), line));
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        frame(text, max, |fr| {
            out.push(match fr {
                Framed::Record { bytes, line, .. } => {
                    format!("{line}:{}", String::from_utf8_lossy(bytes))
                }
                Framed::Oversize { line, len, .. } => format!("{line}:oversize {len}"),
                Framed::Unparseable { line, .. } => format!("{line}:unparseable"),
            });
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("framing an in-memory input cannot fail: {e}"));
        out
    }

    #[test]
    fn json_lines_are_framed_per_line_with_numbers() {
        let got = collect(b"{\"a\":1}\n\n{\"b\":2}\r\nnot json\n{\"c\":3}", 1 << 20);
        assert_eq!(
            got,
            ["1:{\"a\":1}", "3:{\"b\":2}\r", "4:not json", "5:{\"c\":3}"]
        );
    }

    #[test]
    fn a_compressed_document_is_read_no_further_than_the_record_limit() {
        // 64 MiB of a JSON array compress to about 64 KiB: read whole, it would take all of
        // it in memory (a gzip bomb takes gigabytes the same way).
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"[{\"a\":1},").expect("gzip");
        let pad = vec![b' '; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&pad).expect("gzip");
        }
        gz.write_all(b"{\"b\":2}]\n").expect("gzip");
        let bomb = gz.finish().expect("gzip");
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bomb.json.gz");
        std::fs::write(&path, bomb).expect("write");
        let counter = ReadCounter::default();
        let reader = super::open(&Input::Path(path), &counter).expect("open");
        let mut got = Vec::new();
        let read = frame(reader, 1 << 20, |fr| {
            got.push(match fr {
                Framed::Oversize { line, len, cut } => format!("{line}:oversize {len} {cut}"),
                _ => "other".to_string(),
            });
            ControlFlow::Continue(())
        })
        .expect("framed");
        // Read no further than the limit, or the framing window (2 MiB) already filled while
        // looking for the first line, whichever is more: not 64 MiB.
        assert_eq!(got, [format!("1:oversize {read} true")]);
        assert!(read > 1 << 20 && read <= 2 << 20, "read {read} bytes");
    }

    #[test]
    fn pretty_documents_and_arrays_are_framed_as_values() {
        let text = b"\n{\n  \"a\": 1\n}\n[\n {\"b\": 2},\n {\"c\": 3}\n]\n";
        let got = collect(text, 1 << 20);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("2:{"), "{got:?}");
        assert!(got[1].starts_with("5:["), "{got:?}");
    }

    #[test]
    fn a_line_of_a_form_feed_is_a_record_not_a_blank_line() {
        let got = collect(b"{\"a\": 1}\n\x0c\n\n{\"b\": 2}\n", 1 << 20);
        assert_eq!(got, ["1:{\"a\": 1}", "2:\u{c}", "4:{\"b\": 2}"]);
    }

    #[test]
    fn a_broken_document_is_skipped_to_the_next_one() {
        // The skipped text is reported where it starts (line 1; the parser stopped at line
        // 3, which its message gives), so lines only go forward.
        let text = b"{\n \"a\": \n}\n{\"b\": 2}\n";
        let got = collect(text, 1 << 20);
        assert_eq!(got, ["1:unparseable", "4:{\"b\": 2}"]);
    }

    #[test]
    fn oversize_lines_are_reported_not_buffered() {
        let mut text = b"{\"a\":1}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend(b"\n{\"b\":2}\n");
        let got = collect(&text, 1024);
        assert_eq!(got, ["1:{\"a\":1}", "2:oversize 5000", "3:{\"b\":2}"]);
    }

    #[test]
    fn doc_lines_map_offsets() {
        let rec = b"[\n{\"a\":1},\n{\"b\":2}\n]";
        let d = DocLines {
            record: rec,
            line: 10,
        };
        assert_eq!(d.line_of(0), 10);
        assert_eq!(d.line_of(11), 12);
    }
}
