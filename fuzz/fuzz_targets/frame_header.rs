//! The header parser against arbitrary bytes: a split header parses as the
//! whole one does, takes exactly its own bytes, and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::frame::{parse_header, HeaderParser, HeaderProgress, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size for the incremental parser.
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;

    let whole = parse_header(bytes);
    let mut parser = HeaderParser::new();
    let mut taken = 0;
    let mut split = Ok(None);
    for chunk in bytes.chunks(step) {
        match parser.push(chunk) {
            Ok(HeaderProgress::Partial) => {
                taken += chunk.len();
                assert!(parser.bytes().len() <= MAX_HEADER_LEN);
            }
            Ok(HeaderProgress::Complete { header, consumed }) => {
                assert!(consumed <= chunk.len());
                taken += consumed;
                split = Ok(Some(header));
                break;
            }
            Err(e) => {
                split = Err(e);
                break;
            }
        }
    }
    assert_eq!(whole, split);

    if let Ok(Some(header)) = whole {
        assert_eq!(taken, header.header_len());
        assert!(header.payload_len < 1 << 63);
        // Only minimal encodings parse, so encoding gives the bytes back.
        let mut buf = [0; MAX_HEADER_LEN];
        assert_eq!(header.encode(&mut buf), &bytes[..header.header_len()]);
    }
});
