// Certificates for the TLS tests, made by the `openssl` command once per test process: a server
// CA with a certificate for 127.0.0.1 and localhost (subjectAltName), a client CA with a client
// certificate, and a CA that signed neither.
#ifndef MOESWEEP_TESTS_RPC_TEST_CERTS_H_
#define MOESWEEP_TESTS_RPC_TEST_CERTS_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

namespace moesweep::testing {

struct TestCerts {
  std::string dir;
  std::string ca, server_cert, server_key;      // Server side.
  std::string client_ca, client_cert, client_key;  // Client certificates.
  std::string other_ca;                          // Trusted by nobody.
};

inline void Shell(const std::string& command) {
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
}

inline const TestCerts& Certs() {
  static const TestCerts certs = [] {
    TestCerts c;
    c.dir = ::testing::TempDir() + "/moesweep_certs_" + std::to_string(getpid());
    Shell("rm -rf '" + c.dir + "' && mkdir -p '" + c.dir + "'");
    auto path = [&](const std::string& name) { return c.dir + "/" + name; };
    // EC keys: quick to make. Output goes to a log so a failure can be read.
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string log = " >>'" + path("openssl.log") + "' 2>&1";
    auto make_ca = [&](const std::string& name) {
      Shell("openssl req -x509 " + key + " -days 2 -subj /CN=moesweep-test-" + name + " -keyout '" +
            path(name + ".key") + "' -out '" + path(name + ".pem") + "'" + log);
    };
    auto make_cert = [&](const std::string& name, const std::string& ca, const std::string& extensions) {
      std::ofstream(path(name + ".ext")) << extensions << "\n";
      Shell("openssl req " + key + " -subj /CN=" + name + " -keyout '" + path(name + ".key") + "' -out '" +
            path(name + ".csr") + "'" + log);
      Shell("openssl x509 -req -days 2 -in '" + path(name + ".csr") + "' -CA '" + path(ca + ".pem") + "' -CAkey '" +
            path(ca + ".key") + "' -CAcreateserial -extfile '" + path(name + ".ext") + "' -out '" +
            path(name + ".pem") + "'" + log);
    };
    make_ca("ca");
    make_ca("client-ca");
    make_ca("other-ca");
    make_cert("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth");
    make_cert("client", "client-ca", "extendedKeyUsage=clientAuth");
    c.ca = path("ca.pem");
    c.server_cert = path("server.pem");
    c.server_key = path("server.key");
    c.client_ca = path("client-ca.pem");
    c.client_cert = path("client.pem");
    c.client_key = path("client.key");
    c.other_ca = path("other-ca.pem");
    static std::string dir_to_remove;
    dir_to_remove = c.dir;
    std::atexit([] { std::filesystem::remove_all(dir_to_remove); });
    return c;
  }();
  return certs;
}

inline std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/moesweep_rpc_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace moesweep::testing

#endif  // MOESWEEP_TESTS_RPC_TEST_CERTS_H_
