//! Master keys in an HSM: SoftHSM2 from the distribution stands for it. The keyring is
//! wrapped by a key-encryption key generated in the token; phigate unwraps the keys at
//! start-up and on reload, encrypted columns read and write as before, rotation works
//! through the token, and the keyring file alone decrypts nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Options, Pg, Proxy, Setup};

const PATIENTS: &str = r#"
[table]
name = "public.patients"

[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext" }

[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext" }
"#;

/// A SoftHSM2 token labelled `phigate` (user PIN 1234) in `dir`, for this process and
/// the commands it runs.
fn softhsm_token(dir: &Path) {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // SAFETY: set before any thread of this test binary reads the environment (one test).
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "phigate"])
        .args(["--pin", "1234", "--so-pin", "5678"])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `phigate keys <args>` with the setup's configuration; its output.
fn keys(setup: &Setup, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(&setup.config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

fn write_pin(path: &Path, pin: &str) {
    std::fs::write(path, format!("{pin}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_wrapped_by_softhsm_encrypts_as_before_and_alone_decrypts_nothing() {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute(
        "create table patients (id int primary key, ssn phigate_encrypted, full_name phigate_encrypted);
         grant select, insert, update, delete on patients to svc_scram;",
    )
    .await
    .unwrap();
    let setup = Setup::new(
        &pg,
        &Options {
            tables: &[("patients.toml", PATIENTS)],
            ..Options::default()
        },
    );
    softhsm_token(setup.dir.path());
    let pin = setup.dir.path().join("hsm.pin");
    write_pin(&pin, "1234");
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(
        "[keys.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"phigate\"\npin_file = \"hsm.pin\"\n",
    );
    std::fs::write(&setup.config, config).unwrap();
    let keyring = setup.dir.path().join("secrets/phigate.keys");

    // the harness's keyring holds its key; wrapping generates the KEK in the token
    let out = keys(&setup, &["wrap"]);
    assert!(out.contains("key-encryption key generated"), "{out}");
    assert!(
        out.contains("wrapped by pkcs11:phigate/phigate-kek"),
        "{out}"
    );
    let text = std::fs::read_to_string(&keyring).unwrap();
    assert!(
        text.contains("wrapped_by") && !text.contains("key = "),
        "{text}"
    );
    let alone = phigate::crypto::Keyring::load(&keyring)
        .unwrap_err()
        .to_string();
    assert!(
        alone.contains("wrapped by pkcs11:phigate/phigate-kek"),
        "{alone}"
    );

    let proxy = Proxy::with_setup(setup).await;
    let alice = proxy.alice().await;
    alice
        .batch_execute("insert into patients values (1, '111-11-1111', 'Ann')")
        .await
        .unwrap();
    let found = alice
        .query(
            "select full_name from patients where ssn = $1",
            &[&"111-11-1111"],
        )
        .await
        .unwrap();
    assert_eq!(
        found.len(),
        1,
        "a deterministic search under the unwrapped key"
    );
    let setup = &proxy.setup;

    // rotation goes through the token; a reload unwraps both keys
    let out = keys(setup, &["rotate"]);
    assert!(out.contains("2 key(s), active key 2"), "{out}");
    proxy.reloader.reload().await.unwrap();
    alice
        .batch_execute("insert into patients values (2, '222-22-2222', 'Bob')")
        .await
        .unwrap();
    let rows = alice
        .query(
            "select ssn, full_name from patients where id = any($1) order by id",
            &[&vec![1i32, 2]],
        )
        .await
        .unwrap();
    let read: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        read,
        [
            ("111-11-1111".to_owned(), "Ann".to_owned()),
            ("222-22-2222".to_owned(), "Bob".to_owned())
        ]
    );
    // at rest: envelopes under key 1, then key 2
    let stored = db
        .query("select full_name from patients order by id", &[])
        .await
        .unwrap();
    let ids: Vec<u32> = stored
        .iter()
        .map(|r| phigate::crypto::Envelope::parse(r.get(0)).unwrap().key_id)
        .collect();
    assert_eq!(ids, [1, 2]);

    // a wrong PIN unwraps nothing, and says so without the PIN
    write_pin(&setup.dir.path().join("hsm.pin"), "9999");
    let config = phigate::config::Config::load(&setup.config).unwrap();
    let e = config.keyring().unwrap_err().to_string();
    assert!(e.contains("login failed") && !e.contains("9999"), "{e}");
    write_pin(&setup.dir.path().join("hsm.pin"), "1234");

    // a new keyring made through the token is wrapped from the start
    let fresh = setup.dir.path().join("secrets/fresh.keys");
    let out = keys(setup, &["generate", "--file", fresh.to_str().unwrap()]);
    assert!(out.contains("wrapped by"), "{out}");
    assert!(
        !out.contains("generated in the token"),
        "the KEK exists already: {out}"
    );
    let token = config.key_token().unwrap();
    let ring = phigate::crypto::load_keyring(&fresh, Some(&token)).unwrap();
    assert_eq!(ring.keys().count(), 1);
}
