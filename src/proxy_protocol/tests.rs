use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn complete(buf: &[u8], accept: ProxyProtocol) -> (Header, usize) {
    match parse(buf, accept) {
        Ok(Parsed::Complete { header, len }) => (header, len),
        other => panic!("{other:?} for {buf:?}"),
    }
}

fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(cmd);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn v1_tcp4_and_the_bytes_after_it() {
    let buf = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
    let (header, len) = complete(buf, ProxyProtocol::V1);
    assert_eq!(
        header,
        Header::Proxy {
            source: sa("192.0.2.1:56324"),
            destination: sa("198.51.100.2:443")
        }
    );
    assert_eq!(&buf[len..len + 3], b"GET");
}

#[test]
fn v1_tcp6_and_unknown() {
    let (header, _) = complete(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n", ProxyProtocol::Any);
    assert_eq!(
        header,
        Header::Proxy {
            source: sa("[2001:db8::1]:1"),
            destination: sa("[::1]:2")
        }
    );
    let (header, len) = complete(b"PROXY UNKNOWN ignored stuff\r\n", ProxyProtocol::V1);
    assert_eq!((header, len), (Header::Local, 29));
}

#[test]
fn v1_rejections() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
        b"PROXY TCP4 ::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY UNKNOWN \n\r\n",
    ];
    for buf in bad {
        assert!(
            matches!(parse(buf, ProxyProtocol::V1), Err(ProxyError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
    assert!(parse(&long, ProxyProtocol::V1).is_err());
}

#[test]
fn v1_incomplete_until_crlf() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    for cut in 0..line.len() {
        assert_eq!(
            parse(&line[..cut], ProxyProtocol::Any),
            Ok(Parsed::Incomplete),
            "{cut}"
        );
    }
}

#[test]
fn missing_header_and_wrong_version() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n", ProxyProtocol::Any),
        Err(ProxyError::Missing)
    );
    assert_eq!(
        parse(&[0x16, 3, 1], ProxyProtocol::Any),
        Err(ProxyError::Missing)
    );
    let v1 = b"PROXY UNKNOWN\r\n";
    assert_eq!(parse(v1, ProxyProtocol::V2), Err(ProxyError::Missing));
    let local = v2(0x20, 0x00, &[]);
    assert_eq!(parse(&local, ProxyProtocol::V1), Err(ProxyError::Missing));
}

#[test]
fn v2_tcp4_with_tlvs_skipped() {
    let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
    // An ALPN TLV and an AWS-style TLV: skipped by length.
    body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    body.extend_from_slice(&[0xea, 0x00, 0x03, 0x01, b'v', b'p']);
    let mut buf = v2(0x21, 0x11, &body);
    let header_len = buf.len();
    buf.extend_from_slice(b"\x16\x03\x01");
    let (header, len) = complete(&buf, ProxyProtocol::V2);
    assert_eq!(len, header_len);
    assert_eq!(
        header,
        Header::Proxy {
            source: sa("192.0.2.1:56324"),
            destination: sa("198.51.100.2:443")
        }
    );
}

#[test]
fn v2_tcp6_local_unspec_and_unix() {
    let mut body = vec![0u8; 36];
    body[15] = 1;
    body[31] = 2;
    body[32..34].copy_from_slice(&1000u16.to_be_bytes());
    body[34..36].copy_from_slice(&443u16.to_be_bytes());
    let (header, _) = complete(&v2(0x21, 0x21, &body), ProxyProtocol::Any);
    assert_eq!(
        header,
        Header::Proxy {
            source: sa("[::1]:1000"),
            destination: sa("[::2]:443")
        }
    );
    // LOCAL ignores whatever address block it carries.
    let (header, _) = complete(&v2(0x20, 0x11, &[0; 12]), ProxyProtocol::V2);
    assert_eq!(header, Header::Local);
    let (header, _) = complete(&v2(0x21, 0x00, &[]), ProxyProtocol::V2);
    assert_eq!(header, Header::Local);
    let (header, _) = complete(&v2(0x21, 0x31, &[0; 216]), ProxyProtocol::V2);
    assert_eq!(header, Header::Local);
}

#[test]
fn v2_rejections() {
    let cases = [
        v2(0x11, 0x11, &[0; 12]),   // version 1 in the binary form
        v2(0x22, 0x11, &[0; 12]),   // command 2
        v2(0x21, 0x12, &[0; 12]),   // UDP
        v2(0x21, 0x41, &[0; 12]),   // unknown family
        v2(0x21, 0x11, &[0; 11]),   // addresses cut short
        v2(0x21, 0x21, &[0; 12]),   // IPv6 in an IPv4 length
        v2(0x21, 0x11, &[0; 1100]), // over the bound
    ];
    for buf in cases {
        assert!(
            matches!(
                parse(&buf, ProxyProtocol::Any),
                Err(ProxyError::Malformed(_))
            ),
            "{buf:?}"
        );
    }
}

#[test]
fn v2_incomplete_at_every_cut() {
    let buf = v2(
        0x21,
        0x11,
        &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0xff, 0, 0],
    );
    for cut in 0..buf.len() {
        assert_eq!(
            parse(&buf[..cut], ProxyProtocol::Any),
            Ok(Parsed::Incomplete),
            "{cut}"
        );
    }
    assert!(matches!(
        parse(&buf, ProxyProtocol::Any),
        Ok(Parsed::Complete { .. })
    ));
}

#[test]
fn written_headers_parse_back() {
    let pairs = [
        (sa("192.0.2.1:56324"), sa("198.51.100.2:443")),
        (sa("[2001:db8::1]:1"), sa("[::1]:2")),
        (sa("192.0.2.1:7"), sa("[::1]:8")),
    ];
    for (source, destination) in pairs {
        for (version, accept) in [
            (ProxyVersion::V1, ProxyProtocol::V1),
            (ProxyVersion::V2, ProxyProtocol::V2),
        ] {
            let mut out = Vec::new();
            write(version, source, destination, &mut out);
            let (header, len) = complete(&out, accept);
            assert_eq!(len, out.len());
            let Header::Proxy {
                source: s,
                destination: d,
            } = header
            else {
                panic!("{header:?}");
            };
            let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
            assert_eq!(canonical(s), canonical(source));
            assert_eq!(canonical(d), canonical(destination));
        }
    }
    for (version, accept) in [
        (ProxyVersion::V1, ProxyProtocol::V1),
        (ProxyVersion::V2, ProxyProtocol::V2),
    ] {
        let mut out = Vec::new();
        write_local(version, &mut out);
        assert_eq!(complete(&out, accept), (Header::Local, out.len()));
    }
}

/// The fuzz target's properties over the seeds and every one-byte change
/// of them: no panic; each cut before a whole header's end is
/// `Incomplete`; what parses writes back to the same addresses.
#[test]
fn cuts_and_mutations_keep_the_promises() {
    let seeds: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET".to_vec(),
        b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(
            0x21,
            0x11,
            &[192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2, 1, 0, 1, b'x'],
        ),
        v2(0x21, 0x21, &[7; 36]),
        v2(0x20, 0x00, &[]),
    ];
    let flips = [0x00, 0x01, 0x0a, 0x0d, 0x20, 0x7f, 0xff];
    for seed in &seeds {
        for at in 0..seed.len() {
            for flip in flips {
                let mut input = seed.clone();
                input[at] ^= flip;
                for accept in [ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Any] {
                    let Ok(Parsed::Complete { header, len }) = parse(&input, accept) else {
                        continue;
                    };
                    assert!(len <= input.len() && len <= MAX_LEN);
                    for cut in 0..len {
                        assert_eq!(
                            parse(&input[..cut], accept),
                            Ok(Parsed::Incomplete),
                            "{input:?} cut {cut}"
                        );
                    }
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
                            let len = out.len();
                            assert_eq!(parse(&out, accept), Ok(Parsed::Complete { header, len }));
                        }
                    }
                }
            }
        }
    }
}
