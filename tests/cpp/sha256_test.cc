// SPDX-License-Identifier: Apache-2.0
#include <string>

#include "common/sha256.h"
#include "test_harness.h"

using namespace llm_datadist;

LLMDD_TEST(Sha256, KnownVectors) {
  auto hash = [](const std::string &s) {
    Sha256 h;
    h.Update(s.data(), s.size());
    return DigestHex(h.Finish());
  };
  EXPECT_EQ(hash(""), std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  EXPECT_EQ(hash("abc"), std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  EXPECT_EQ(hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
  EXPECT_EQ(hash(std::string(1000000, 'a')),
            std::string("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

LLMDD_TEST(Sha256, HmacRfc4231) {
  // RFC 4231 test cases 1, 2 and 6 (key longer than a block).
  EXPECT_EQ(DigestHex(HmacSha256(std::string(20, '\x0b'), "Hi There", 8)),
            std::string("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
  std::string msg = "what do ya want for nothing?";
  EXPECT_EQ(DigestHex(HmacSha256("Jefe", msg.data(), msg.size())),
            std::string("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  std::string big = "Test Using Larger Than Block-Size Key - Hash Key First";
  EXPECT_EQ(DigestHex(HmacSha256(std::string(131, '\xaa'), big.data(), big.size())),
            std::string("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
  EXPECT_TRUE(DigestEqual(HmacSha256("k", "x", 1), HmacSha256("k", "x", 1)));
  EXPECT_FALSE(DigestEqual(HmacSha256("k", "x", 1), HmacSha256("k2", "x", 1)));
}
