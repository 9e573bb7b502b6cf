//! COPY rows in the text and CSV formats: split into fields and written back; never a
//! panic, and a field's value written back reads as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phigate::protocol::copy::{CopyFormat, fields, put_value};

fuzz_target!(|data: &[u8]| {
    let Some((&options, row)) = data.split_first() else {
        return;
    };
    let mut format = CopyFormat::text();
    if options & 1 == 1 {
        format.csv = true;
        format.delimiter = b',';
        format.null = String::new();
    }
    if options & 2 == 2 {
        format.delimiter = b'|';
    }
    if options & 4 == 4 {
        format.escape = b'\\';
    }
    // a row never holds a line end: the COPY stream is split into rows first
    if row.contains(&b'\n') || row.contains(&b'\r') {
        return;
    }
    for field in fields(row, &format) {
        let Some(value) = field.value else { continue };
        let mut written = Vec::new();
        put_value(&value, &format, &mut written);
        if written.contains(&b'\n') || written.contains(&b'\r') {
            continue; // (a CSV value may span lines; the row splitter handles those)
        }
        let again = fields(&written, &format);
        assert_eq!(again.len(), 1, "{written:?}");
        assert_eq!(again[0].value.as_deref(), Some(&value[..]), "{written:?}");
    }
});
