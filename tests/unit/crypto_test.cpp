// fedseg::crypto: HKDF (RFC 5869), Bech32 (BIP-173), base64 strictness, age v1
// round trips at chunk boundaries, failure classes, the all-zero shared secret,
// minisign keys/signatures (including known answers from Debian's minisign 0.11
// and age 1.1.1), and key-file permission refusal.
#include <gtest/gtest.h>

#include "test_util.h"
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/sha256.h"
#include "crypto/age.h"
#include "crypto/encoding.h"
#include "crypto/minisign.h"

namespace fedseg::crypto {
namespace {

using fedseg::test::error_code;
using fedseg::test::tmpdir;

std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

std::string hex(const Bytes& b) { return to_hex(b.data(), b.size()); }

std::string range_bytes(int from, int to) {
  std::string s;
  for (int i = from; i < to; ++i) s += static_cast<char>(i);
  return s;
}

std::string pattern(size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string encrypt_str(const std::vector<AgeRecipient>& rs, const std::string& plain) {
  StringSource in(plain);
  StringSink out;
  age_encrypt(rs, in, out);
  return out.data;
}

std::string decrypt_str(const std::vector<AgeIdentity>& ids, const std::string& ct) {
  StringSource in(ct);
  StringSink out;
  age_decrypt(ids, in, out);
  return out.data;
}

// The failure class of decrypting ct, or "success".
std::string decrypt_class(const std::vector<AgeIdentity>& ids, const std::string& ct) {
  try {
    decrypt_str(ids, ct);
  } catch (const DecryptError& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    return e.kind_name();
  }
  return "success";
}

// ---- HKDF ------------------------------------------------------------------------

TEST(Hkdf, Rfc5869TestVectors) {
  struct Case {
    std::string ikm, salt, info;
    size_t len;
    const char* okm;
  } cases[] = {
      {std::string(22, '\x0b'), range_bytes(0, 13), range_bytes(0xf0, 0xfa), 42,
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {range_bytes(0, 0x50), range_bytes(0x60, 0xb0), range_bytes(0xb0, 0x100), 82,
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f0"
       "9b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {std::string(22, '\x0b'), "", "", 42,
       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(hex(hkdf_sha256(c.ikm.data(), c.ikm.size(), c.salt.data(), c.salt.size(), c.info, c.len)), c.okm);
    uint8_t out32[32];
    hkdf_sha256_32(out32, c.ikm.data(), c.ikm.size(), c.salt.data(), c.salt.size(), c.info);
    EXPECT_EQ(to_hex(out32, 32), std::string(c.okm).substr(0, 64));
  }
}

// ---- Bech32 / base64 -------------------------------------------------------------

TEST(Bech32, Bip173ValidStrings) {
  for (const char* s : {"A12UEL5L", "a12uel5l",
                        "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
                        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
                        "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
                        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w", "?1ezyfcl"}) {
    auto d = bech32_decode(s);
    ASSERT_TRUE(d.has_value()) << s;
    std::string lower = s;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(bech32_encode(d->hrp, d->data.data(), d->data.size()), lower) << s;
  }
}

TEST(Bech32, Bip173InvalidStrings) {
  for (const char* s : {"\x20" "1nwldj5", "\x7f" "1axkwrx", "\x80" "1eym55h", "pzry9x0s0muk", "1pzry9x0s0muk",
                        "x1b4n0q5v", "li1dgmt3", "de1lg7wt\xff", "A1G7SGD8", "10a06t8", "1qzzfhee",
                        "A12UEl5L" /* mixed case */}) {
    EXPECT_FALSE(bech32_decode(s).has_value()) << s;
  }
  // age drops BIP-173's 90-character limit: this one is invalid only for its length.
  EXPECT_TRUE(bech32_decode("an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx")
                  .has_value());
}

TEST(Bech32, AgeKeys) {
  const std::string sk = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";
  AgeIdentity id = AgeIdentity::parse(sk);
  EXPECT_EQ(id.to_string(), sk);
  // What `age-keygen -y` prints for it.
  EXPECT_EQ(id.recipient().to_string(), "age1xmwwc06ly3ee5rytxm9mflaz2u56jjj36s0mypdrwsvlul66mv4q47ryef");
  EXPECT_EQ(AgeRecipient::parse("age1xmwwc06ly3ee5rytxm9mflaz2u56jjj36s0mypdrwsvlul66mv4q47ryef"), id.recipient());
  EXPECT_EQ(AgeRecipient::parse("AGE1XMWWC06LY3EE5RYTXM9MFLAZ2U56JJJ36S0MYPDRWSVLUL66MV4Q47RYEF"), id.recipient());
  EXPECT_EQ(error_code([] { AgeRecipient::parse("age1xmwwc06ly3ee5rytxm9mflaz2u56jjj36s0mypdrwsvlul66mv4q47ryeg"); }), 65);
  EXPECT_EQ(error_code([&] { AgeRecipient::parse(id.recipient().to_string().substr(0, 20)); }), 65);
  EXPECT_EQ(error_code([&] { AgeIdentity::parse(id.recipient().to_string()); }), 65);  // wrong HRP
  EXPECT_EQ(error_code([&] { AgeRecipient::parse(sk); }), 65);
  AgeIdentity g = AgeIdentity::generate();
  EXPECT_EQ(AgeIdentity::parse(g.to_string()).recipient(), g.recipient());
  EXPECT_EQ(g.to_string().rfind("AGE-SECRET-KEY-1", 0), 0u);
  EXPECT_EQ(g.recipient().to_string().rfind("age1", 0), 0u);
}

TEST(Base64, CanonicalOnly) {
  EXPECT_EQ(base64_encode("\0\0", 2, false), "AAA");
  EXPECT_TRUE(base64_decode("AAA", false).has_value());
  EXPECT_FALSE(base64_decode("AAB", false).has_value());  // non-zero trailing bits
  EXPECT_FALSE(base64_decode("AA=", false).has_value());  // padding in the unpadded form
  EXPECT_FALSE(base64_decode("AAA=", false).has_value());
  EXPECT_FALSE(base64_decode("A", false).has_value());
  EXPECT_FALSE(base64_decode("AA A", false).has_value());
  EXPECT_FALSE(base64_decode("AA\nA", false).has_value());
  EXPECT_TRUE(base64_decode("AAA=", true).has_value());
  EXPECT_FALSE(base64_decode("AAA", true).has_value());
  EXPECT_FALSE(base64_decode("AAB=", true).has_value());
  EXPECT_EQ(base64_decode("", false)->size(), 0u);
}

// ---- age ----------------------------------------------------------------------------

size_t expected_ciphertext_size(size_t plain, size_t recipients) {
  size_t chunks = plain == 0 ? 1 : (plain + kAgeChunkSize - 1) / kAgeChunkSize;
  return 168 + 98 * (recipients - 1) + 16 + plain + 16 * chunks;
}

TEST(Age, RoundTripAtChunkBoundaries) {
  AgeIdentity a = AgeIdentity::generate(), b = AgeIdentity::generate();
  for (size_t n : {size_t(0), size_t(1), size_t(65535), size_t(65536), size_t(65537), size_t(3 * 65536),
                   size_t(3 * 65536 + 5)}) {
    std::string plain = pattern(n, static_cast<unsigned>(n));
    std::string ct = encrypt_str({a.recipient(), b.recipient()}, plain);
    EXPECT_EQ(ct.size(), expected_ciphertext_size(n, 2)) << n;
    EXPECT_EQ(decrypt_str({a}, ct), plain) << n;
    EXPECT_EQ(decrypt_str({b}, ct), plain) << n;
    // Odd write sizes through the Sink interface give the same plaintext back,
    // and read() in odd sizes returns it.
    StringSink out;
    {
      AgeEncryptor enc({a.recipient()}, out);
      size_t pos = 0, step = 1;
      while (pos < n) {
        size_t k = std::min(step, n - pos);
        enc.write(plain.data() + pos, k);
        pos += k;
        step = step * 3 + 7;
      }
      enc.finish();
      EXPECT_EQ(enc.plaintext_bytes(), n);
    }
    EXPECT_EQ(out.data.size(), expected_ciphertext_size(n, 1)) << n;
    StringSource in(out.data);
    AgeDecryptor dec({b, a}, in);
    std::string back;
    char buf[1000];
    for (size_t r; (r = dec.read(buf, sizeof buf - (back.size() % 7))) > 0;) back.append(buf, r);
    EXPECT_TRUE(dec.finished());
    EXPECT_EQ(back, plain) << n;
    // next_chunk into the caller's buffer: the same chunks, then false at the end.
    StringSource in2(out.data);
    AgeDecryptor dec2({a}, in2);
    std::string back2;
    std::vector<uint8_t> chunk(kAgeChunkSize);
    size_t got = 0, chunks = 0;
    while (dec2.next_chunk(chunk.data(), got)) {
      EXPECT_LE(got, kAgeChunkSize);
      back2.append(reinterpret_cast<const char*>(chunk.data()), got);
      ++chunks;
    }
    EXPECT_EQ(chunks, n == 0 ? 1u : (n + kAgeChunkSize - 1) / kAgeChunkSize) << n;
    EXPECT_FALSE(dec2.next_chunk(chunk.data(), got));
    EXPECT_EQ(back2, plain) << n;
  }
}

TEST(Age, DecryptsFileMadeByAgeCli) {
  // Made with Debian's age 1.1.1: printf 'fedseg age known-answer test\n' | age -r <recipient> | base64
  auto id = AgeIdentity::parse("AGE-SECRET-KEY-1XN9NHWKPG3JR5GG58946RWAZC4S56J0D0HY5XTJAJZEPP88SUZ2S7UDKN8");
  auto ct = base64_decode(
      "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBQbzJXeHJWc1VwREVTSTJZYTVod250ckQycnFXVUdxY0tIT2Ntb2g0NEg4CkJnaVBBYnVp"
      "NHE3dGJ2TkVGS0hqVmRBbHp5S1c1cEM0Sng5ZFY3WlMwWWMKLS0tIGdkVUU1VklDMmgzeHNWSXJ0dzQ4M1hIaVVkZEN3N3R2MzZmSy95ajA0aFEK"
      "Jz/4iU7zhBIMl+YKmO0d7KS9yR/hgvwdS7+S8tsi3MGKB/AUwy69hvdCBi5cidwz5BWlAPrWe1HwLDG5Ng==",
      true);
  ASSERT_TRUE(ct.has_value());
  EXPECT_EQ(decrypt_str({id}, std::string(ct->begin(), ct->end())), "fedseg age known-answer test\n");
}

TEST(Age, FailureClasses) {
  AgeIdentity a = AgeIdentity::generate(), other = AgeIdentity::generate();
  std::string plain = pattern(2 * 65536 + 100);
  std::string ct = encrypt_str({a.recipient()}, plain);
  size_t hdr = ct.find("\n--- ") + 5 + 43 + 1;  // end of header
  ASSERT_EQ(hdr, 168u);
  EXPECT_EQ(decrypt_class({a}, ct), "success");
  EXPECT_EQ(decrypt_class({other}, ct), "no_match");
  EXPECT_EQ(decrypt_class({}, ct), "no_match");
  EXPECT_EQ(decrypt_class({other, a}, ct), "success");

  auto flipped = [&](size_t pos, char bit = 1) {
    std::string t = ct;
    t[pos] = static_cast<char>(t[pos] ^ bit);
    return t;
  };
  EXPECT_EQ(decrypt_class({a}, flipped(3)), "header");                       // version line
  EXPECT_EQ(decrypt_class({a}, flipped(ct.find("X25519"))), "no_match");      // stanza type: not ours
  {
    // The wrapped file key: another base64 letter, still canonical (not the last).
    std::string t = ct;
    size_t p = ct.find("\n", 30) + 3;
    t[p] = t[p] == 'A' ? 'B' : 'A';
    EXPECT_EQ(decrypt_class({a}, t), "no_match");
  }
  // The MAC: swapping a base64 letter keeps it canonical but wrong.
  {
    std::string t = ct;
    size_t m = ct.find("\n--- ") + 5;
    t[m] = t[m] == 'A' ? 'B' : 'A';
    EXPECT_EQ(decrypt_class({a}, t), "hmac");
  }
  // A header byte covered only by the MAC: an extra unknown stanza.
  {
    std::string t = ct;
    t.insert(22, "-> grease x\n\n");
    EXPECT_EQ(decrypt_class({a}, t), "hmac");
  }
  EXPECT_EQ(decrypt_class({a}, std::string(ct).replace(ct.find("\n---"), 1, "\r\n")), "header");
  EXPECT_EQ(decrypt_class({a}, ct.substr(0, hdr)), "header");       // no nonce
  EXPECT_EQ(decrypt_class({a}, ct.substr(0, hdr + 10)), "header");  // short nonce
  EXPECT_EQ(decrypt_class({a}, ct.substr(0, hdr + 16)), "payload");  // no chunk
  EXPECT_EQ(decrypt_class({a}, flipped(hdr + 16 + 5)), "payload");   // first chunk
  EXPECT_EQ(decrypt_class({a}, flipped(ct.size() - 1)), "payload");  // last tag
  EXPECT_EQ(decrypt_class({a}, ct.substr(0, ct.size() - 1)), "payload");
  EXPECT_EQ(decrypt_class({a}, ct + "x"), "payload");
  // Cut exactly after a full middle chunk: authenticated so far, but no final chunk.
  EXPECT_EQ(decrypt_class({a}, ct.substr(0, hdr + 16 + 65536 + 16)), "payload");
  EXPECT_EQ(decrypt_class({a}, ""), "header");
  EXPECT_EQ(decrypt_class({a}, "age-encryption.org/v2\n"), "header");

  // Released plaintext is exactly the chunks that authenticated.
  {
    std::string t = flipped(hdr + 16 + 65536 + 16 + 7);  // second chunk
    StringSource in(t);
    StringSink out;
    try {
      age_decrypt({a}, in, out);
      ADD_FAILURE() << "tampered second chunk decrypted";
    } catch (const DecryptError& e) {
      EXPECT_EQ(e.kind(), DecryptError::Kind::payload);
    }
    EXPECT_EQ(out.data, plain.substr(0, 65536));
  }
}

TEST(Age, NonCanonicalAndMalformedStanzas) {
  AgeIdentity a = AgeIdentity::generate();
  std::string ct = encrypt_str({a.recipient()}, "x");
  size_t share = ct.find("X25519 ") + 7;
  // Last share character: change its (zero) trailing bits -> non-canonical.
  {
    std::string t = ct;
    char& c = t[share + 42];
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int v = static_cast<int>(std::strchr(alphabet, c) - alphabet);
    c = alphabet[v ^ 1];
    EXPECT_EQ(decrypt_class({a}, t), "header");
  }
  EXPECT_EQ(decrypt_class({a}, std::string(ct).insert(share + 43, " extra")), "header");
  EXPECT_EQ(decrypt_class({a}, std::string(ct).insert(share - 1, " ")), "header");  // empty argument
  EXPECT_EQ(decrypt_class({a}, std::string(ct).insert(share + 43, "=")), "header");
}

TEST(Age, AllZeroSharedSecretRejected) {
  AgeIdentity a = AgeIdentity::generate();
  std::string ct = encrypt_str({a.recipient()}, "secret");
  size_t share = ct.find("X25519 ") + 7;
  // Low-order points: zero, one (the identity), and an order-8 point.
  const std::string low_order_hex[] = {
      std::string(64, '0'),
      "0100000000000000000000000000000000000000000000000000000000000000",
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  };
  for (const auto& h : low_order_hex) {
    std::string p = unhex(h);
    std::string t = ct;
    t.replace(share, 43, base64_encode(p.data(), p.size(), false));
    try {
      decrypt_str({a}, t);
      ADD_FAILURE() << "low-order share accepted: " << h;
    } catch (const DecryptError& e) {
      EXPECT_EQ(e.kind(), DecryptError::Kind::header) << h;
      EXPECT_NE(std::string(e.what()).find("all zero"), std::string::npos) << e.what();
    }
  }
  // Encrypting to a low-order recipient is refused too.
  std::array<uint8_t, 32> zero{};
  EXPECT_EQ(error_code([&] { encrypt_str({AgeRecipient(zero)}, "x"); }), 65);
}

TEST(Age, IdentityFiles) {
  std::string d = tmpdir();
  AgeIdentity id = AgeIdentity::generate();
  save_identity_file(d + "/age.key", id, false);
  struct stat st {};
  ASSERT_EQ(::stat((d + "/age.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto ids = load_identity_file(d + "/age.key");
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0].recipient(), id.recipient());
  std::string text = read_file(d + "/age.key");
  EXPECT_NE(text.find("# public key: " + id.recipient().to_string() + "\n"), std::string::npos);
  EXPECT_EQ(error_code([&] { save_identity_file(d + "/age.key", id, false); }), 73);

  ::chmod((d + "/age.key").c_str(), 0640);
  try {
    load_identity_file(d + "/age.key");
    ADD_FAILURE() << "group-readable identity accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitNoPerm);
    EXPECT_EQ(e.subject(), d + "/age.key");
  }
  EXPECT_EQ(error_code([&] { load_identity_file(d + "/missing.key"); }), 66);
  write_file_atomic(d + "/bad.key", "# nothing\n\nnot a key\n", false, 0600);
  EXPECT_EQ(error_code([&] { load_identity_file(d + "/bad.key"); }), 65);
  write_file_atomic(d + "/empty.key", "# nothing\n", false, 0600);
  EXPECT_EQ(error_code([&] { load_identity_file(d + "/empty.key"); }), 65);
  auto rs = parse_recipients("# r\n" + id.recipient().to_string() + "\n\n", "r.txt");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0], id.recipient());
}

// ---- minisign --------------------------------------------------------------------------

// Made with Debian's minisign 0.11: minisign -G -W; minisign -S -m kat.txt -t 'fedseg1 kat=1'.
const char* kKatPub =
    "untrusted comment: minisign public key 6EDE4202C019BBEC\n"
    "RWTsuxnAAkLebrTYR6U5InFsGKBGKwcX/VG4adaFVRtGKrco9u9Z7B4c\n";
const char* kKatSec =
    "untrusted comment: minisign encrypted secret key\n"
    "RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA7LsZwAJC3m7PnDyl8W2ZWMx2eIKqziSQhyL9QfV6CpMp"
    "6EDfPUtosLTYR6U5InFsGKBGKwcX/VG4adaFVRtGKrco9u9Z7B4cAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
const char* kKatMsg = "fedseg known-answer test\n";
const char* kKatSig =
    "untrusted comment: signature from minisign secret key\n"
    "RUTsuxnAAkLebrosfrsRBjIMTX4vmCCekoT0/92TpCr8DUzo5bZJoNZmsYbF3nAgZd9IHyppLm3jCl2RhZKli/c+9vxbvgd7tgU=\n"
    "trusted comment: fedseg1 kat=1\n"
    "sOSFeij5ED+NmHIq4kZY+x6z1Xw8EhBE3f3sRIgPkp5YijwKiQ8umDhhzYzbKFH7K/FJ7h9l+DlCX5z58MRBDA==\n";

Verified verify_str(const MinisignPublicKey& pk, const std::string& sig, const std::string& msg) {
  StringSource in(msg);
  return verify(pk, MinisignSignature::parse(sig), in);
}

std::string sig_class(const MinisignPublicKey& pk, const std::string& sig, const std::string& msg) {
  try {
    verify_str(pk, sig, msg);
  } catch (const SignatureError& e) {
    EXPECT_EQ(e.code(), kExitDataErr);
    return e.kind_name();
  }
  return "ok";
}

TEST(Minisign, KeyIdAsMinisignPrintsIt) {
  KeyId id{0xed, 0xe1, 0x79, 0xf4, 0xae, 0x0c, 0x61, 0xd1};
  EXPECT_EQ(key_id_hex(id), "D1610CAEF479E1ED");
}

TEST(Minisign, KnownAnswerFromMinisignCli) {
  auto pk = MinisignPublicKey::parse(kKatPub);
  EXPECT_EQ(pk.key_id_hex(), "6EDE4202C019BBEC");
  EXPECT_EQ(pk.file_text(), kKatPub);
  EXPECT_EQ(verify_str(pk, kKatSig, kKatMsg).trusted_comment, "fedseg1 kat=1");
  // Its -W secret key (zero checksum) loads and signs exactly as minisign did.
  auto sk = MinisignSecretKey::parse(kKatSec, "kat.key");
  EXPECT_FALSE(sk.was_encrypted());
  EXPECT_EQ(sk.public_key(), pk);
  std::string msg = kKatMsg;
  StringSource in(msg);
  EXPECT_EQ(sign(sk, in, "fedseg1 kat=1"), kKatSig);  // Ed25519 is deterministic
}

TEST(Minisign, SignVerifyAndTamperClasses) {
  auto sk = MinisignSecretKey::generate();
  auto pk = sk.public_key();
  std::string msg = pattern(200000);
  StringSource in(msg);
  std::string sig = sign(sk, in, "fedseg1 fed=f round=1 site=a");
  EXPECT_EQ(sig.rfind("untrusted comment: signature from minisign secret key\n", 0), 0u) << sig;
  auto parsed = MinisignSignature::parse(sig);
  EXPECT_EQ(parsed.algorithm[0], 'E');
  EXPECT_EQ(parsed.algorithm[1], 'D');  // prehashed
  EXPECT_EQ(parsed.key_id, sk.key_id());
  EXPECT_NE(sig.find("\ntrusted comment: fedseg1 fed=f round=1 site=a\n"), std::string::npos);
  EXPECT_EQ(verify_str(pk, sig, msg).trusted_comment, "fedseg1 fed=f round=1 site=a");
  EXPECT_EQ(sig_class(pk, sig, msg + "x"), "bad_signature");
  EXPECT_EQ(sig_class(pk, sig, msg.substr(1)), "bad_signature");
  EXPECT_EQ(sig_class(MinisignSecretKey::generate().public_key(), sig, msg), "key_mismatch");
  std::string t = sig;
  t.replace(t.find("round=1"), 7, "round=2");
  EXPECT_EQ(sig_class(pk, t, msg), "bad_trusted_comment");
  std::string u = sig;
  u.replace(0, u.find('\n'), "untrusted comment: edited freely");
  EXPECT_EQ(sig_class(pk, u, msg), "ok");
  // Same signature bytes labelled legacy "Ed": refused.
  auto sp = MinisignSignature::parse(sig);
  uint8_t blob[74] = {'E', 'd'};
  std::memcpy(blob + 2, sp.key_id.data(), 8);
  std::memcpy(blob + 10, sp.signature.data(), 64);
  std::string legacy = sig;
  size_t l2 = legacy.find('\n') + 1;
  legacy.replace(l2, legacy.find('\n', l2) - l2, base64_encode(blob, sizeof blob, true));
  EXPECT_EQ(sig_class(pk, legacy, msg), "legacy");
  EXPECT_EQ(sig_class(pk, "untrusted comment: x\nnot base64\n", msg), "malformed");
  // The cheap half alone (no pass over the file): algorithm, key id and the global
  // signature. It vouches for the trusted comment, not for the file.
  auto comment_class = [&](const MinisignPublicKey& key, const std::string& text) -> std::string {
    try {
      verify_trusted_comment(key, MinisignSignature::parse(text));
    } catch (const SignatureError& e) {
      return e.kind_name();
    }
    return "ok";
  };
  EXPECT_EQ(comment_class(pk, sig), "ok");
  EXPECT_EQ(verify_trusted_comment(pk, parsed).trusted_comment, "fedseg1 fed=f round=1 site=a");
  EXPECT_EQ(comment_class(pk, t), "bad_trusted_comment");
  EXPECT_EQ(comment_class(MinisignSecretKey::generate().public_key(), sig), "key_mismatch");
  EXPECT_EQ(comment_class(pk, legacy), "legacy");
  {
    // Altered signature bytes fail the global signature too (it covers them).
    auto bad = MinisignSignature::parse(sig);
    bad.signature[5] ^= 1;
    EXPECT_THROW(verify_trusted_comment(pk, bad), SignatureError);
  }
  EXPECT_EQ(error_code([&] { StringSource s(msg); sign(sk, s, "two\nlines"); }), 64);
  EXPECT_EQ(error_code([&] { StringSource s(msg); sign(sk, s, std::string(kMaxTrustedComment + 1, 'x')); }), 64);
  StringSource s2(msg);
  EXPECT_NO_THROW(sign(sk, s2, std::string(kMaxTrustedComment, 'x')));
}

TEST(Minisign, KeyFilesAndPermissions) {
  std::string d = tmpdir();
  auto sk = MinisignSecretKey::generate();
  MinisignSecretKey::save_text(d + "/ms.key", sk.file_text(), false);
  sk.public_key().save(d + "/ms.pub", false);
  struct stat st {};
  ASSERT_EQ(::stat((d + "/ms.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = MinisignSecretKey::load(d + "/ms.key");
  EXPECT_EQ(back.key_id(), sk.key_id());
  EXPECT_EQ(back.public_key(), sk.public_key());
  EXPECT_EQ(MinisignPublicKey::load(d + "/ms.pub"), sk.public_key());
  EXPECT_EQ(MinisignPublicKey::parse(sk.public_key().to_base64()), sk.public_key());  // minisign -P form

  ::chmod((d + "/ms.pub").c_str(), 0644);
  EXPECT_NO_THROW(MinisignPublicKey::load(d + "/ms.pub"));  // public keys may be world-readable
  for (unsigned mode : {0604u, 0640u, 0660u, 0644u}) {
    ::chmod((d + "/ms.key").c_str(), mode);
    try {
      MinisignSecretKey::load(d + "/ms.key");
      ADD_FAILURE() << "mode " << mode << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), kExitNoPerm);
      EXPECT_EQ(e.subject(), d + "/ms.key");
    }
  }
  ::chmod((d + "/ms.key").c_str(), 0400);
  EXPECT_NO_THROW(MinisignSecretKey::load(d + "/ms.key"));
  EXPECT_EQ(error_code([&] { MinisignSecretKey::load(d + "/none.key"); }), 66);
  // A damaged key: flip one byte of the secret half.
  std::string text = sk.file_text();
  size_t p = text.find('\n') + 100;
  text[p] = text[p] == 'A' ? 'B' : 'A';
  EXPECT_EQ(error_code([&] { MinisignSecretKey::parse(text, "damaged"); }), 65);
  EXPECT_EQ(error_code([&] { MinisignPublicKey::parse("untrusted comment: x\nRWQ=\n"); }), 65);
}

TEST(Minisign, PasswordProtectedKeys) {
  std::string d = tmpdir();
  auto sk = MinisignSecretKey::generate();
  // Minimum scrypt limits keep the test fast; minisign -G's are checked by the interop test.
  std::string text = sk.encrypted_file_text("correct horse", crypto_pwhash_scryptsalsa208sha256_OPSLIMIT_MIN,
                                            crypto_pwhash_scryptsalsa208sha256_MEMLIMIT_MIN);
  MinisignSecretKey::save_text(d + "/enc.key", text, false);
  write_file_atomic(d + "/pw", "correct horse\n", false, 0600);
  write_file_atomic(d + "/bad-pw", "wrong\n", false, 0600);
  auto k1 = MinisignSecretKey::load(d + "/enc.key", {d + "/pw", ""});
  EXPECT_TRUE(k1.was_encrypted());
  EXPECT_EQ(k1.public_key(), sk.public_key());
  ::setenv("FEDSEG_TEST_MINISIGN_PW", "correct horse", 1);
  auto k2 = MinisignSecretKey::load(d + "/enc.key", {"", "FEDSEG_TEST_MINISIGN_PW"});
  EXPECT_EQ(k2.public_key(), sk.public_key());
  ::unsetenv("FEDSEG_TEST_MINISIGN_PW");
  EXPECT_EQ(error_code([&] { MinisignSecretKey::load(d + "/enc.key", {"", "FEDSEG_TEST_MINISIGN_PW"}); }), 78);
  EXPECT_EQ(error_code([&] { MinisignSecretKey::load(d + "/enc.key"); }), 78);
  EXPECT_EQ(error_code([&] { MinisignSecretKey::load(d + "/enc.key", {d + "/bad-pw", ""}); }), 78);
  ::chmod((d + "/pw").c_str(), 0644);
  EXPECT_EQ(error_code([&] { MinisignSecretKey::load(d + "/enc.key", {d + "/pw", ""}); }), 77);
}

TEST(Minisign, StreamingBlake2bMatchesOneShot) {
  std::string msg = pattern(300001);
  unsigned char want[64];
  crypto_generichash(want, sizeof want, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), nullptr, 0);
  Blake2b512 h;
  for (size_t pos = 0; pos < msg.size(); pos += 4097) h.update(msg.data() + pos, std::min<size_t>(4097, msg.size() - pos));
  auto got = h.final();
  EXPECT_EQ(to_hex(got.data(), 64), to_hex(want, 64));
  StringSource in(msg);
  auto got2 = blake2b512(in);
  EXPECT_EQ(got2, got);
}

TEST(Crypto, EncryptThenSignFileRoundTrip) {
  std::string d = tmpdir();
  AgeIdentity agg = AgeIdentity::generate();
  auto site = MinisignSecretKey::generate();
  std::string plain = pattern(150000, 9);
  write_file_atomic(d + "/u.h5", plain, false);
  {
    FileSource in(d + "/u.h5");
    AtomicFile f(d + "/u.age", false);
    Blake2b512 h;
    CallbackSink sink([&](const void* b, size_t n) { f.write(b, n); h.update(b, n); }, f.final_path());
    age_encrypt({agg.recipient()}, in, sink);
    f.commit();
    write_file_atomic(d + "/u.age.minisig", sign_prehashed(site, h.final(), "fedseg1 x=1"), false);
  }
  EXPECT_EQ(verify_file(site.public_key(), d + "/u.age").trusted_comment, "fedseg1 x=1");
  FileSource in(d + "/u.age");
  StringSink out;
  age_decrypt({agg}, in, out);
  EXPECT_EQ(out.data, plain);
}

}  // namespace
}  // namespace fedseg::crypto
