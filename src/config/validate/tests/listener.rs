use super::*;

#[test]
fn listeners_on_port_zero_never_collide() {
    let text =
        with("[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"")
            .replace("127.0.0.1:8080", "127.0.0.1:0");
    assert!(parse(&text, Path::new("."), "test.toml").is_ok());
}

/// `[admin]` and `[[listener]]` problems, one at a time.
#[test]
fn listener_problems_have_their_key_path_and_line() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            with("[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:8081\""),
            "listener[1].name",
            "name = \"public\"",
            "already named",
        ),
        (
            replaced("127.0.0.1:8080", "localhost:8080"),
            "listener[0].bind",
            "bind",
            "IP address and port",
        ),
        (
            second_listener("127.0.0.1:8080"),
            "listener[1].bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            second_listener("0.0.0.0:8080"),
            "listener[1].bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            with("[admin]\nbind = \"127.0.0.1:8080\""),
            "admin.bind",
            "bind",
            "collides with listener[0].bind",
        ),
        (
            format!("[admin]\nbind = \"127.0.0.1:8080\"\n{MINIMAL}"),
            "listener[0].bind",
            "127.0.0.1:8080\"",
            "collides with admin.bind",
        ),
        (with("[admin]"), "admin.bind", "[admin]", "is required"),
        (
            replaced("bind = \"127.0.0.1:8080\"\n", ""),
            "listener[0].bind",
            "[[listener]]",
            "is required",
        ),
        (
            replaced(
                "bind = \"127.0.0.1:8080\"",
                "bind = \"127.0.0.1:8080\"\nmax_header_bytes = 0",
            ),
            "listener[0].max_header_bytes",
            "max_header_bytes",
            "above 0",
        ),
        (
            replaced("name = \"public\"", "name = \" \""),
            "listener[0].name",
            "name = \" \"",
            "must not be empty",
        ),
    ];
    check_all(&cases);
}

fn tls_file(tls: &str) -> String {
    replaced(
        "bind = \"127.0.0.1:8080\"",
        &format!("bind = \"127.0.0.1:8080\"\ntls = {tls}"),
    )
}

#[test]
fn tls_certificates_are_read_relative_to_the_config_folder() {
    let dir = TempDir::new();
    dir.cert("a", &["a.example"]);
    dir.cert("b", &["b.example"]);
    let text = tls_file(
        r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["B.Example", "www.b.example"], cert = "b.pem", key = "b.key" }] }"#,
    );
    let config = parse(&text, &dir.0, "test.toml").unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.default.cert, dir.0.join("a.pem"));
    assert_eq!(tls.default.key, dir.0.join("a.key"));
    assert_eq!(tls.default.certified_key.cert.len(), 1);
    assert_eq!(tls.sni[0].server_names, ["b.example", "www.b.example"]);
    assert_eq!(tls.sni[0].pair.cert, dir.0.join("b.pem"));
}

#[test]
fn tls_problems_name_the_file_and_the_key() {
    let dir = TempDir::new();
    dir.cert("a", &["a.example"]);
    dir.cert("b", &["b.example"]);
    dir.write("empty.pem", "no PEM here\n");
    let cases = [
        (
            r#"{ cert = "missing.pem", key = "a.key" }"#,
            "listener[0].tls.cert",
            "cannot read",
        ),
        (
            r#"{ cert = "a.pem", key = "missing.key" }"#,
            "listener[0].tls.key",
            "cannot read",
        ),
        (
            r#"{ cert = "a.pem", key = "b.key" }"#,
            "listener[0].tls.key",
            "does not match the certificate",
        ),
        (
            r#"{ cert = "a.key", key = "a.key" }"#,
            "listener[0].tls.cert",
            "holds no PEM certificate",
        ),
        (
            r#"{ cert = "a.pem", key = "empty.pem" }"#,
            "listener[0].tls.key",
            "holds no PEM private key",
        ),
        (
            r#"{ cert = "a.pem" }"#,
            "listener[0].tls.key",
            "is required",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["b.example"], cert = "b.pem", key = "a.key" }] }"#,
            "listener[0].tls.sni[0].key",
            "does not match the certificate",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["b.example"], cert = "b.pem", key = "b.key" }, { server_names = ["B.EXAMPLE"], cert = "a.pem", key = "a.key" }] }"#,
            "listener[0].tls.sni[1].server_names[0]",
            "already listed at listener[0].tls.sni[0].server_names[0]",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = ["*.b.example"], cert = "b.pem", key = "b.key" }] }"#,
            "listener[0].tls.sni[0].server_names[0]",
            "not a DNS name",
        ),
        (
            r#"{ cert = "a.pem", key = "a.key", sni = [{ server_names = [], cert = "b.pem", key = "b.key" }] }"#,
            "listener[0].tls.sni[0].server_names",
            "lists no name",
        ),
    ];
    for (tls, key_path, hint) in cases {
        let text = tls_file(tls);
        let found = problems_in(&text, &dir.0);
        let line = Some(line_of(&text, "tls ="));
        assert!(
            matches!(found.as_slice(), [p] if p.key_path == key_path && p.line == line && p.message.contains(hint)),
            "{tls}: expected {key_path} with {hint:?}, got {found:#?}"
        );
    }
}

#[test]
fn client_certificates_need_a_readable_ca_and_a_known_mode() {
    let dir = TempDir::new();
    dir.cert("server", &["localhost"]);
    dir.cert("clients", &["clients.example.com"]);
    let listener = |keys: &str| {
        replaced(
            "bind = \"127.0.0.1:8080\"",
            &format!(
                "bind = \"127.0.0.1:8080\"\ntls = {{ cert = \"server.pem\", key = \"server.key\"{keys} }}"
            ),
        )
    };
    let config = parse(&listener(", client_ca = \"clients.pem\""), &dir.0, "t").unwrap();
    let auth = config.listeners[0]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .as_ref();
    assert!(auth.unwrap().required, "require is the default");
    let text = listener(", client_ca = \"clients.pem\", client_auth = \"optional\"");
    let config = parse(&text, &dir.0, "t").unwrap();
    let auth = config.listeners[0]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .as_ref();
    assert!(!auth.unwrap().required);
    for (keys, path, hint) in [
        (
            ", client_auth = \"require\"",
            "listener[0].tls.client_auth",
            "needs client_ca",
        ),
        (
            ", client_ca = \"clients.pem\", client_auth = \"always\"",
            "listener[0].tls.client_auth",
            "unknown client_auth",
        ),
        (
            ", client_ca = \"missing.pem\"",
            "listener[0].tls.client_ca",
            "cannot read",
        ),
    ] {
        let found = problems_in(&listener(keys), &dir.0);
        assert_eq!(found.len(), 1, "{keys}: {found:#?}");
        assert_eq!(found[0].key_path, path);
        assert!(found[0].message.contains(hint), "{found:#?}");
    }
}
