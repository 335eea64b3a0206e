//! The key ring: master secrets from the key file, and every working key derived from them.
//!
//! # Key file
//!
//! ```json
//! {"format":1,"active":2,"index_root_key":1,"keys":[
//!   {"id":1,"created":"2025-01-01T00:00:00Z","secret":"<base64 of 32 random bytes>"},
//!   {"id":2,"created":"2025-06-01T00:00:00Z","secret":"<base64 of 32 random bytes>"}]}
//! ```
//!
//! The file lives outside the database (mode 0600; we refuse to load it if group or others have any
//! access, as ssh does for private keys). For containers the same JSON can come base64-encoded from
//! the environment instead ([`KeyRing::from_env_base64`]; produce it with `base64 -w0 keys.json`).
//! Back the file up: a lost master secret means every row sealed under it is gone.
//!
//! # Derivation
//!
//! No master secret is used directly. Each is run through HKDF-SHA256 (salt `fhirvault/v1`) once at
//! load time, and the results are cached:
//!
//! - **data keys**, one per key id, info `fhirvault/v1/data-key`: AES-256-GCM keys for
//!   [`KeyRing::seal`]/[`KeyRing::open`]. `active` names the one new data is sealed under; every key
//!   in the file can still open what it sealed, which is what lets rotation re-seal in the
//!   background without downtime.
//! - **the pseudonym key**, info `fhirvault/v1/pseudonym`, and **blind-index keys**, info
//!   `fhirvault/v1/blind-index/<param>`: both from the master named by `index_root_key`, never from
//!   `active`. Pseudonyms held by the CRM and index tokens in the database must survive data-key
//!   rotation, so rotation never moves `index_root_key`. (Changing it would mean re-indexing every
//!   row and re-issuing every pseudonym; that is not supported.)
//!
//! The distinct `info` strings keep the three families independent: knowing a blind-index key says
//! nothing about a data key derived from the same master.
//!
//! # Token-signing key
//!
//! `signing_key` holds the ES256 key pair ([`SigningKey`]) that signs the bearer tokens
//! `fhirvault token issue` prints and that the server verifies them with:
//!
//! ```json
//! "signing_key": {"algorithm":"ES256","created":"2025-01-01T00:00:00Z","pkcs8":"<base64 of PKCS#8>"}
//! ```
//!
//! Key files written before tokens existed have none: [`KeyRing::load_or_create`] (what `serve`,
//! `keys init` and `token issue` use) adds one and rewrites the file atomically, keeping mode
//! 0600. [`KeyRing::load`] only reads (a ring loaded that way may lack the key, as may one from
//! the environment). Data-key rotation keeps the signing key unchanged, so tokens issued before a
//! rotation stay valid; to invalidate every issued token, delete `signing_key` from the file, run
//! `fhirvault keys init` and restart the server.
//!
//! # Rotation
//!
//! [`KeyRing::rotate`] adds a fresh master, makes it active and rewrites the file atomically (temp
//! file, fsync, rename). It refuses if the file on disk holds a key this ring doesn't, so two
//! operators rotating from stale copies can't silently drop a key. Rotation changes only the
//! `KeyRing` it is called on: other clones, and other processes, keep the old set until they reload.
//!
//! Secrets stay in process memory for the life of the ring (they are needed to write the file back).
//! `KeyRing`'s `Debug` prints key ids only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{self, LessSafeKey, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::blind_index::BlindIndexer;
use super::envelope::{self, Aad};
use super::pseudonym::Pseudonymizer;
use super::signing::{SIGNING_ALGORITHM, SigningKey};
use super::{CryptoError, INFO_DATA_KEY, INFO_PSEUDONYM, expand, extract};

/// Identifies one master key (and the data key derived from it); written into every sealed blob.
pub type KeyId = u32;

const KEY_FILE_FORMAT: u32 = 1;
const SECRET_LEN: usize = 32;

/// The key file as stored on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    active: KeyId,
    index_root_key: KeyId,
    keys: Vec<KeyEntry>,
    /// Absent in key files written before bearer tokens existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_key: Option<SigningKeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyEntry {
    /// Only `ES256` today; named so a later algorithm can be told apart.
    algorithm: String,
    created: String,
    /// Base64 (standard alphabet, padded) of the PKCS#8 document.
    pkcs8: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: KeyId,
    /// RFC 3339; informational, for operators deciding when to rotate.
    created: String,
    /// Base64 (standard alphabet, padded) of 32 bytes.
    secret: String,
}

#[derive(Clone)]
struct MasterKey {
    created: String,
    secret: [u8; SECRET_LEN],
}

/// The validated content of a key file.
#[derive(Clone)]
struct Masters {
    active: KeyId,
    index_root: KeyId,
    keys: BTreeMap<KeyId, MasterKey>,
    signing: Option<Arc<SigningKey>>,
}

/// Holds the master secrets and the keys derived from them. Cheap to clone (one `Arc`), `Send` and
/// `Sync`; share one ring across the whole server.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    masters: Masters,
    data_keys: BTreeMap<KeyId, LessSafeKey>,
    pseudonyms: Arc<Pseudonymizer>,
    blind: Arc<BlindIndexer>,
    rng: SystemRandom,
}

impl KeyRing {
    /// Load the key file at `path`, or create it (a new random 256-bit master key, id 1) when
    /// absent. Returns the ring and whether the file was created. A new file gets mode 0600 at
    /// creation, and its parent directory (mode 0700) is created if needed.
    ///
    /// A key file without a token-signing key gets one added (see the module docs).
    pub fn load_or_create(path: &Path) -> Result<(KeyRing, bool), CryptoError> {
        if let Some(bytes) = read_key_file(path)? {
            let masters = parse(&bytes, &origin(path))?;
            if masters.signing.is_some() {
                return Ok((Self::from_masters(masters), false));
            }
            return Ok((Self::add_signing_key(path, masters)?, false));
        }
        let rng = SystemRandom::new();
        let masters = Masters {
            active: 1,
            index_root: 1,
            keys: BTreeMap::from([(1, new_master(&rng)?)]),
            signing: Some(new_signing_key()?),
        };
        match write_new(path, &serialize(&masters)?) {
            Ok(()) => {
                tracing::info!(path = %path.display(), key_id = 1, "created new key file; back it up");
                Ok((Self::from_masters(masters), true))
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((Self::load(path)?, false)),
            Err(e) => Err(io_error("cannot create", path, e)),
        }
    }

    /// Give a key file written before bearer tokens existed its signing key, then load the file
    /// again: if another process added one at the same moment and its rename came last, we use
    /// that one rather than a key that is on no disk.
    fn add_signing_key(path: &Path, mut masters: Masters) -> Result<KeyRing, CryptoError> {
        masters.signing = Some(new_signing_key()?);
        write_replace(path, &serialize(&masters)?, &SystemRandom::new())?;
        tracing::info!(path = %path.display(), "added a token-signing key to the key file");
        Self::load(path)
    }

    /// Load an existing key file; an error if it does not exist. Only reads: a file without a
    /// token-signing key gives a ring without one.
    pub fn load(path: &Path) -> Result<KeyRing, CryptoError> {
        let bytes = read_key_file(path)?
            .ok_or_else(|| CryptoError::KeyFile(format!("{} does not exist", path.display())))?;
        Ok(Self::from_masters(parse(&bytes, &origin(path))?))
    }

    /// A ring from key-file JSON that was base64-encoded into an environment variable, for
    /// container deployments where mounting a 0600 file is awkward. Same content and validation as
    /// the file; surrounding whitespace is ignored. Such a ring can still [`rotate`](Self::rotate)
    /// into a file, but the environment value must then be replaced by hand.
    pub fn from_env_base64(value: &str) -> Result<KeyRing, CryptoError> {
        let origin = "key material from the environment";
        let json = BASE64
            .decode(value.trim())
            .map_err(|_| CryptoError::KeyFile(format!("{origin} is not valid base64")))?;
        Ok(Self::from_masters(parse(&json, origin)?))
    }

    /// For tests and benches: a ring from a fixed 32-byte master secret (key id 1, also the index
    /// root), in memory only, with a random token-signing key.
    pub fn from_master_secret(secret: [u8; 32]) -> KeyRing {
        let master = MasterKey {
            created: now_rfc3339(),
            secret,
        };
        Self::from_masters(Masters {
            active: 1,
            index_root: 1,
            keys: BTreeMap::from([(1, master)]),
            signing: Some(Arc::new(
                SigningKey::generate(now_rfc3339())
                    .expect("the system random source works in tests"),
            )),
        })
    }

    /// Add a new random master key, make it the active one for sealing, and write the key file at
    /// `path` back atomically (temp file with mode 0600 in the same directory, fsync, rename).
    /// Returns the new key id. Fails, changing nothing, if the file on disk holds a key this ring
    /// lacks (it was rotated elsewhere since this ring was loaded), or another signing key.
    ///
    /// The token-signing key is kept (tokens issued before stay valid); a ring without one gets one.
    pub fn rotate(&mut self, path: &Path) -> Result<KeyId, CryptoError> {
        if let Some(bytes) = read_key_file(path)? {
            let on_disk = parse(&bytes, &origin(path))?;
            let ours = &self.inner.masters.keys;
            for (id, key) in &on_disk.keys {
                if ours.get(id).map(|k| k.secret) != Some(key.secret) {
                    return Err(CryptoError::KeyFile(format!(
                        "{} holds key id {id}, which this key ring does not have; \
                         it changed since it was loaded: reload and rotate again",
                        path.display()
                    )));
                }
            }
            if let Some(theirs) = &on_disk.signing
                && self.inner.masters.signing.as_ref().map(|k| k.pkcs8()) != Some(theirs.pkcs8())
            {
                return Err(CryptoError::KeyFile(format!(
                    "{} holds a signing key this key ring does not have; \
                     it changed since it was loaded: reload and rotate again",
                    path.display()
                )));
            }
        }

        let mut masters = self.inner.masters.clone();
        let newest = masters.keys.keys().next_back().copied().unwrap_or(0);
        let new_id = newest
            .checked_add(1)
            .ok_or_else(|| CryptoError::KeyFile("no key ids left to rotate to".into()))?;
        masters.keys.insert(new_id, new_master(&self.inner.rng)?);
        masters.active = new_id;
        if masters.signing.is_none() {
            masters.signing = Some(new_signing_key()?);
        }

        write_replace(path, &serialize(&masters)?, &self.inner.rng)?;
        // Pseudonym and blind-index keys come from the unchanged index root: keep them, caches too.
        self.inner = Arc::new(Inner {
            data_keys: derive_data_keys(&masters),
            pseudonyms: Arc::clone(&self.inner.pseudonyms),
            blind: Arc::clone(&self.inner.blind),
            rng: SystemRandom::new(),
            masters,
        });
        tracing::info!(path = %path.display(), key_id = new_id, "rotated to a new data key");
        Ok(new_id)
    }

    /// The key id new data is sealed under.
    pub fn active_key_id(&self) -> KeyId {
        self.inner.masters.active
    }

    /// Every key id this ring can open, ascending.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.inner.masters.keys.keys().copied().collect()
    }

    /// Seal `plaintext` with AES-256-GCM under the active data key, bound to `aad`.
    /// Output: format version (1) | key id (u32 BE) | 12-byte random nonce | ciphertext+tag.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = self.inner.masters.active;
        let key = self
            .inner
            .data_keys
            .get(&id)
            .ok_or(CryptoError::UnknownKeyId(id))?;
        envelope::seal(key, id, &self.inner.rng, aad, plaintext)
    }

    /// Open a sealed blob with whichever key id it names (it must still be in the ring). Fails on
    /// any tampering, and when `aad` is not the one it was sealed with.
    pub fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        envelope::open(|id| self.inner.data_keys.get(&id), aad, sealed)
    }

    /// The key id a sealed blob names, without decrypting (`None` if it is not a sealed blob).
    /// Background re-sealing uses this to find rows not yet under the active key.
    pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
        envelope::sealed_key_id(sealed)
    }

    /// The pseudonym for a patient's stable identity string (e.g.
    /// `urn:oid:1.2.40.0.10.1.4.3.1|1234010180`): HMAC-SHA256 under the pseudonym key, first 20
    /// bytes as lowercase unpadded base32 (32 characters). Deterministic, and unchanged by rotation.
    pub fn pseudonym(&self, identity: &str) -> String {
        self.inner.pseudonyms.pseudonym(identity)
    }

    /// The blind-index token for one search-parameter value: HMAC-SHA256 under the key for `param`,
    /// truncated to `bits` bits (see [`BlindIndexer::token`]), lowercase hex.
    pub fn blind_token(&self, param: &str, value: &str, bits: u32) -> String {
        self.inner.blind.token(param, value, bits)
    }

    /// The key that signs bearer tokens; `None` for a ring read by [`load`](Self::load) or from the
    /// environment out of a key file that predates tokens.
    pub fn signing_key(&self) -> Option<Arc<SigningKey>> {
        self.inner.masters.signing.clone()
    }

    /// The blind indexer behind [`blind_token`](Self::blind_token), for code that only indexes.
    pub fn blind_indexer(&self) -> &BlindIndexer {
        &self.inner.blind
    }

    fn from_masters(masters: Masters) -> KeyRing {
        // `parse` and the constructors guarantee the index root is present.
        let root = &masters.keys[&masters.index_root].secret;
        let root_prk = extract(root);
        let pseudonym_key: hmac::Key = expand(&root_prk, &[INFO_PSEUDONYM], hmac::HMAC_SHA256);
        let inner = Inner {
            data_keys: derive_data_keys(&masters),
            pseudonyms: Arc::new(Pseudonymizer::new(pseudonym_key)),
            blind: Arc::new(BlindIndexer::new(root_prk)),
            rng: SystemRandom::new(),
            masters,
        };
        KeyRing {
            inner: Arc::new(inner),
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.inner.masters.active)
            .field("index_root_key", &self.inner.masters.index_root)
            .field("key_ids", &self.key_ids())
            .field("signing_key", &self.inner.masters.signing)
            .finish_non_exhaustive()
    }
}

fn derive_data_keys(masters: &Masters) -> BTreeMap<KeyId, LessSafeKey> {
    masters
        .keys
        .iter()
        .map(|(&id, master)| {
            let key: UnboundKey = expand(
                &extract(&master.secret),
                &[INFO_DATA_KEY],
                &aead::AES_256_GCM,
            );
            (id, LessSafeKey::new(key))
        })
        .collect()
}

fn new_master(rng: &SystemRandom) -> Result<MasterKey, CryptoError> {
    let mut secret = [0u8; SECRET_LEN];
    rng.fill(&mut secret).map_err(|_| CryptoError::Random)?;
    Ok(MasterKey {
        created: now_rfc3339(),
        secret,
    })
}

fn new_signing_key() -> Result<Arc<SigningKey>, CryptoError> {
    SigningKey::generate(now_rfc3339()).map(Arc::new)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---- parsing and serialising -------------------------------------------------------------------

fn origin(path: &Path) -> String {
    path.display().to_string()
}

/// Validate key-file JSON. Error messages name fields and key ids, never values: serde's own
/// messages can quote the offending value, which here may be a secret.
fn parse(json: &[u8], origin: &str) -> Result<Masters, CryptoError> {
    let bad = |what: String| CryptoError::KeyFile(format!("{origin}: {what}"));
    let file: KeyFile = serde_json::from_slice(json).map_err(|e| bad(describe_json_error(&e)))?;

    if file.format != KEY_FILE_FORMAT {
        return Err(bad(format!(
            "format {} is not supported (this build reads format {KEY_FILE_FORMAT})",
            file.format
        )));
    }
    let mut keys = BTreeMap::new();
    for entry in file.keys {
        let secret: [u8; SECRET_LEN] = BASE64
            .decode(entry.secret.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "key id {}: secret must be base64 of 32 bytes",
                    entry.id
                ))
            })?;
        let master = MasterKey {
            created: entry.created,
            secret,
        };
        if keys.insert(entry.id, master).is_some() {
            return Err(bad(format!("key id {} appears more than once", entry.id)));
        }
    }
    if keys.is_empty() {
        return Err(bad("holds no keys".into()));
    }
    let signing = file
        .signing_key
        .map(|entry| parse_signing_key(entry, &bad))
        .transpose()?;
    for (field, id) in [
        ("active", file.active),
        ("index_root_key", file.index_root_key),
    ] {
        if !keys.contains_key(&id) {
            return Err(bad(format!(
                "\"{field}\" names key id {id}, which is not in \"keys\""
            )));
        }
    }
    Ok(Masters {
        active: file.active,
        index_root: file.index_root_key,
        keys,
        signing,
    })
}

fn parse_signing_key(
    entry: SigningKeyEntry,
    bad: &dyn Fn(String) -> CryptoError,
) -> Result<Arc<SigningKey>, CryptoError> {
    if entry.algorithm != SIGNING_ALGORITHM {
        return Err(bad(format!(
            "signing_key: algorithm must be {SIGNING_ALGORITHM}"
        )));
    }
    let pkcs8 = BASE64
        .decode(entry.pkcs8.trim())
        .map_err(|_| bad("signing_key: pkcs8 must be base64".into()))?;
    SigningKey::from_pkcs8(pkcs8, entry.created)
        .map(Arc::new)
        .map_err(|_| bad("signing_key: pkcs8 is not a PKCS#8 ECDSA P-256 key".into()))
}

/// What is wrong with some JSON, without quoting any of its values (serde's own messages may).
/// Shared with `auth::token`, whose untrusted token payloads carry values we must not log either.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    let position = format!("line {}, column {}", e.line(), e.column());
    let message = e.to_string();
    // Field-name complaints are safe and useful to repeat; anything else may quote a value.
    let safe = ["missing field", "unknown field", "duplicate field"];
    match safe.iter().find(|prefix| message.starts_with(*prefix)) {
        Some(_) => {
            let detail = message.split(" at line ").next().unwrap_or(&message);
            format!("{detail} ({position})")
        }
        None => match e.classify() {
            serde_json::error::Category::Data => format!("a field has the wrong type ({position})"),
            _ => format!("not valid JSON ({position})"),
        },
    }
}

fn serialize(masters: &Masters) -> Result<Vec<u8>, CryptoError> {
    let file = KeyFile {
        format: KEY_FILE_FORMAT,
        active: masters.active,
        index_root_key: masters.index_root,
        keys: masters
            .keys
            .iter()
            .map(|(&id, key)| KeyEntry {
                id,
                created: key.created.clone(),
                secret: BASE64.encode(key.secret),
            })
            .collect(),
        signing_key: masters.signing.as_ref().map(|key| SigningKeyEntry {
            algorithm: SIGNING_ALGORITHM.to_string(),
            created: key.created().to_string(),
            pkcs8: BASE64.encode(key.pkcs8()),
        }),
    };
    let mut json = serde_json::to_vec_pretty(&file)
        .map_err(|_| CryptoError::KeyFile("could not serialise the key file".into()))?;
    json.push(b'\n');
    Ok(json)
}

// ---- file handling -----------------------------------------------------------------------------

fn io_error(action: &str, path: &Path, e: io::Error) -> CryptoError {
    CryptoError::KeyFile(format!("{action} {}: {e}", path.display()))
}

/// Read the key file, `None` if it does not exist. Checks permissions on the opened handle, so
/// the file checked is the file read.
fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, CryptoError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| io_error("cannot stat", path, e))?;
    if !meta.is_file() {
        return Err(CryptoError::KeyFile(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    check_private(&meta, path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error("cannot read", path, e))?;
    Ok(Some(bytes))
}

#[cfg(unix)]
fn check_private(meta: &fs::Metadata, path: &Path) -> Result<(), CryptoError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyFile(format!(
            "{p} has mode {mode:03o}, so other users may read the master keys; \
             run `chmod 600 {p}` and start again",
            p = path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &fs::Metadata, _path: &Path) -> Result<(), CryptoError> {
    Ok(())
}

/// Open options for a new key file: must not exist yet, owner-only from the first byte.
fn new_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_parent(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Make a rename or creation inside `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Create the key file; fails with `AlreadyExists` if someone else got there first. Writing in
/// place (not temp + rename) is what makes that race detectable: a rename would silently replace
/// a key another process may already be sealing with.
/// Create the key file only if there is none, whole: the contents go to a temporary file first
/// and are hard-linked into place, which fails if the file exists. A process starting at the same
/// moment (a server and `token issue`) never reads a half-written file.
fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    create_parent(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let result = (|| {
        let mut file = new_file_options().open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(&dir)
}

/// Replace (or create) the key file atomically: readers see the old or the new file, never half.
fn write_replace(path: &Path, contents: &[u8], rng: &SystemRandom) -> Result<(), CryptoError> {
    let dir = parent_dir(path);
    create_parent(&dir).map_err(|e| io_error("cannot create directory", &dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| CryptoError::KeyFile(format!("{} is not a file path", path.display())))?;
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix).map_err(|_| CryptoError::Random)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));

    let result = (|| {
        let mut file = new_file_options().open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        // Best effort: don't leave a copy of the keys lying around under another name.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io_error("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::from_master_secret([42; 32])
    }

    const PATIENT_V1: Aad<'static> = Aad::Resource {
        resource_type: "Patient",
        id: "p1",
        version: 1,
    };

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// No temp file was left behind: the directory holds the key file only.
    fn assert_only_the_key_file(dir: &std::path::Path) {
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keys.json"]);
    }

    #[test]
    fn keyring_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<KeyRing>();
    }

    #[test]
    fn seal_open_round_trip() {
        let ring = ring();
        for plaintext in [&b""[..], b"{\"resourceType\":\"Patient\"}", &[0u8; 5000]] {
            let sealed = ring.seal(&PATIENT_V1, plaintext).unwrap();
            assert_eq!(sealed.len(), 1 + 4 + 12 + plaintext.len() + 16);
            assert_eq!(ring.open(&PATIENT_V1, &sealed).unwrap(), plaintext);
        }
        let blob = Aad::Blob {
            purpose: "import",
            key: "batch-7",
        };
        let sealed = ring.seal(&blob, b"staged").unwrap();
        assert_eq!(ring.open(&blob, &sealed).unwrap(), b"staged");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let ring = ring();
        let a = ring.seal(&PATIENT_V1, b"same").unwrap();
        let b = ring.seal(&PATIENT_V1, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn open_fails_for_another_row() {
        let ring = ring();
        let sealed = ring.seal(&PATIENT_V1, b"secret").unwrap();
        let others = [
            Aad::Resource {
                resource_type: "Patient",
                id: "p2",
                version: 1,
            },
            Aad::Resource {
                resource_type: "Patient",
                id: "p1",
                version: 2,
            },
            Aad::Resource {
                resource_type: "Observation",
                id: "p1",
                version: 1,
            },
            Aad::Blob {
                purpose: "Patient",
                key: "p1",
            },
        ];
        for aad in others {
            assert!(
                matches!(ring.open(&aad, &sealed), Err(CryptoError::Decrypt)),
                "{aad:?}"
            );
        }
    }

    #[test]
    fn open_fails_on_any_flipped_bit_or_truncation() {
        let ring = ring();
        let sealed = ring.seal(&PATIENT_V1, b"secret").unwrap();
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(ring.open(&PATIENT_V1, &tampered).is_err(), "byte {i}");
        }
        for len in 0..sealed.len() {
            assert!(
                ring.open(&PATIENT_V1, &sealed[..len]).is_err(),
                "length {len}"
            );
        }
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(ring.open(&PATIENT_V1, &extended).is_err());
    }

    #[test]
    fn open_reports_unknown_key_id_and_malformed() {
        let ring = ring();
        let mut sealed = ring.seal(&PATIENT_V1, b"secret").unwrap();
        sealed[1..5].copy_from_slice(&99u32.to_be_bytes());
        assert!(matches!(
            ring.open(&PATIENT_V1, &sealed),
            Err(CryptoError::UnknownKeyId(99))
        ));
        assert!(matches!(
            ring.open(&PATIENT_V1, b"short"),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn sealed_key_id_reads_the_header() {
        let ring = ring();
        let sealed = ring.seal(&PATIENT_V1, b"x").unwrap();
        assert_eq!(KeyRing::sealed_key_id(&sealed), Some(1));
        assert_eq!(KeyRing::sealed_key_id(&sealed[..10]), None);
        assert_eq!(KeyRing::sealed_key_id(b""), None);
    }

    #[test]
    fn create_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/keys.json");
        let (created, was_created) = KeyRing::load_or_create(&path).unwrap();
        assert!(was_created);
        assert_eq!(created.key_ids(), [1]);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);

        let (loaded, was_created) = KeyRing::load_or_create(&path).unwrap();
        assert!(!was_created);
        let sealed = created.seal(&PATIENT_V1, b"hello").unwrap();
        assert_eq!(loaded.open(&PATIENT_V1, &sealed).unwrap(), b"hello");
        assert_eq!(loaded.pseudonym("a|1"), created.pseudonym("a|1"));
        assert_eq!(KeyRing::load(&path).unwrap().key_ids(), [1]);
    }

    #[test]
    fn load_requires_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = KeyRing::load(&dir.path().join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_readable_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        KeyRing::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
        assert!(KeyRing::load_or_create(&path).is_err());
    }

    #[test]
    fn rotation_keeps_old_data_and_index_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (mut ring, _) = KeyRing::load_or_create(&path).unwrap();
        let pseudonym = ring.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010180");
        let token = ring.blind_token("Patient.family", "muller", 32);
        let old = ring.seal(&PATIENT_V1, b"old").unwrap();

        assert_eq!(ring.rotate(&path).unwrap(), 2);
        assert_eq!(ring.active_key_id(), 2);
        assert_eq!(ring.key_ids(), [1, 2]);
        let new = ring.seal(&PATIENT_V1, b"new").unwrap();
        assert_eq!(KeyRing::sealed_key_id(&new), Some(2));
        assert_eq!(ring.open(&PATIENT_V1, &old).unwrap(), b"old");
        assert_eq!(
            ring.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010180"),
            pseudonym
        );
        assert_eq!(ring.blind_token("Patient.family", "muller", 32), token);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);

        let reloaded = KeyRing::load(&path).unwrap();
        assert_eq!(reloaded.active_key_id(), 2);
        assert_eq!(reloaded.key_ids(), [1, 2]);
        assert_eq!(reloaded.open(&PATIENT_V1, &old).unwrap(), b"old");
        assert_eq!(reloaded.open(&PATIENT_V1, &new).unwrap(), b"new");
        assert_eq!(
            reloaded.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010180"),
            pseudonym
        );
        assert_eq!(reloaded.blind_token("Patient.family", "muller", 32), token);

        assert_only_the_key_file(dir.path());
    }

    #[test]
    fn rotate_refuses_to_drop_keys_written_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (mut stale, _) = KeyRing::load_or_create(&path).unwrap();
        let mut other = KeyRing::load(&path).unwrap();
        other.rotate(&path).unwrap();
        let err = stale.rotate(&path).unwrap_err().to_string();
        assert!(err.contains("key id 2"), "{err}");
        assert_eq!(stale.key_ids(), [1]);
        assert_eq!(KeyRing::load(&path).unwrap().key_ids(), [1, 2]);
    }

    #[test]
    fn rotating_a_clone_leaves_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let original = ring();
        let mut rotated = original.clone();
        rotated.rotate(&dir.path().join("keys.json")).unwrap();
        assert_eq!(original.key_ids(), [1]);
        assert_eq!(rotated.key_ids(), [1, 2]);
    }

    #[test]
    fn env_value_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (from_file, _) = KeyRing::load_or_create(&path).unwrap();
        let encoded = BASE64.encode(fs::read(&path).unwrap());
        let from_env = KeyRing::from_env_base64(&format!("{encoded}\n")).unwrap();
        assert_eq!(from_env.pseudonym("x|1"), from_file.pseudonym("x|1"));
        let sealed = from_file.seal(&PATIENT_V1, b"v").unwrap();
        assert_eq!(from_env.open(&PATIENT_V1, &sealed).unwrap(), b"v");
        assert!(KeyRing::from_env_base64("not base64!").is_err());
    }

    #[test]
    fn bad_key_files_are_rejected_without_echoing_secrets() {
        let secret = BASE64.encode([7u8; 32]);
        let short = BASE64.encode([7u8; 31]);
        let key = |id: u32, s: &str| {
            format!(r#"{{"id":{id},"created":"2025-01-01T00:00:00Z","secret":"{s}"}}"#)
        };
        let file = |format: u32, active: u32, root: u32, keys: &[String]| {
            format!(
                r#"{{"format":{format},"active":{active},"index_root_key":{root},"keys":[{}]}}"#,
                keys.join(",")
            )
        };
        let cases = [
            (file(1, 1, 1, &[key(1, &secret)]), None),
            (file(2, 1, 1, &[key(1, &secret)]), Some("format 2")),
            (
                file(1, 2, 1, &[key(1, &secret)]),
                Some("\"active\" names key id 2"),
            ),
            (
                file(1, 1, 3, &[key(1, &secret)]),
                Some("\"index_root_key\" names key id 3"),
            ),
            (
                file(1, 1, 1, &[key(1, &secret), key(1, &secret)]),
                Some("more than once"),
            ),
            (file(1, 1, 1, &[key(1, &short)]), Some("base64 of 32 bytes")),
            (file(1, 1, 1, &[]), Some("no keys")),
            (
                format!(r#"{{"format":1,"active":1,"keys":[{}]}}"#, key(1, &secret)),
                Some("missing field"),
            ),
            (
                format!(r#"{{"format":1,"active":"{secret}","index_root_key":1,"keys":[]}}"#),
                Some("wrong type"),
            ),
            ("{".to_owned(), Some("not valid JSON")),
        ];
        for (json, expected) in cases {
            let result = parse(json.as_bytes(), "test");
            match expected {
                None => assert!(result.is_ok()),
                Some(fragment) => {
                    let message = result.err().expect("should fail").to_string();
                    assert!(message.contains(fragment), "{message}");
                    assert!(!message.contains(&secret[..20]), "secret leaked: {message}");
                }
            }
        }
    }

    #[test]
    fn debug_shows_ids_only() {
        let secret = [0xabu8; 32];
        let shown = format!("{:?}", KeyRing::from_master_secret(secret));
        assert!(shown.contains("key_ids: [1]"), "{shown}");
        assert!(
            !shown.contains(&BASE64.encode(secret)[..16]) && !shown.contains("abab"),
            "{shown}"
        );
    }

    #[test]
    fn pseudonyms_and_tokens_depend_on_the_master() {
        let a = KeyRing::from_master_secret([1; 32]);
        let b = KeyRing::from_master_secret([2; 32]);
        assert_eq!(a.pseudonym("s|1").len(), 32);
        assert_eq!(a.pseudonym("s|1"), a.pseudonym("s|1"));
        assert_ne!(a.pseudonym("s|1"), a.pseudonym("s|2"));
        assert_ne!(a.pseudonym("s|1"), b.pseudonym("s|1"));
        assert_ne!(a.blind_token("p", "v", 64), b.blind_token("p", "v", 64));
        assert_eq!(a.blind_token("p", "v", 64).len(), 16);
    }

    #[test]
    fn data_sealed_by_one_master_does_not_open_under_another() {
        let a = KeyRing::from_master_secret([1; 32]);
        let b = KeyRing::from_master_secret([2; 32]);
        let sealed = a.seal(&PATIENT_V1, b"x").unwrap();
        assert!(matches!(
            b.open(&PATIENT_V1, &sealed),
            Err(CryptoError::Decrypt)
        ));
    }

    /// A key file as written before bearer tokens existed: master keys only.
    fn write_legacy_key_file(path: &Path) {
        let json = format!(
            r#"{{"format":1,"active":1,"index_root_key":1,"keys":[{{"id":1,"created":"2025-01-01T00:00:00Z","secret":"{}"}}]}}"#,
            BASE64.encode([9u8; 32])
        );
        let mut file = new_file_options().open(path).unwrap();
        file.write_all(json.as_bytes()).unwrap();
    }

    #[test]
    fn new_key_files_hold_a_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (created, _) = KeyRing::load_or_create(&path).unwrap();
        let public = created
            .signing_key()
            .expect("signing key")
            .public_key()
            .to_vec();
        assert_eq!(public.len(), 65);
        let loaded = KeyRing::load(&path).unwrap();
        assert_eq!(loaded.signing_key().unwrap().public_key(), public);
    }

    #[test]
    fn a_legacy_key_file_gets_a_signing_key_on_load_or_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        write_legacy_key_file(&path);
        let before = KeyRing::load(&path).unwrap();
        assert!(before.signing_key().is_none(), "load only reads");

        let (upgraded, created) = KeyRing::load_or_create(&path).unwrap();
        assert!(!created);
        let public = upgraded.signing_key().expect("added").public_key().to_vec();
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        // The master keys, and so the data and pseudonyms, are untouched.
        assert_eq!(upgraded.pseudonym("s|1"), before.pseudonym("s|1"));
        let sealed = before.seal(&PATIENT_V1, b"x").unwrap();
        assert_eq!(upgraded.open(&PATIENT_V1, &sealed).unwrap(), b"x");
        // Added once: the next start keeps it.
        let (again, _) = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(again.signing_key().unwrap().public_key(), public);
        assert_only_the_key_file(dir.path());
    }

    #[test]
    fn rotation_keeps_the_signing_key_and_adds_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (mut ring, _) = KeyRing::load_or_create(&path).unwrap();
        let public = ring.signing_key().unwrap().public_key().to_vec();
        ring.rotate(&path).unwrap();
        assert_eq!(ring.signing_key().unwrap().public_key(), public);
        assert_eq!(
            KeyRing::load(&path)
                .unwrap()
                .signing_key()
                .unwrap()
                .public_key(),
            public
        );

        let legacy = dir.path().join("legacy.json");
        write_legacy_key_file(&legacy);
        let mut ring = KeyRing::load(&legacy).unwrap();
        ring.rotate(&legacy).unwrap();
        assert!(ring.signing_key().is_some());
        assert!(KeyRing::load(&legacy).unwrap().signing_key().is_some());
    }

    #[test]
    fn rotate_refuses_when_the_signing_key_changed_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        write_legacy_key_file(&path);
        let mut stale = KeyRing::load(&path).unwrap();
        KeyRing::load_or_create(&path).unwrap();
        let err = stale.rotate(&path).unwrap_err().to_string();
        assert!(err.contains("signing key"), "{err}");
    }

    #[test]
    fn bad_signing_keys_are_rejected_without_echoing_them() {
        let secret = BASE64.encode([7u8; 32]);
        let file = |signing: &str| {
            format!(
                r#"{{"format":1,"active":1,"index_root_key":1,"keys":[{{"id":1,"created":"x","secret":"{secret}"}}],"signing_key":{signing}}}"#
            )
        };
        let garbage = BASE64.encode([5u8; 138]);
        let cases = [
            (
                file(&format!(
                    r#"{{"algorithm":"ES384","created":"x","pkcs8":"{garbage}"}}"#
                )),
                "algorithm must be ES256",
            ),
            (
                file(r#"{"algorithm":"ES256","created":"x","pkcs8":"!!"}"#),
                "pkcs8 must be base64",
            ),
            (
                file(&format!(
                    r#"{{"algorithm":"ES256","created":"x","pkcs8":"{garbage}"}}"#
                )),
                "not a PKCS#8 ECDSA P-256 key",
            ),
        ];
        for (json, fragment) in cases {
            let message = parse(json.as_bytes(), "test")
                .err()
                .expect("should fail")
                .to_string();
            assert!(message.contains(fragment), "{message}");
            assert!(
                !message.contains(&garbage[..16]),
                "key material leaked: {message}"
            );
        }
    }

    #[test]
    fn debug_hides_the_signing_key() {
        let ring = ring();
        let pkcs8 = BASE64.encode(ring.signing_key().unwrap().pkcs8());
        let shown = format!("{ring:?}");
        assert!(shown.contains("ES256"), "{shown}");
        assert!(!shown.contains(&pkcs8[40..60]), "{shown}");
    }
}
