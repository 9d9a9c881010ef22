//! Validation reports every problem, with its key and position, in one pass.

use std::path::Path;

use hookd_config::Config;

#[test]
fn defaults_apply_when_only_a_secret_is_given() {
    let config = Config::from_toml(
        r#"
[verify]
secrets = ["0123456789abcdef0123"]
"#,
        Some(Path::new("/etc/hookd/hookd.toml")),
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.path, "/webhooks");
    assert_eq!(config.server.max_body_bytes, 1024 * 1024);
    assert_eq!(config.admin.listen.unwrap().to_string(), "127.0.0.1:9090");
    assert_eq!(config.store.dir, Path::new("/var/lib/hookd"));
    assert_eq!(config.store.dedup_window.as_secs(), 7 * 24 * 3600);
    assert_eq!(config.plugins.dir, Path::new("/etc/hookd/plugins"));
    assert_eq!(config.secrets.len(), 1);
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let config = Config::from_toml(
        "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n[store]\ndir = \"state\"\n",
        Some(Path::new("/srv/app/hookd.toml")),
    )
    .unwrap();
    assert_eq!(config.store.dir, Path::new("/srv/app/state"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"[server]
listen = "localhost"
path = "webhooks"
max_body_bytes = 0

[admin]
listen = "127.0.0.1:99999"

[verify]
secrets = ["short", "env:HOOKD_TEST_UNSET_VARIABLE", "file:/nonexistent/secret"]
"#;
    let errors = Config::from_toml(text, Some(Path::new("hookd.toml"))).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "hookd.toml:2:10: `server.listen`: `localhost` is not an IP address and port, such as `127.0.0.1:8080` or `[::]:8080`",
        "hookd.toml:3:8: `server.path`: must be a URL path starting with `/`, got `webhooks`",
        "hookd.toml:4:18: `server.max_body_bytes`: must be between 64 and 67108864, got 0",
        "hookd.toml:7:10: `admin.listen`: `127.0.0.1:99999` is not an IP address and port, such as `127.0.0.1:8080` or `[::]:8080`",
        "hookd.toml:10:12: `verify.secrets[0]`: the inline secret: the secret is 5 bytes long; at least 16 are required",
        "hookd.toml:10:21: `verify.secrets[1]`: environment variable `HOOKD_TEST_UNSET_VARIABLE` is not set",
        "hookd.toml:10:54: `verify.secrets[2]`: cannot read secret file `/nonexistent/secret`: No such file or directory (os error 2)",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn unknown_keys_are_located() {
    let errors = Config::from_toml(
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n",
        Some(Path::new("x.toml")),
    )
    .unwrap_err();
    let message = errors.to_string();
    assert!(
        message.starts_with("error: x.toml:3:1: unknown field `max_body`"),
        "{message}"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let errors = Config::from_toml(
        "[verify]\nsecrets = [\"tiny-secret\"]\n[server]\nlisten = \"nope\"\n",
        None,
    )
    .unwrap_err();
    assert!(!errors.to_string().contains("tiny-secret"), "{errors}");
}

#[test]
fn edge_limits_default_to_a_quarter_share_per_client_and_refuse_what_cannot_take_one_body() {
    let config = Config::from_toml(
        "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n",
        Some(Path::new("hookd.toml")),
    )
    .unwrap();
    assert_eq!(config.server.max_connections_per_client, 256);
    assert_eq!(config.server.max_inflight_body_bytes, 64 << 20);
    assert_eq!(config.server.max_inflight_body_bytes_per_client, 16 << 20);
    assert_eq!(config.store.queue_max_bytes, 64 << 20);

    // The per-client body share follows the connection share, and is never less than one
    // whole body.
    let config = Config::from_toml(
        "[server]\nmax_connections = 100\nmax_connections_per_client = 1\n\
         [verify]\nsecrets = [\"0123456789abcdef0123\"]\n",
        Some(Path::new("hookd.toml")),
    )
    .unwrap();
    assert_eq!(config.server.max_inflight_body_bytes_per_client, 1 << 20);

    let text = "[server]\nmax_connections = 10\nmax_connections_per_client = 11\n\
                max_body_bytes = 2048\nmax_inflight_body_bytes = 1000\n\
                [verify]\nsecrets = [\"0123456789abcdef0123\"]\n\
                [store]\nqueue_max_bytes = 2047\n";
    let errors = Config::from_toml(text, Some(Path::new("hookd.toml"))).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "hookd.toml:3:30: `server.max_connections_per_client`: must be between 1 and 10, got 11",
            "hookd.toml:5:27: `server.max_inflight_body_bytes`: must be at least `server.max_body_bytes` (2048), or a body that size could never be taken; got 1000",
            "hookd.toml:9:19: `store.queue_max_bytes`: must be at least `server.max_body_bytes` (2048), or a body that size could never be taken; got 2047",
        ]
    );
}

#[test]
fn a_nats_store_is_read_with_its_defaults_and_login() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nats-password"), "pa55word\n").unwrap();
    let config = Config::from_toml(
        r#"
[verify]
secrets = ["0123456789abcdef0123"]
[store]
backend = "nats"
[store.nats]
servers = ["nats://n1:4222", "tls://n2:4222"]
user = "hookd"
password = "file:nats-password"
replicas = 3
"#,
        Some(&dir.path().join("hookd.toml")),
    )
    .unwrap();
    let hookd_config::StoreBackend::Nats(nats) = &config.store.backend else {
        panic!("not the NATS backend: {:?}", config.store.backend);
    };
    assert_eq!(nats.servers, ["nats://n1:4222", "tls://n2:4222"]);
    assert_eq!(
        nats.auth,
        hookd_config::NatsCredentials::UserPassword {
            user: "hookd".into(),
            password: "pa55word".into()
        }
    );
    assert_eq!((nats.prefix.as_str(), nats.replicas), ("hookd", 3));
    assert_eq!(nats.ack_wait.as_secs(), 30);
    assert_eq!(nats.duplicate_window.as_secs(), 600);
    assert!(!format!("{nats:?}").contains("pa55word"), "Debug hides it");
}

#[test]
fn nats_store_mistakes_are_located_and_never_echo_a_secret() {
    let text = r#"[verify]
secrets = ["0123456789abcdef0123"]
[store]
backend = "nats"
[store.nats]
servers = ["http://n1:4222", "nats://n2:port"]
token = "t0ken-s3cret"
user = "hookd"
password = "hunter2-secret"
prefix = "Hookd.Prod"
replicas = 7
duplicate_window_secs = 86400
max_event_age_secs = 3600
"#;
    let errors = Config::from_toml(text, Some(Path::new("hookd.toml"))).unwrap_err();
    let text_out: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let all = text_out.join("\n");
    for expected in [
        "`store.nats.servers`: `http://n1:4222`: the scheme must be nats:// or tls://",
        "`store.nats.servers`: `nats://n2:port` is not a server address (nats://host:4222)",
        "`store.nats`: give one way to log in",
        "`store.nats.prefix`: must be 1 to 32 lowercase letters",
        "`store.nats.replicas`: must be between 1 and 5, got 7",
        "`store.nats.duplicate_window_secs`: must not be longer than `max_event_age_secs`",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(
        !all.contains("t0ken-s3cret") && !all.contains("hunter2-secret"),
        "{all}"
    );

    let sqlite_with_nats = "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n[store.nats]\nservers = [\"nats://n:4222\"]\n";
    let errors = Config::from_toml(sqlite_with_nats, Some(Path::new("hookd.toml"))).unwrap_err();
    assert!(
        errors.to_string().contains("`store.backend` is \"sqlite\""),
        "{errors}"
    );
    let typo = "[verify]\nsecrets = [\"0123456789abcdef0123\"]\n[store]\nbackend = \"jetstream\"\n";
    let errors = Config::from_toml(typo, Some(Path::new("hookd.toml"))).unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("must be \"sqlite\" or \"nats\", got \"jetstream\""),
        "{errors}"
    );
}
