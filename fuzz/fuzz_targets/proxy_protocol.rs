//! The PROXY protocol parser against arbitrary bytes: no panic; every cut
//! before a header's end is `Incomplete` (the promise the socket reader
//! relies on to consume what it peeked); a header takes at most its
//! bound; and what parses writes back to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::config::{ProxyProtocol, ProxyVersion};
use wsgate::proxy_protocol::{parse, write, Header, Parsed, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the accepted versions.
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let accept = match mode % 3 {
        0 => ProxyProtocol::V1,
        1 => ProxyProtocol::V2,
        _ => ProxyProtocol::Any,
    };
    let Ok(Parsed::Complete { header, len }) = parse(bytes, accept) else {
        // An error or an incomplete header: every shorter cut is no
        // more complete than the whole.
        if let Ok(Parsed::Incomplete) = parse(bytes, accept) {
            assert!(bytes.len() < MAX_LEN);
        }
        return;
    };
    assert!(len <= bytes.len() && len <= MAX_LEN);
    for cut in 0..len {
        assert_eq!(
            parse(&bytes[..cut], accept),
            Ok(Parsed::Incomplete),
            "cut {cut}"
        );
    }
    assert_eq!(
        parse(&bytes[..len], accept),
        Ok(Parsed::Complete { header, len })
    );
    if let Header::Proxy {
        source,
        destination,
    } = header
    {
        for (version, accept) in [
            (ProxyVersion::V1, ProxyProtocol::V1),
            (ProxyVersion::V2, ProxyProtocol::V2),
        ] {
            let mut out = Vec::new();
            write(version, source, destination, &mut out);
            assert_eq!(
                parse(&out, accept),
                Ok(Parsed::Complete {
                    header,
                    len: out.len()
                })
            );
        }
    }
});
