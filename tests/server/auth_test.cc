// The coordinator's token file and who may call what.
#include "server/auth.h"

#include <gtest/gtest.h>

#include <fstream>

namespace moesweep {
namespace {

constexpr char kReadToken[] = "read-token-0123456789abcdef";
constexpr char kWorkerToken[] = "worker-token-0123456789abcdef";
constexpr char kSubmitToken[] = "submit-token-0123456789abcdef";

TokenTable Table() {
  std::string text = "# people\n" + TokenFileLine(Role::kRead, kReadToken, "dashboards") + "\n\n" +
                     TokenFileLine(Role::kSubmit, kSubmitToken, "") + "   # admin\n" +
                     TokenFileLine(Role::kWorker, kWorkerToken, "gpu-hosts") + "\n";
  TokenTable table;
  Status s = TokenTable::Parse(text, "tokens.txt", &table);
  EXPECT_TRUE(s.ok()) << s.message();
  return table;
}

std::string Bearer(const std::string& token) { return "Bearer " + token; }

TEST(Sha256, MatchesTheKnownDigestOfAbc) {
  EXPECT_EQ(ToHex(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(TokenFileLine, IsRoleDigestAndName) {
  EXPECT_EQ(TokenFileLine(Role::kWorker, "abc", "farm"),
            "worker ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad farm");
  EXPECT_EQ(TokenFileLine(Role::kSubmit, "abc", ""),
            "submit ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(TokenTable, ParsesRolesNamesCommentsAndBlankLines) {
  TokenTable table = Table();
  EXPECT_EQ(table.size(), 3u);
  const TokenEntry* read = table.Find(kReadToken);
  ASSERT_NE(read, nullptr);
  EXPECT_EQ(read->role, Role::kRead);
  EXPECT_EQ(read->name, "dashboards");
  ASSERT_NE(table.Find(kSubmitToken), nullptr);
  EXPECT_EQ(table.Find(kSubmitToken)->name, "");
  EXPECT_EQ(table.Find(kWorkerToken)->role, Role::kWorker);
  EXPECT_EQ(table.Find("read-token-0123456789abcdeF"), nullptr);
  EXPECT_EQ(table.Find(""), nullptr);
}

TEST(TokenTable, AcceptsUpperCaseHex) {
  std::string line = TokenFileLine(Role::kRead, "abc", "");
  for (char& c : line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  line.replace(0, 4, "read");
  TokenTable table;
  ASSERT_TRUE(TokenTable::Parse(line, "t", &table).ok());
  EXPECT_NE(table.Find("abc"), nullptr);
}

TEST(TokenTable, EveryMalformedLineIsNamedWithFileAndLine) {
  std::string digest = ToHex(Sha256("abc"));
  std::string text = "read " + digest + "\n" +                   // 1: fine
                     "admin " + ToHex(Sha256("x")) + "\n" +      // 2: unknown role
                     "worker abc123\n" +                         // 3: short digest
                     "# comment\n" +                             // 4
                     "submit\n" +                                // 5: no digest
                     "read " + digest + " again\n" +             // 6: duplicate
                     "worker " + std::string(64, 'g') + "\n" +   // 7: not hex
                     "read " + ToHex(Sha256("y")) + " two words\n";  // 8: name with a blank
  TokenTable table;
  Status s = TokenTable::Parse(text, "/etc/moesweep/tokens", &table);
  ASSERT_FALSE(s.ok());
  const std::string& m = s.message();
  EXPECT_EQ(m.find("/etc/moesweep/tokens:1:"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:2: unknown role 'admin'"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:3: expected the token's SHA-256 as 64 hex digits"), std::string::npos) << m;
  EXPECT_EQ(m.find("/etc/moesweep/tokens:4:"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:5: expected the token's SHA-256"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:6: the same token is listed twice"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:7: expected the token's SHA-256"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/moesweep/tokens:8: expected ROLE SHA256HEX [NAME]"), std::string::npos) << m;
}

TEST(TokenTable, AFileWithoutTokensIsRefused) {
  TokenTable table;
  Status s = TokenTable::Parse("# nobody yet\n\n", "tokens.txt", &table);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tokens.txt: no tokens"), std::string::npos) << s.message();
}

TEST(TokenTable, AnUnreadableFileIsNamed) {
  TokenTable table;
  Status s = TokenTable::Load("/nonexistent/tokens.txt", &table);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/tokens.txt"), std::string::npos);
}

TEST(Authorize, MissingMalformedOrUnknownTokensAreUnauthenticated) {
  TokenTable table = Table();
  EXPECT_EQ(table.Authorize(std::nullopt, Permission::kRead).code(), Status::Code::kUnauthenticated);
  EXPECT_EQ(table.Authorize(std::string_view(kReadToken), Permission::kRead).code(), Status::Code::kUnauthenticated);
  EXPECT_EQ(table.Authorize("Basic " + std::string(kReadToken), Permission::kRead).code(),
            Status::Code::kUnauthenticated);
  EXPECT_EQ(table.Authorize(std::string_view("Bearer "), Permission::kRead).code(), Status::Code::kUnauthenticated);
  EXPECT_EQ(table.Authorize(Bearer("not-a-token"), Permission::kRead).code(), Status::Code::kUnauthenticated);
  EXPECT_EQ(table.Authorize(Bearer(kReadToken) + " ", Permission::kRead).code(), Status::Code::kUnauthenticated);
}

TEST(Authorize, TheSchemeIsCaseInsensitive) {
  TokenTable table = Table();
  EXPECT_TRUE(table.Authorize("bearer " + std::string(kReadToken), Permission::kRead).ok());
  EXPECT_TRUE(table.Authorize("BEARER " + std::string(kReadToken), Permission::kRead).ok());
}

TEST(Authorize, EachRoleReachesOnlyItsCalls) {
  TokenTable table = Table();
  struct Case {
    const char* token;
    Permission permission;
    bool allowed;
  } cases[] = {
      {kWorkerToken, Permission::kWork, true},    {kWorkerToken, Permission::kRead, false},
      {kWorkerToken, Permission::kSubmit, false}, {kReadToken, Permission::kWork, false},
      {kReadToken, Permission::kRead, true},      {kReadToken, Permission::kSubmit, false},
      {kSubmitToken, Permission::kWork, true},    {kSubmitToken, Permission::kRead, true},
      {kSubmitToken, Permission::kSubmit, true},
  };
  for (const Case& c : cases) {
    Status s = table.Authorize(Bearer(c.token), c.permission);
    if (c.allowed) {
      EXPECT_TRUE(s.ok()) << c.token << " " << static_cast<int>(c.permission) << ": " << s.message();
    } else {
      EXPECT_EQ(s.code(), Status::Code::kPermissionDenied) << c.token << " " << static_cast<int>(c.permission);
    }
  }
}

TEST(Authorize, ADeniedCallSaysWhatItNeedsAndNeverQuotesTheToken) {
  TokenTable table = Table();
  Status s = table.Authorize(Bearer(kReadToken), Permission::kSubmit);
  EXPECT_EQ(s.message(), "submitting or cancelling sweeps needs a submit token; this is a read token (dashboards)");
  for (const char* token : {kReadToken, "wrong-token-xyz"}) {
    Status u = table.Authorize(Bearer(token), Permission::kSubmit);
    EXPECT_EQ(u.message().find(token), std::string::npos) << u.message();
  }
}

TEST(IsLoopbackAddress, KnowsLoopbackFromEverythingElse) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3:1", "localhost:50051", "[::1]:50051", "unix:/tmp/s"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "myhost:50051", ":50051"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

TEST(LoadServerSecurity, FlagsThatNeedEachOtherAreChecked) {
  ServerSecurity security;
  EXPECT_NE(LoadServerSecurity({"", "cert.pem", "", ""}, &security).message().find("go together"), std::string::npos);
  EXPECT_NE(LoadServerSecurity({"", "", "", "ca.pem"}, &security).message().find("--tls-client-ca needs"),
            std::string::npos);
  Status s = LoadServerSecurity({"", "/nonexistent/cert.pem", "/nonexistent/key.pem", ""}, &security);
  EXPECT_NE(s.message().find("--tls-cert: cannot read /nonexistent/cert.pem"), std::string::npos) << s.message();
  std::string not_pem = ::testing::TempDir() + "/moesweep_auth_not_pem";
  std::ofstream(not_pem) << "hello\n";
  s = LoadServerSecurity({"", not_pem, not_pem, ""}, &security);
  EXPECT_NE(s.message().find("is not a PEM file"), std::string::npos) << s.message();
}

TEST(LoadServerSecurity, NoFlagsMeansPlaintextWithoutTokens) {
  ServerSecurity security;
  ASSERT_TRUE(LoadServerSecurity({}, &security).ok());
  EXPECT_EQ(security.tokens, nullptr);
  EXPECT_TRUE(security.tls_cert_pem.empty());
}

}  // namespace
}  // namespace moesweep
