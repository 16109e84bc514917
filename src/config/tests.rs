//! Configuration loading: layering, unknown keys, named upstreams, validation.

use super::*;
use figment::Jail;

#[test]
#[allow(clippy::result_large_err)]
fn layers_file_env_and_rejects_unknown_keys() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.toml",
            "[upstream]\naddress = \"imap.example.com:993\"\n[limits]\nmax_line = 2048\n",
        )?;
        jail.set_env("IMAPGATE_UPSTREAM__TLS", "starttls");
        let c = Config::from_figment(&Config::figment(Some(Path::new("a.toml")))).unwrap();
        assert_eq!(c.upstream.address, "imap.example.com:993");
        assert_eq!(c.upstream.tls, UpstreamTls::Starttls);
        assert_eq!(c.limits.max_line, 2048);

        jail.create_file("b.toml", "[upstream]\naddres = \"x:1\"\n")?;
        let err = Config::from_figment(&Config::figment(Some(Path::new("b.toml")))).unwrap_err();
        assert!(err.to_string().contains("addres"), "{err}");

        jail.set_env("IMAPGATE_LIMITS__MAX_LINE", "many");
        let err = Config::from_figment(&Config::figment(Some(Path::new("a.toml")))).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("max_line"), "{err}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn named_upstreams_and_the_default() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "n.toml",
            "[upstreams.default]\naddress = \"a:993\"\n[upstreams.eu]\naddress = \"b:143\"\ntls = \"starttls\"\n",
        )?;
        let c = Config::from_figment(&Config::figment(Some(Path::new("n.toml")))).unwrap();
        let all = c.upstreams();
        assert_eq!(all["default"].address, "a:993");
        assert_eq!(all["eu"].tls, UpstreamTls::Starttls);

        jail.create_file(
            "s.toml",
            "[upstream]\naddress = \"a:993\"\n[upstreams.eu]\naddress = \"b:143\"\n",
        )?;
        let c = Config::from_figment(&Config::figment(Some(Path::new("s.toml")))).unwrap();
        assert_eq!(c.upstreams().len(), 2);

        jail.create_file(
            "d.toml",
            "[upstream]\naddress = \"a:993\"\n[upstreams.default]\naddress = \"b:143\"\n",
        )?;
        let err = Config::from_figment(&Config::figment(Some(Path::new("d.toml")))).unwrap_err();
        assert!(err.to_string().contains("upstreams.default"), "{err}");

        jail.create_file("e.toml", "[upstreams.eu]\naddress = \"b:143\"\n")?;
        let err = Config::from_figment(&Config::figment(Some(Path::new("e.toml")))).unwrap_err();
        assert!(err.to_string().contains("upstream.address"), "{err}");

        jail.create_file(
            "f.toml",
            "[upstream]\naddress = \"a:993\"\n[upstreams.eu]\naddres = \"b:143\"\n",
        )?;
        let err = Config::from_figment(&Config::figment(Some(Path::new("f.toml")))).unwrap_err();
        assert!(err.to_string().contains("addres"), "{err}");
        Ok(())
    });
}

#[test]
fn requires_an_upstream() {
    let err = Config::default().validate().unwrap_err();
    assert!(err.to_string().contains("upstream.address"));
    assert_eq!(split_host_port("[::1]:993"), Some(("::1", 993)));
    assert_eq!(split_host_port("host"), None);
}
