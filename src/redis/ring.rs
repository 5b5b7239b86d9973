//! Which shard a name lives on: channels_redis's consistent hash, so a mixed
//! fleet agrees on where every key is.

/// channels_redis's shard of a name: crc32, 12 bits, scaled to the ring.
pub fn consistent_hash(name: &str, ring: usize) -> usize {
    if ring == 1 {
        return 0;
    }
    let bucket = f64::from(crc32(name.as_bytes()) & 0xFFF);
    (bucket / (4096.0 / ring as f64)) as usize
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_the_wire_format_spec() {
        assert_eq!(consistent_hash("key_one", 2), 1);
        assert_eq!(consistent_hash("key_two", 2), 0);
        assert_eq!(consistent_hash("key_one", 10), 6);
        assert_eq!(consistent_hash("key_two", 10), 4);
        assert_eq!(consistent_hash("anything", 1), 0);
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
