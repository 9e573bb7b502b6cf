//! The PKCS#11 key provider: master keys wrapped with AES-256-GCM by a key-encryption key
//! that never leaves the token (generated there, sensitive, not extractable).
//!
//! A wrapped key is the 12-byte IV followed by the ciphertext and its 16-byte tag; the
//! AAD binds it to its keyring version. The token is opened (and logged in to) for one
//! batch of work, keyring load or rotation, and closed again; one batch at a time per
//! process, since a PKCS#11 library is initialised once per process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::provider::{KeyProvider, ProviderError, binding};

/// Where the key-encryption key is: `[keys.pkcs11]` in phigate.toml.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`)
    pub module: PathBuf,
    /// the token's label
    pub token: String,
    /// a file holding the user PIN (mode 0600)
    pub pin_file: PathBuf,
    /// the label of the key-encryption key
    pub key_label: String,
}

/// One PKCS#11 library in use at a time in this process.
static TOKEN_IN_USE: Mutex<()> = Mutex::new(());

/// An open, logged-in session on the token holding the key-encryption key.
pub struct Token {
    name: String,
    session: Option<Session>,
    context: Option<Pkcs11>,
    key: Option<ObjectHandle>,
    _in_use: MutexGuard<'static, ()>,
}

impl Token {
    /// Opens the token and logs in. With `create`, a missing key-encryption key is
    /// generated in the token (AES-256, sensitive, never extractable); the bool says so.
    pub fn open(config: &TokenConfig, create: bool) -> Result<(Self, bool), ProviderError> {
        let name = format!("pkcs11:{}/{}", config.token, config.key_label);
        let fail = |problem: String| ProviderError {
            provider: name.clone(),
            problem,
        };
        let in_use = TOKEN_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
        let pin = read_pin(&config.pin_file).map_err(&fail)?;
        let context = Pkcs11::new(&config.module).map_err(|e| {
            fail(format!(
                "cannot load the PKCS#11 module {}: {e}",
                config.module.display()
            ))
        })?;
        let mut token = Self {
            name: name.clone(),
            session: None,
            context: Some(context),
            key: None,
            _in_use: in_use,
        };
        let created = token.login(config, &pin, create).map_err(&fail)?;
        Ok((token, created))
    }

    /// Initialises the library, finds the token, logs in and finds (or makes) the key.
    fn login(&mut self, config: &TokenConfig, pin: &AuthPin, create: bool) -> Result<bool, String> {
        let context = self.context.as_ref().ok_or("the token is closed")?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| format!("cannot initialise the PKCS#11 module: {e}"))?;
        let slots = (context.get_slots_with_token()).map_err(|e| format!("no slots: {e}"))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                context
                    .get_token_info(*s)
                    .is_ok_and(|i| i.label().trim_end() == config.token)
            })
            .ok_or_else(|| format!("no token labelled {:?}; initialise it first", config.token))?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| format!("cannot open a session: {e}"))?;
        session
            .login(UserType::User, Some(pin))
            .map_err(|e| format!("login failed (check keys.pkcs11.pin_file): {e}"))?;
        let (key, created) = find_or_make_key(&session, &config.key_label, create)?;
        self.session = Some(session);
        self.key = Some(key);
        Ok(created)
    }

    /// The logged-in session and the key-encryption key.
    fn session(&self) -> Result<(&Session, ObjectHandle), ProviderError> {
        match (&self.session, self.key) {
            (Some(s), Some(k)) => Ok((s, k)),
            _ => Err(ProviderError {
                provider: self.name.clone(),
                problem: "the token is closed".into(),
            }),
        }
    }

    fn failed(&self, what: &str, e: &cryptoki::error::Error) -> ProviderError {
        ProviderError {
            provider: self.name.clone(),
            problem: format!("{what}: {e}"),
        }
    }
}

/// The key labelled `label`, generated when missing and `create` (then true).
fn find_or_make_key(
    session: &Session,
    label: &str,
    create: bool,
) -> Result<(ObjectHandle, bool), String> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = (session.find_objects(&template)).map_err(|e| format!("cannot search: {e}"))?;
    match (found.as_slice(), create) {
        ([key], _) => Ok((*key, false)),
        ([], true) => {
            let template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            let key = session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(|e| format!("cannot generate the key-encryption key: {e}"))?;
            Ok((key, true))
        }
        ([], false) => Err(format!(
            "no key labelled {label:?} in the token; `phigate keys generate` or `keys wrap` creates it"
        )),
        _ => Err(format!("several keys are labelled {label:?}; keep one")),
    }
}

/// The PIN in `path` (one line), which group and others may not read.
fn read_pin(path: &Path) -> Result<AuthPin, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("PIN file {shown}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "PIN file {shown} is readable by group or others; run chmod 600 on it"
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("PIN file {shown}: {e}"))?,
    );
    Ok(AuthPin::from(text.trim().to_owned()))
}

impl KeyProvider for Token {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn wrap(&self, id: u32, key: &[u8; 32]) -> Result<Vec<u8>, ProviderError> {
        let (session, kek) = self.session()?;
        let mut iv = [0u8; 12];
        (session.generate_random_slice(&mut iv)).map_err(|e| self.failed("no random IV", &e))?;
        let aad = binding(id);
        let mut params_iv = iv;
        let params = GcmParams::new(&mut params_iv, aad.as_bytes(), 128.into())
            .map_err(|e| self.failed("bad GCM parameters", &e))?;
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), kek, key)
            .map_err(|e| self.failed("cannot wrap a master key", &e))?;
        Ok([iv.as_slice(), &sealed].concat())
    }

    fn unwrap(&self, id: u32, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProviderError> {
        let (session, kek) = self.session()?;
        let bad = |problem: &str| ProviderError {
            provider: self.name.clone(),
            problem: format!("key {id}: {problem}"),
        };
        let (iv, sealed) = wrapped
            .split_at_checked(12)
            .ok_or_else(|| bad("the wrapped key is too short"))?;
        let mut iv: [u8; 12] = iv.try_into().map_err(|_| bad("bad IV"))?;
        let aad = binding(id);
        let params = GcmParams::new(&mut iv, aad.as_bytes(), 128.into())
            .map_err(|e| self.failed("bad GCM parameters", &e))?;
        let plain = Zeroizing::new(
            session
                .decrypt(&Mechanism::AesGcm(params), kek, sealed)
                .map_err(|_| bad("does not unwrap: another token's key, or altered"))?,
        );
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| bad("not 32 bytes"))?;
        Ok(Zeroizing::new(key))
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.logout();
        }
        if let Some(c) = self.context.take() {
            let _ = c.finalize();
        }
    }
}
