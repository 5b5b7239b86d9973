//! Fernet tokens (the `cryptography` package's format) with RustCrypto, so
//! encrypted messages interoperate with channels_redis and need no OpenSSL.
//!
//! token = base64url(0x80 | u64 BE timestamp | 16-byte IV | AES-128-CBC-PKCS7
//! ciphertext | HMAC-SHA256 of all before). A channels_redis key string `k`
//! becomes the 32-byte Fernet key sha256(k): signing half first.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

const VERSION: u8 = 0x80;
const HEADER: usize = 1 + 8 + 16;
const TAG: usize = 32;
/// `cryptography` refuses tokens stamped this far in the future.
const MAX_CLOCK_SKEW: u64 = 60;

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Clone)]
pub struct Fernet {
    signing: [u8; 16],
    encryption: [u8; 16],
}

/// Why a token was refused. Deliberately vague, as a token is either valid
/// under a key or not; callers name the layer-level cause.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidToken;

impl Fernet {
    /// The key channels_redis derives from one `symmetric_encryption_keys` entry.
    pub fn from_secret(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        let (signing, encryption) = digest.split_at(16);
        Fernet {
            signing: signing.try_into().expect("16 bytes"),
            encryption: encryption.try_into().expect("16 bytes"),
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.signing).expect("HMAC takes any key length")
    }

    pub fn encrypt(&self, plaintext: &[u8], now: u64, iv: [u8; 16]) -> Vec<u8> {
        let ciphertext = cbc::Encryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into())
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        let mut token = Vec::with_capacity(HEADER + ciphertext.len() + TAG);
        token.push(VERSION);
        token.extend_from_slice(&now.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&ciphertext);
        let mut mac = self.mac();
        mac.update(&token);
        token.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(token).into_bytes()
    }

    /// The plaintext of `token`, if this key made it and, with `ttl`, it is at
    /// most `ttl` seconds old.
    pub fn decrypt(
        &self,
        token: &[u8],
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Vec<u8>, InvalidToken> {
        let data = URL_SAFE.decode(token).map_err(|_| InvalidToken)?;
        if data.len() < HEADER + TAG || data[0] != VERSION {
            return Err(InvalidToken);
        }
        let stamped = u64::from_be_bytes(data[1..9].try_into().expect("8 bytes"));
        if ttl.is_some_and(|ttl| stamped.saturating_add(ttl) < now)
            || now + MAX_CLOCK_SKEW < stamped
        {
            return Err(InvalidToken);
        }
        let (signed, tag) = data.split_at(data.len() - TAG);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| InvalidToken)?;
        let iv: [u8; 16] = data[9..HEADER].try_into().expect("16 bytes");
        cbc::Decryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(&signed[HEADER..])
            .map_err(|_| InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let key = Fernet::from_secret(b"a key");
        let token = key.encrypt(b"hello", 1_000, [7; 16]);
        assert_eq!(key.decrypt(&token, Some(70), 1_050), Ok(b"hello".to_vec()));
        assert_eq!(key.decrypt(&token, Some(70), 1_071), Err(InvalidToken));
        assert_eq!(key.decrypt(&token, None, 1_000_000), Ok(b"hello".to_vec()));
        assert_eq!(key.decrypt(&token, None, 900), Err(InvalidToken));
        assert_eq!(
            Fernet::from_secret(b"other").decrypt(&token, None, 1_000),
            Err(InvalidToken)
        );
        let mut tampered = token.clone();
        tampered[30] ^= 1;
        assert_eq!(key.decrypt(&tampered, None, 1_000), Err(InvalidToken));
    }
}
