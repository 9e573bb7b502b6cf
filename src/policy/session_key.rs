//! The key that makes phigate's session settings (`phigate.role`, `phigate.user.*`,
//! `phigate.emergency`) unforgeable. Each value phigate sets upstream carries an
//! HMAC-SHA256 tag (`<value>.<64 hex>`); the native row policies read the settings only
//! through `phigate.setting(name)` and `phigate.emergency()`, SECURITY DEFINER functions
//! that check the tag against HMAC pads held in `phigate.secret`, a table only the admin
//! login can read. A client that gets a setting past phigate's checks (a startup option,
//! a function, anything) still cannot produce a tag, so the native bypass stays shut.
//! An emergency's tag also binds the backend's process id: it is good for that session only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;
use zeroize::Zeroizing;

use super::PolicyError;

/// The session-settings key: 32 secret bytes.
pub struct SessionKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The name of the setting that holds a declared emergency's end.
pub const EMERGENCY: &str = "phigate.emergency";

/// The name of the setting that holds a delegated end user's settings.
pub const IDENTITY: &str = "phigate.identity";

impl SessionKey {
    /// A key from its bytes (tests and benchmarks).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Loads the key file (hex, mode 0600), creating it when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, PolicyError> {
        let io = |cause| PolicyError::Io {
            file: path.to_owned(),
            cause,
        };
        let invalid = |problem: &str| PolicyError::Invalid {
            file: path.to_owned(),
            key: "session key".into(),
            problem: problem.into(),
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(invalid(
                        "readable by group or others; chmod 600 it (the key may have leaked)",
                    ));
                }
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
                let mut key = Zeroizing::new([0u8; 32]);
                hex::decode_to_slice(text.trim(), key.as_mut())
                    .map_err(|_| invalid("not 32 bytes of hex"))?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Zeroizing::new(rand::rng().random::<[u8; 32]>());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                Ok(Self(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn tag(&self, message: &str) -> String {
        hex::encode(crate::crypto::hmac_sha256(
            self.0.as_ref(),
            message.as_bytes(),
        ))
    }

    /// The value to give setting `name` so that `phigate.setting(name)` reads `value`.
    pub fn sign(&self, name: &str, value: &str) -> String {
        format!("{value}.{}", self.tag(&format!("{name}={value}")))
    }

    /// The value of `phigate.emergency` for an emergency lasting until `until` (a
    /// timestamptz literal), good only in the backend with process id `pid`.
    pub fn emergency(&self, until: &str, pid: i32) -> String {
        self.sign_for_backend(EMERGENCY, until, pid)
    }

    /// The value of `phigate.identity` that makes the native policies read the settings in
    /// `json` (an object of setting names and values: a delegated end user's role and
    /// attributes) instead of the session's own, good only in the backend with process id
    /// `pid`.
    pub fn identity(&self, json: &str, pid: i32) -> String {
        self.sign_for_backend(IDENTITY, json, pid)
    }

    /// [`SessionKey::sign`], good only in the backend with process id `pid`.
    fn sign_for_backend(&self, name: &str, value: &str, pid: i32) -> String {
        format!("{value}.{}", self.tag(&format!("{name}={value}@{pid}")))
    }

    /// HMAC's inner and outer pads (key XOR 0x36 / 0x5c, 64 bytes each), as the database
    /// stores them: with them `sha256(opad || sha256(ipad || m))` is HMAC-SHA256.
    fn pads(&self) -> (Zeroizing<[u8; 64]>, Zeroizing<[u8; 64]>) {
        let mut ipad = Zeroizing::new([0x36u8; 64]);
        let mut opad = Zeroizing::new([0x5cu8; 64]);
        for (i, k) in self.0.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        (ipad, opad)
    }

    /// SQL (run by the admin login, inside the transaction that installs the native
    /// policies) that puts the schema `phigate`, the secret and the two reader functions
    /// in place. The secret is readable by its owner only.
    pub(crate) fn install_sql(&self) -> Zeroizing<String> {
        let (ipad, opad) = self.pads();
        Zeroizing::new(format!(
            "{INSTALL_SCHEMA}DELETE FROM phigate.secret;\n\
             INSERT INTO phigate.secret (ipad, opad) VALUES (decode('{}', 'hex'), decode('{}', 'hex'));\n\
             {INSTALL_FUNCTIONS}",
            hex::encode(ipad.as_ref()),
            hex::encode(opad.as_ref()),
        ))
    }
}

const INSTALL_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS phigate;
REVOKE ALL ON SCHEMA phigate FROM PUBLIC;
GRANT USAGE ON SCHEMA phigate TO PUBLIC;
CREATE TABLE IF NOT EXISTS phigate.secret (ipad bytea NOT NULL, opad bytea NOT NULL);
REVOKE ALL ON phigate.secret FROM PUBLIC;
";

/// `phigate.setting(name)`: the value phigate gave setting `name`, or NULL when the setting
/// is absent or its tag does not verify. While `phigate.identity` holds a delegated end
/// user's settings (tagged for this backend), they alone count: `name` is read from them.
/// A tampered identity reads as NULL for every name. `phigate.emergency()`: true while an emergency
/// phigate declared for this backend lasts. PARALLEL RESTRICTED: the backend's pid is the
/// leader's. `phigate.check_row(ok, policy)`: raises 42501 unless `ok`; the rewrite calls
/// it with a row policy's `check` on each new row (VOLATILE, so never folded at plan time).
/// `phigate.row_cap(n, cap)`: raises 54000 when row number `n` passes `cap`, else returns
/// it (the bulk-read guard's sort key, see `sql::cap`); it runs once per row, so it names
/// its operator's schema rather than paying for a `SET search_path` at every call.
const INSTALL_FUNCTIONS: &str = r"CREATE OR REPLACE FUNCTION phigate.setting(name text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $phigate$
SELECT CASE
  WHEN coalesce(i.t, '') <> '' THEN
    CASE WHEN i.tag = encode(sha256(s.opad || sha256(s.ipad || convert_to(
                  'phigate.identity=' || i.value || '@' || pg_backend_pid(), 'UTF8'))), 'hex')
         THEN (i.value::jsonb) ->> $1 END
  WHEN v.tag = encode(sha256(s.opad || sha256(s.ipad || convert_to($1 || '=' || v.value, 'UTF8'))), 'hex')
  THEN v.value END
FROM phigate.secret s,
     (SELECT substring(t FROM '^(.*)\.[0-9a-f]{64}$') AS value, substring(t FROM '\.([0-9a-f]{64})$') AS tag
      FROM (SELECT current_setting($1, true) AS t) AS raw) AS v,
     (SELECT t, substring(t FROM '^(.*)\.[0-9a-f]{64}$') AS value, substring(t FROM '\.([0-9a-f]{64})$') AS tag
      FROM (SELECT current_setting('phigate.identity', true) AS t) AS raw) AS i
$phigate$;
REVOKE ALL ON FUNCTION phigate.setting(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.setting(text) TO PUBLIC;
CREATE OR REPLACE FUNCTION phigate.emergency() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp AS $phigate$
SELECT coalesce(CASE WHEN v.tag = encode(sha256(s.opad || sha256(s.ipad || convert_to(
                          'phigate.emergency=' || v.value || '@' || pg_backend_pid(), 'UTF8'))), 'hex')
                     THEN v.value::timestamptz > now() END, false)
FROM phigate.secret s,
     (SELECT substring(t FROM '^(.*)\.[0-9a-f]{64}$') AS value, substring(t FROM '\.([0-9a-f]{64})$') AS tag
      FROM (SELECT current_setting('phigate.emergency', true) AS t) AS raw) AS v
$phigate$;
REVOKE ALL ON FUNCTION phigate.emergency() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.emergency() TO PUBLIC;
CREATE OR REPLACE FUNCTION phigate.check_row(ok boolean, policy text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $phigate$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION 'new row violates row policy %', policy
      USING ERRCODE = '42501', HINT = 'the row''s values are outside what the role may write';
  END IF;
  RETURN true;
END
$phigate$;
CREATE OR REPLACE FUNCTION phigate.row_cap(n bigint, cap bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $phigate$
BEGIN
  IF n OPERATOR(pg_catalog.>) cap THEN
    RAISE EXCEPTION 'phigate row cap: the statement returns more than % rows of protected tables, the most this role may read at once', cap
      USING ERRCODE = '54000', HINT = 'narrow the statement (a WHERE clause, LIMIT); roles.toml sets the cap (max_rows, max_rows_per_hour)';
  END IF;
  RETURN n;
END
$phigate$;
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_name_value_and_backend() {
        let k = SessionKey::from_bytes([7; 32]);
        let role = k.sign("phigate.role", "clinician");
        assert!(role.starts_with("clinician."));
        assert_eq!(role.len(), "clinician.".len() + 64);
        assert_ne!(role, k.sign("phigate.user.role", "clinician"));
        assert_ne!(
            role,
            SessionKey::from_bytes([8; 32]).sign("phigate.role", "clinician")
        );
        let until = "2026-12-01T10:00:00Z";
        assert_ne!(k.emergency(until, 1), k.emergency(until, 2));
        assert!(!format!("{k:?}").contains('7'));
        let sql = k.install_sql();
        assert!(sql.contains("SECURITY DEFINER"));
        // the pads, not the key, reach the database
        assert!(!sql.contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/session.key");
        let a = SessionKey::load_or_create(&path).unwrap();
        let b = SessionKey::load_or_create(&path).unwrap();
        assert_eq!(a.sign("x", "y"), b.sign("x", "y"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SessionKey::load_or_create(&path).is_err());
    }
}
